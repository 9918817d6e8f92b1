"""Drift of the predictions, per task: class shares (chi-square), regression values (KS against the
test-set predictions the card records), multi-label per-label rates (binomial, Bonferroni); and a
served regression run whose answers drift while /metadata says so."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from transferkit.serve.drift import DriftMonitor
from transferkit.serve.prediction_drift import MAX_REFERENCE_VALUES, PredictionDrift, prediction_reference


def _filled(ref: dict, outputs: np.ndarray, thresholds=None, window: int = 200) -> PredictionDrift:
    d = PredictionDrift(ref, thresholds=thresholds, window=window, min_items=50, p_value=0.01)
    d.add(outputs)
    return d


def test_the_reference_summarises_the_test_predictions_of_each_task():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert prediction_reference("classification", proba, ["ham", "spam"]) == {
        "task": "classification", "n": 3, "names": ["ham", "spam"], "counts": [1, 2]}
    ml = prediction_reference("multi-label", np.array([[0.6, 0.2], [0.4, 0.9]]), ["a", "b"],
                              thresholds=np.array([0.5, 0.1]))
    assert ml["positives"] == [1, 2] and ml["names"] == ["a", "b"]
    values = np.random.default_rng(0).normal(size=2000)
    reg = prediction_reference("regression", values, [])
    assert reg["n"] == 2000 and len(reg["values"]) == MAX_REFERENCE_VALUES
    assert reg["values"] == sorted(reg["values"]) and set(reg["values"]) <= {float(f"{v:.6g}") for v in values}
    json.dumps(reg)  # it goes into the model card as it is


def test_regression_values_are_compared_by_kolmogorov_smirnov():
    rng = np.random.default_rng(0)
    ref = prediction_reference("regression", rng.normal(3.0, 1.0, size=400), [])
    same = _filled(ref, rng.normal(3.0, 1.0, size=200)).test_now()
    assert same["tests"] == 1 and same["p_value"] > 0.05 and not same["alarm"]
    moved = _filled(ref, rng.normal(4.5, 1.0, size=200)).test_now()
    assert moved["alarm"] and moved["p_value"] < 1e-6 and moved["recent"]["median"] > 4.0
    assert _filled(ref, rng.normal(3.0, 1.0, size=49)).test_now()["tests"] == 0  # too few items yet


def test_multi_label_rates_are_tested_label_by_label():
    names = ["food", "money", "sport"]
    ref = {"task": "multi-label", "n": 1000, "names": names, "positives": [500, 100, 0]}
    same = np.zeros((200, 3))
    same[:100, 0], same[:20, 1] = 0.9, 0.9  # probabilities: 50% food, 10% money, no sport
    s = _filled(ref, same, thresholds=np.array([0.5, 0.5, 0.5])).test_now()
    assert not s["alarm"] and s["p_value"] > 0.5 and s["recent"]["rates"] == {"food": 0.5, "money": 0.1, "sport": 0.0}
    moved = same.copy()
    moved[:80, 1] = 0.9  # money predicted for 40% of the items instead of 10%
    m = _filled(ref, moved, thresholds=np.array([0.5, 0.5, 0.5])).test_now()
    assert m["alarm"] and m["p_value"] < 1e-6 and m["recent"]["rates"]["money"] == 0.4
    d = _filled(ref, moved, thresholds=np.array([0.5, 0.95, 0.5]))  # the run's own thresholds decide
    assert d.test_now()["recent"]["rates"]["money"] == 0.0


def test_class_shares_are_tested_by_chi_square():
    ref = {"task": "classification", "n": 100, "names": ["ham", "spam"], "counts": [70, 30]}
    as_before = np.tile([[0.8, 0.2]], (140, 1))
    as_before = np.vstack([as_before, np.tile([[0.1, 0.9]], (60, 1))])
    assert not _filled(ref, as_before).test_now()["alarm"]
    flipped = _filled(ref, np.tile([[0.1, 0.9]], (200, 1))).test_now()
    assert flipped["alarm"] and flipped["recent"]["shares"] == {"ham": 0.0, "spam": 1.0}


def test_the_monitor_runs_the_prediction_test_without_input_features():
    ref = {"task": "classification", "n": 100, "names": ["a", "b"], "counts": [50, 50]}
    mon = DriftMonitor(None, every=1, min_items=10, predictions=PredictionDrift(ref, min_items=10))
    mon.add(None, 1, np.tile([[0.9, 0.1]], (20, 1)))
    mon.test_now()
    d = mon.describe()
    assert d["enabled"] is False and d["tests"] == 0  # no reference features: no input test
    p = d["predictions"]
    assert p["enabled"] and p["tests"] == 1 and p["alarm"] and p["reference"]["shares"] == {"a": 0.5, "b": 0.5}
    off = DriftMonitor(None).describe()["predictions"]
    assert off["enabled"] is False and "re-run the fit" in off["reason"]


def test_a_served_regression_run_reports_the_drift_of_its_answers(tiny_text_dir, tmp_path):
    pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
    httpx = pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
    from test_tasks_pipeline import _counted_mail

    import transferkit as tk
    from transferkit.serve import BackgroundServer, ServeSettings, create_app

    model = tk.fit(data=str(_counted_mail(tmp_path / "counts.csv", n=200)), label_column="target", task="regression",
                   model=str(tiny_text_dir), out=str(tmp_path / "run"), control=False, log=None)
    ref = json.loads((tmp_path / "run" / "model_card.json").read_text())["prediction_reference"]
    assert ref["task"] == "regression" and ref["n"] == model.metrics["n_test"] == len(ref["values"])
    settings = ServeSettings(port=0, max_delay_ms=2.0, request_timeout_s=20.0, drift_window=40, drift_every=4,
                             drift_min_items=40, drift_permutations=50)
    server = BackgroundServer(create_app(tmp_path / "run", settings))
    with httpx.Client(base_url=server.start(), timeout=30) as c:
        t0 = time.monotonic()
        while c.get("/health/ready").status_code != 200:
            assert time.monotonic() - t0 < 60, c.get("/health/ready").json()
            time.sleep(0.02)
        # every request the same text: one predicted value, far from the spread of the test set's
        for _ in range(8):
            assert c.post("/predict", json={"texts": ["cash"] * 5}).status_code == 200
        t0 = time.monotonic()
        while c.get("/metadata").json()["drift"]["predictions"]["tests"] < 1:
            assert time.monotonic() - t0 < 30, c.get("/metadata").json()["drift"]
            time.sleep(0.05)
        p = c.get("/metadata").json()["drift"]["predictions"]
    server.stop()
    assert p["test"].startswith("Kolmogorov-Smirnov") and p["reference"]["test_items"] == ref["n"]
    assert p["window_items"] == 40 and p["alarm"] and p["p_value"] < 0.01
