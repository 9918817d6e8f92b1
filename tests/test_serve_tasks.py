"""Serving regression and multi-label runs: a real uvicorn server on 127.0.0.1 (tiny models),
/predict answering values or label sets with per-label probabilities, /metadata stating the task
(and the thresholds, once), and the drift monitor watching features as for classification."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs pip install 'transferkit[serve]'")
httpx = pytest.importorskip("httpx", reason="needs pip install 'transferkit[serve]'")
from PIL import Image  # noqa: E402
from test_tasks_pipeline import _counted_mail, _topic_mail  # noqa: E402

import transferkit as tk  # noqa: E402
from transferkit.serve import BackgroundServer, ServeSettings, create_app  # noqa: E402

from task_data import digit_values  # noqa: E402

FAST = dict(port=0, max_delay_ms=2.0, request_timeout_s=20.0)


class Served:
    """``with Served(run, **settings) as c:`` a ready server and a client on it."""

    def __init__(self, run, **settings):
        self.server = BackgroundServer(create_app(run, ServeSettings(**{**FAST, **settings})))

    def __enter__(self) -> httpx.Client:
        self.client = httpx.Client(base_url=self.server.start(), timeout=30)
        t0 = time.monotonic()
        while self.client.get("/health/ready").status_code != 200:
            assert time.monotonic() - t0 < 60, self.client.get("/health/ready").json()
            time.sleep(0.02)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        self.server.stop()


@pytest.fixture(scope="module")
def regression_run(tiny_text_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-reg")
    return tk.fit(data=str(_counted_mail(d / "counts.csv")), label_column="target", task="regression",
                  model=str(tiny_text_dir), out=str(d / "run"), control=False, log=None)


@pytest.fixture(scope="module")
def multi_label_run(tiny_text_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-ml")
    return tk.fit(data=str(_topic_mail(d / "topics.jsonl")), model=str(tiny_text_dir), out=str(d / "run"),
                  control=False, log=None)


def test_regression_answers_values_in_the_targets_units(regression_run):
    texts = ["cash cash cash cash meeting", "agenda report notes meeting", "cash"]
    with Served(regression_run.run_dir, drift_window=8, drift_every=4, drift_min_items=8,
                drift_permutations=50) as c:
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"predictions"}  # no classes for numbers
        assert all(set(p) == {"value"} for p in body["predictions"])
        got = np.array([p["value"] for p in body["predictions"]])
        np.testing.assert_allclose(got, regression_run.predict_outputs(texts), rtol=1e-6, atol=1e-6)
        m = c.get("/metadata").json()
        assert m["task"] == "regression" and m["classes"] == [] and "thresholds" not in m
        assert m["model_card"]["target"]["scale"] > 0
        for _ in range(3):  # drift is watched on features, whatever the task
            assert c.post("/predict", json={"texts": texts}).status_code == 200
        d = m["drift"]
        assert d["enabled"] is True
        t0 = time.monotonic()
        while c.get("/metadata").json()["drift"]["tests"] < 1:
            assert time.monotonic() - t0 < 30, c.get("/metadata").json()["drift"]
            time.sleep(0.05)
        assert c.get("/metadata").json()["drift"]["items_seen"] == 12
        spec = c.get("/openapi.json").json()
        assert "ValuePrediction" in spec["components"]["schemas"]


def test_multi_label_answers_label_sets_with_probabilities(multi_label_run):
    texts = ["goal team match score", "bread soup cash bank", "price loan goal salad"]
    with Served(multi_label_run.run_dir) as c:
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        labels = ["food", "money", "sport"]
        assert body["classes"] == labels and len(body["predictions"]) == 3
        assert all(set(p) == {"labels", "probabilities"} for p in body["predictions"])
        proba = np.array([[p["probabilities"][name] for name in labels] for p in body["predictions"]])
        np.testing.assert_allclose(proba, multi_label_run.predict_proba(texts), atol=1e-6)
        assert [tuple(p["labels"]) for p in body["predictions"]] == multi_label_run.predict(texts)
        m = c.get("/metadata").json()
        assert m["task"] == "multi-label" and m["classes"] == labels
        thresholds = multi_label_run.strategy.thresholds_
        assert m["thresholds"] == pytest.approx(dict(zip(labels, map(float, thresholds))))
        for p, row in zip(body["predictions"], proba):  # the label set is exactly those at their threshold
            assert p["labels"] == [n for n, v, t in zip(labels, row, thresholds) if v >= t]


def test_an_image_regression_run_serves_numbers_for_uploaded_digits(tiny_image_dir, tmp_path):
    train = digit_values(60, seed=0)
    model = tk.fit(train=train, model=str(tiny_image_dir), out=str(tmp_path / "digits"), control=False, log=None)
    files = []
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(train.inputs[i]).convert("RGB").save(buf, format="PNG")
        files.append(("files", (f"d{i}.png", buf.getvalue(), "image/png")))
    with Served(model.run_dir) as c:
        r = c.post("/predict", files=files)
        assert r.status_code == 200, r.text
        got = [p["value"] for p in r.json()["predictions"]]
    rgb = [np.asarray(Image.fromarray(x).convert("RGB")) for x in train.inputs[:3]]
    np.testing.assert_allclose(got, model.predict_outputs(rgb), rtol=1e-5, atol=1e-5)
