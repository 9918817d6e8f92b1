"""Tests of the report for regression and multi-label runs (transferkit.report.task_views).

The metrics are fabricated but shaped exactly as a run's metrics.json: built with the real
``transferkit.tasks`` metrics and verdict functions from simulated predictions (a digit's value
0-9 predicted with noise; sets of one or two digits scored per label), then laid out as the
pipeline writes them (``control``, ``controls_gain``, ``transfer_gain``... at the top level).
"""
from __future__ import annotations

import base64
import io
import json
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from transferkit.report import formatting, plots, render_report, write_report
from transferkit.tasks import Outputs, get_task

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img id="(plot-[a-z-]+)" alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
DIGITS = [str(d) for d in range(10)]


def _layout(task: str, test: dict, controls: dict[str, dict], v: dict, run_name: str = "digits") -> dict:
    """metrics.json as the pipeline writes it: the verdict's keys at the top level."""
    return {"task": task, "run": {"name": run_name, "created": "2026-11-22T08:00:00Z", "strategy": "linear-probe",
                                  "backbone": "resnet18", "modality": "image", "seed": 0},
            "n_train": 4 * test["n"], "n_test": test["n"], "test": test, "controls": controls,
            "control": v["control"], "controls_gain": v["controls"], "transfer_gain": v["transfer_gain"],
            "transfer_gain_ci": v["transfer_gain_ci"], "verdict": v["verdict"],
            "verdict_explanation": v["explanation"], "verdict_metric": v["metric"]}


def regression_metrics(n: int = 300, scale: float = 1.0, transfer_noise: float = 0.9, predictions: bool = True) -> dict:
    """A digit's value (0-9, times ``scale``) predicted by the transfer model and three controls."""
    rng = np.random.default_rng(0)
    y = scale * rng.integers(0, 10, n).astype(float)
    pred = y + scale * rng.normal(0, transfer_noise, n)
    ctl = {"ridge-pixels": y + scale * rng.normal(0, 1.8, n), "mean": np.full(n, y.mean()),
           "random-init": y + scale * rng.normal(0, 2.6, n)}
    task = get_task("regression")
    test = task.metrics(y, pred, [], n_boot=200)
    if predictions:
        test["predictions"] = {"y_true": y.tolist(), "y_pred": pred.tolist()}
    v = task.verdict(y, Outputs(pred), {k: Outputs(p) for k, p in ctl.items()}, n_boot=200)
    return _layout("regression", test, {k: task.metrics(y, p, [], n_boot=200) for k, p in ctl.items()}, v)


def multilabel_metrics(labels: list[str] = DIGITS, n: int = 300, control_per_label: bool = True) -> dict:
    """Sets of one or two labels, scored per label with per-label thresholds."""
    rng = np.random.default_rng(1)
    n_labels = len(labels)
    y = np.zeros((n, n_labels), dtype=np.uint8)
    for i in range(n):
        y[i, rng.choice(n_labels, rng.integers(1, 3), replace=False)] = 1
    p = np.clip(0.55 * y + rng.uniform(0, 0.5, y.shape), 0, 1)  # good, not perfect
    pc = np.clip(0.3 * y + rng.uniform(0, 0.65, y.shape), 0, 1)
    thr = np.linspace(0.35, 0.6, n_labels)
    task = get_task("multi-label")
    test = task.metrics(y, p, labels, thresholds=thr, n_boot=200)
    ctl = task.metrics(y, pc, labels, thresholds=np.full(n_labels, 0.5), n_boot=200)
    if not control_per_label:
        ctl.pop("per_label")
    v = task.verdict(y, Outputs(p, thr), {"ovr-logreg-pixels": Outputs(pc, np.full(n_labels, 0.5))}, n_boot=200)
    return _layout("multi-label", test, {"ovr-logreg-pixels": ctl}, v)


def images(page: str) -> dict[str, str]:
    """Plot id -> alt text, after checking each is a decodable PNG of a sensible size."""
    out = {}
    for m in IMG.finditer(page):
        png = base64.b64decode(m.group(3), validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 300 and im.height >= 150
        out[m.group(1)] = m.group(2)
    return out


def text_of(page: str) -> str:
    """The page without its inline images (base64 may contain any letters, such as "nan")."""
    return IMG.sub("<img>", page)


def check_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    for banned in ("<script", "<link", "@import", "url(", "<iframe"):
        assert banned not in page.lower()


def cell(x: float, ci: list, d: int) -> str:
    return f'<td class="num">{x:.{d}f} <span class="ci">[{ci[0]:.{d}f}, {ci[1]:.{d}f}]</span></td>'


def test_regression_report_shows_metrics_controls_verdict_and_plots():
    m = regression_metrics()
    page = render_report(m)
    text = text_of(page)
    check_self_contained(page)
    assert set(images(page)) == {"plot-controls", "plot-predicted", "plot-residuals"}
    test = m["test"]
    d = formatting.decimals_for(test["target_std"])
    assert d == 2  # digits 0-9: standard deviation about 2.9
    assert "task: <b>regression</b>" in text and f"target std (test): <b>{test['target_std']:.2f}</b>" in text
    for head in ("<th>RMSE</th>", "<th>MAE</th>", "<th>R²</th>", "<th>Spearman ρ</th>", "<th>Transfer gain</th>"):
        assert head in text, head
    for absent in ("Accuracy", "ECE", "Log loss", "Per class", "Per label", "nan"):
        assert absent not in text, absent
    # The transfer model's row, then every control on the same metrics.
    for name, cm in [("transfer (linear-probe)", test), *m["controls"].items()]:
        row = text[text.index(f"<tr><td>{name}"):]
        row = row[:row.index("</tr>")]
        assert cell(cm["rmse"], cm["rmse_ci"], d) in row and cell(cm["mae"], cm["mae_ci"], d) in row, name
        if cm["spearman"] is None:  # the mean predictor: a constant has no rank correlation
            assert row.count('<td class="num">—</td>') == 1
        else:
            assert cell(cm["spearman"], cm["spearman_ci"], 3) in row
    best = m["control"]["name"]
    assert best == "ridge-pixels" and f"<tr><td>{best}<span class=\"badge\">best control</span>" in text
    g = m["controls_gain"]["mean"]
    assert f'{g["gain"]:+.{d}f} <span class="ci">[{g["gain_ci"][0]:+.{d}f}, {g["gain_ci"][1]:+.{d}f}]</span>' in text
    # The verdict on RMSE, its gain in the target's units.
    gain, (lo, hi) = m["transfer_gain"], m["transfer_gain_ci"]
    assert m["verdict"] == "helped" and '<section class="verdict helped">' in text
    assert (f'<div class="gain">RMSE {gain:.{d}f} lower than the best control, <b>ridge-pixels</b> (95% CI of the '
            f"RMSE reduction {lo:+.{d}f} to {hi:+.{d}f}, in the target&#39;s units)</div>") in text
    assert "lower is better" in text and "in the target&#39;s units" in text


def test_regression_numbers_follow_the_targets_units():
    # The same run in thousands (a price): values and gains to whole units, not 0.00-style digits.
    m = regression_metrics(scale=1000.0)
    text = text_of(render_report(m))
    assert formatting.decimals_for(m["test"]["target_std"]) == 0
    t = m["test"]
    assert cell(t["rmse"], t["rmse_ci"], 0) in text
    assert f"RMSE {m['transfer_gain']:.0f} lower than the best control" in text
    assert f"mean {t['target_mean']:.0f}, standard deviation {t['target_std']:.0f}" in text


def test_regression_hurt_reads_higher_rmse():
    m = regression_metrics(transfer_noise=3.5)  # worse than ridge-pixels (noise 1.8)
    assert m["verdict"] == "hurt" and m["transfer_gain"] < 0
    text = text_of(render_report(m))
    assert '<section class="verdict hurt">' in text
    assert f"RMSE {-m['transfer_gain']:.2f} higher than the best control, <b>ridge-pixels</b>" in text


def test_regression_without_predictions_draws_the_other_plots_and_says_why():
    m = regression_metrics(predictions=False)
    page = render_report(m)
    assert set(images(page)) == {"plot-controls"}
    assert "stored no test predictions" in page


def test_regression_predictions_sample_and_bad_shapes():
    m = regression_metrics()
    pred = m["test"]["predictions"]
    m["test"]["predictions"] = {"y_true": pred["y_true"][:100] + [None], "y_pred": pred["y_pred"][:100] + [1.0]}
    page = render_report(m)
    assert images(page)["plot-predicted"] == "Predicted against true values for 100 test items"
    assert "(100 of the 300 test items)" in page
    m["test"]["predictions"] = {"y_true": [1.0, 2.0], "y_pred": [1.0]}
    with pytest.raises(ValueError, match="2 true values but 1 predictions"):
        render_report(m)


def test_json_round_trip_and_write_report(tmp_path):
    # metrics.json as read back from disk (NaN and None survive as JSON allows).
    m = json.loads(json.dumps(regression_metrics()))
    out = write_report(tmp_path / "report.html", m)
    page = out.read_text(encoding="utf-8")
    assert page == render_report(m) and set(images(page)) == {"plot-controls", "plot-predicted", "plot-residuals"}
    m["test"]["r2"] = float("nan")
    assert "nan" not in text_of(render_report(m)).lower()


def test_multilabel_report_shows_metrics_controls_verdict_and_per_label():
    m = multilabel_metrics()
    page = render_report(m)
    text = text_of(page)
    check_self_contained(page)
    assert set(images(page)) == {"plot-controls", "plot-per-label"}
    assert "task: <b>multi-label</b>" in text and "labels: <b>10</b>" in text
    for head in ("Micro-F1", "Macro-F1", "Subset accuracy", "Hamming loss", "mAP", "Per label (transfer model)",
                 "<th>Threshold</th>", "<th>AP</th>"):
        assert head in text, head
    for absent in ("Accuracy</th>", "ECE", "Per class", "nan"):
        assert absent not in text, absent
    for name, cm in [("transfer (linear-probe)", m["test"]), ("ovr-logreg-pixels", m["controls"]["ovr-logreg-pixels"])]:
        row = text[text.index(f"<tr><td>{name}"):]
        row = row[:row.index("</tr>")]
        for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "map"):
            lo, hi = cm[f"{key}_ci"]
            assert f'{100 * cm[key]:.1f}% <span class="ci">[{100 * lo:.1f}, {100 * hi:.1f}]</span>' in row, (name, key)
    for label, p in m["test"]["per_label"].items():
        row = text[text.index(f"<tr><td>{label}</td>"):]
        row = row[:row.index("</tr>")]
        assert f'<td class="num">{p["support"]}</td>' in row
        for v in (f"{100 * p['precision']:.1f}%", f"{100 * p['recall']:.1f}%", f"{p['f1']:.3f}",
                  f"{p['threshold']:.2f}", f"{p['ap']:.3f}"):
            assert f'<td class="num">{v}</td>' in row, (label, v)
    gain, (lo, hi) = m["transfer_gain"], m["transfer_gain_ci"]
    assert m["verdict"] == "helped" and '<section class="verdict helped">' in text
    assert (f'<div class="gain">{100 * gain:+.1f} points of micro-F1 vs the best control, <b>ovr-logreg-pixels</b> '
            f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f})</div>") in text
    assert "beside the best control, ovr-logreg-pixels (grey)" in text


def test_multilabel_control_without_per_label_and_many_labels():
    labels = [f"topic-{i}" for i in range(plots.MAX_BAR_LABELS + 10)]
    m = multilabel_metrics(labels=labels, n=400, control_per_label=False)
    page = render_report(m)
    assert set(images(page)) == {"plot-controls", "plot-per-label"}
    assert "beside the best control" not in page
    assert f"labels: <b>{len(labels)}</b>" in page and "<tr><td>topic-69</td>" in page


def test_hostile_names_are_escaped_and_plot_without_warnings():
    evil = "<script>alert(1)</script>"
    labels = sorted([evil, "{{ 7*7 }}", "a & b", "$x$", "日本語", "tab\tand\nnewline", "x" * 120])
    m = multilabel_metrics(labels=labels)
    m["run"]["name"] = '"><img src=x onerror=alert(2)>'
    ctl = m["controls"].pop("ovr-logreg-pixels")
    hostile_ctl = "<b>ctl</b>{{ 7*7 }}$"
    m["controls"][hostile_ctl] = ctl
    m["controls_gain"] = {hostile_ctl: m["controls_gain"]["ovr-logreg-pixels"]}
    m["control"]["name"] = hostile_ctl
    m["notes"] = ["<u>note</u>"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mathtext "$", missing CJK glyphs
        page = render_report(m, skipped=[{"origin": "<img src=y>.png", "reason": "{{ 7*7 }}"}])
    assert set(images(page)) == {"plot-controls", "plot-per-label"}
    text = text_of(page)
    check_self_contained(page)
    for raw in ("<script", "<img src=x", "<img src=y", "<b>ctl", "<u>note"):
        assert raw not in text, raw
    for escaped in ("<tr><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>", "<tr><td>{{ 7*7 }}</td>",
                    "<tr><td>a &amp; b</td>", "<tr><td>$x$</td>", "<tr><td>日本語</td>",
                    "<b>&lt;b&gt;ctl&lt;/b&gt;{{ 7*7 }}$</b>", "&lt;u&gt;note&lt;/u&gt;",
                    "transferkit report: &#34;&gt;&lt;img src=x onerror=alert(2)&gt;"):
        assert escaped in text, escaped


def test_regression_hostile_control_name():
    m = regression_metrics()
    name = '<img src=z onerror="alert(3)">'
    m["controls"][name] = m["controls"].pop("mean")
    m["controls_gain"][name] = m["controls_gain"].pop("mean")
    page = render_report(m)
    assert "<img src=z" not in text_of(page) and "&lt;img src=z onerror=&#34;alert(3)&#34;&gt;" in page
    assert set(images(page)) == {"plot-controls", "plot-predicted", "plot-residuals"}


def test_best_control_known_only_by_its_primary_metric():
    m = regression_metrics()
    m["controls"] = {}
    m["controls_gain"] = {}
    text = text_of(render_report(m))
    rmse = m["control"]["rmse"]
    assert f'<tr><td>ridge-pixels<span class="badge">best control</span></td><td class="num">{rmse:.2f}</td>' in text


def test_task_field_picks_the_page_and_unknown_values_are_refused():
    from test_report import make_metrics

    m = make_metrics()  # an old run: no "task", classification
    assert render_report(m) == render_report({**m, "task": "classification"})
    with pytest.raises(ValueError, match="'forecast'.*classification, regression, multi-label"):
        render_report({**m, "task": "forecast"})
    r = regression_metrics()
    with pytest.raises(ValueError, match="verdict_metric 'accuracy'.*rmse, mae, r2, spearman"):
        render_report({**r, "verdict_metric": "accuracy"})


def test_verdict_on_a_lower_is_better_proportion_and_a_tie():
    m = multilabel_metrics()
    m["verdict_metric"] = "hamming_loss"
    m["transfer_gain"], m["transfer_gain_ci"] = 0.0312, [0.021, 0.042]
    assert "Hamming loss 3.1 points lower than the best control" in render_report(m)
    r = regression_metrics()
    r["transfer_gain"], r["transfer_gain_ci"], r["verdict"] = 0.0004, [-0.2, 0.2], "no-difference"
    assert "the same RMSE (to the digits shown) as the best control" in render_report(r)


def test_formatting_of_numbers_in_a_targets_units():
    assert [formatting.decimals_for(s) for s in (2.9, 1500.0, 0.003, 0.0, None, float("nan"))] == [2, 0, 5, 3, 3, 3]
    assert formatting.number(-0.0001) == "0.000" and formatting.number(None) == "—"
    assert formatting.number(float("nan")) == "—" and formatting.number(1.23456, 2) == "1.23"
    assert formatting.signed(0.1234) == "+0.123" and formatting.signed(-0.0001) == "+0.000"
    assert formatting.signed(-2.5, 1) == "-2.5"
    assert formatting.number_interval([0.1, 0.25], 2) == "0.10, 0.25"
    assert formatting.number_interval([0.1, 0.25], percent=True) == "10.0, 25.0"
    assert formatting.number_interval([0.1, None]) is None and formatting.number_interval(None) is None


def test_task_plots_return_png_and_leave_no_figures():
    import matplotlib
    import matplotlib.pyplot as plt

    before, backend = plt.get_fignums(), dict.__getitem__(matplotlib.rcParams, "backend")
    pngs = [
        plots.metric_bars(["transfer", "mean"], [1.2, 2.9], [[1.1, 1.3], None], label="RMSE", percent=False),
        plots.metric_bars(["transfer"], [0.8], [[0.75, 0.85]], label="micro-F1 (%)", percent=True),
        plots.metric_bars(["transfer", "mean"], [0.4, -0.05], [[0.3, 0.5], [-0.2, 0.0]], label="R²", percent=False),
        plots.predicted_vs_true([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]),  # constant: still a window
        plots.residuals([1.0, 2.0], [1.0, 2.0]),  # zero residuals
        plots.per_label_f1_bars(["a", "b"], [0.5, 1.0], [0.2, 0.0], "ctl"),
    ]
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert plt.get_fignums() == before
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
