"""``auto-adapt``: candidates fitted and scored without target labels, the rule, isolation of the
candidates that tune the backbone, save/load, the report section and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_adabn_backbone import images, tiny_cnn
from test_adapt import domain_files  # noqa: F401 (the fixture: source, target, labelled target test)

from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.report.html import render_report
from transferkit.runs import RunDir, load
from transferkit.strategies import _candidates as C
from transferkit.strategies import auto_adapt as A
from transferkit.strategies import get_strategy
from transferkit.strategies._tuning import batchnorm_layers
from transferkit.strategies.base import TransferContext

FAST = {"mmd": {"steps": 30}, "dann": {"steps": 30}, "self-training": {"steps": 30, "rounds": 1}}


class Features:
    """Items are ``"s<i>"`` / ``"t<i>"`` texts whose features are rows of fixed arrays (cached
    features without a backbone pass)."""

    def __init__(self, xs: np.ndarray, xt: np.ndarray):
        self.rows = {**{f"s{i}": x for i, x in enumerate(xs)}, **{f"t{i}": x for i, x in enumerate(xt)}}

    def __call__(self, data: Dataset) -> np.ndarray:
        return np.stack([self.rows[x] for x in data.inputs]).astype(np.float32)


def blobs(n: int, shift: float, scale: float, seed: int, share: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """Two classes in 8 dimensions (means -1 and +1 on the first two), ``share`` of class b,
    then every feature moved by ``x * scale + shift`` (a shift AdaBN on features undoes)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(int)
    x = rng.normal(0, 0.6, (n, 8))
    x[:, :2] += np.where(y[:, None] == 1, 1.0, -1.0)
    return x * scale + shift, ["ab"[v] for v in y]


def feature_case(shift: float, scale: float, target_share: float, tiny_text_dir, **params):
    from transferkit.backbones import get_backbone

    xs, ys = blobs(120, 0.0, 1.0, 0)
    xt, yt = blobs(100, shift, scale, 1, target_share)
    source = Dataset(modality="text", inputs=[f"s{i}" for i in range(len(xs))], labels=ys)
    target = Dataset(modality="text", inputs=[f"t{i}" for i in range(len(xt))], labels=None)
    ctx = TransferContext(backbone=get_backbone(str(tiny_text_dir)), features=Features(xs, xt), target=target)
    s = get_strategy("auto-adapt", {"candidates": ["source-only", "adabn", "mmd"], "candidate_params": FAST,
                                    **params})
    s.fit(source, ctx)
    return s, ctx, Dataset(modality="text", inputs=target.inputs, labels=yt)


def test_every_candidate_is_fitted_and_scored_on_every_criterion(tiny_text_dir):
    s, ctx, test = feature_case(3.0, 2.0, 0.5, tiny_text_dir)
    info = s.fit_info()
    rows = info["candidates"]
    assert [r["label"] for r in rows] == ["source-only", "adabn", "mmd"]
    for r in rows:
        assert np.isfinite(r["snd"]) and np.isfinite(r["entropy"]) and np.isfinite(r["im"]) and r["seconds"] >= 0
        assert r["source_loss"] is not None and sum(r["target_shares"]) == len(test)
    assert rows[0]["dev"] is not None and rows[2]["dev"] is not None
    assert rows[1]["dev"] is None and "own statistics" in rows[1]["dev_note"]  # AdaBN: DEV does not apply
    assert sum(r["chosen"] for r in rows) == 1 and info["n_held_out"] == 24 and info["n_scored_on"] == 96
    assert info["choice"] == rows[A.choose(rows, s.criterion, s.margin)[0]]["label"]
    assert info["skipped"] == []
    # the model predicts like the chosen candidate refitted on every source item
    chosen = get_strategy(info["strategy"], info["params"])
    chosen.fit(Dataset(modality="text", inputs=[f"s{i}" for i in range(120)], labels=blobs(120, 0.0, 1.0, 0)[1]),
               ctx)
    np.testing.assert_allclose(s.predict_proba(test, ctx), chosen.predict_proba(test, ctx), atol=1e-6)


def test_the_default_rule_adapts_where_the_target_moved_and_not_where_it_did_not(tiny_text_dir):
    """Every target feature moved and scaled: source-only puts the target in one class (and SND and
    DEV still prefer it); the default rule (information maximisation) takes adabn.  No shift: no
    candidate beats source-only, which is kept."""
    s, ctx, test = feature_case(3.0, 2.0, 0.5, tiny_text_dir)
    rows = {r["label"]: r for r in s.fit_info()["candidates"]}
    assert s.fit_info()["choice"] == "adabn" and s.criterion == "im"
    assert rows["source-only"]["snd"] > rows["adabn"]["snd"] and rows["source-only"]["im"] < 0.05
    y = np.array([s.classes_.index(v) for v in test.labels])
    assert (s.predict_proba(test, ctx).argmax(1) == y).mean() > 0.9
    s, ctx, test = feature_case(0.0, 1.0, 0.5, tiny_text_dir)
    assert s.fit_info()["choice"] == "source-only" and s.chosen_.name == "linear-probe"


def _row(label: str, snd: float, entropy: float, dev: float | None) -> dict:
    return {"label": label, "snd": snd, "entropy": entropy, "dev": dev}


def test_the_rule_keeps_source_only_unless_a_candidate_beats_it():
    rows = [_row("source-only", 1.0, 0.5, 0.40), _row("adabn", 1.3, 0.2, None), _row("mmd", 0.9, 0.6, 0.30)]
    assert A.choose(rows, "snd", 0.0)[0] == 1
    assert A.choose(rows, "snd", 0.5) == (0, "no candidate beats source-only's snd by more than 0.5")
    assert A.choose(rows, "entropy", 0.0)[0] == 1
    assert A.choose(rows, "dev", 0.0)[0] == 2  # adabn has no DEV: it cannot win by DEV
    assert A.choose(rows, "dev", 0.2)[0] == 0
    worse = [_row("source-only", 2.0, 0.1, 0.1), _row("adabn", 1.0, 0.9, None)]
    assert A.choose(worse, "snd", 0.0)[0] == 0 and A.choose(worse, "entropy", 0.0)[0] == 0
    # a method trained to make its target predictions confident is shown but not chosen by them
    confident = rows + [{**_row("self-training", 9.0, 0.0, 0.9), "eligible": False}]
    assert A.choose(confident, "snd", 0.0)[0] == 1 and A.choose(confident, "entropy", 0.0)[0] == 1


def test_only_calibrated_linear_heads_are_eligible_by_default():
    eligible = {c.label for c in C.CANDIDATES.values() if c.calibrated}
    assert eligible == {"source-only", "adabn", "adabn-backbone", "input-invariance"}
    assert {"tent", "shot", "self-training", "mcc"} <= set(C.DEFAULT_LABELS)  # tried and shown all the same


def test_information_is_low_for_a_model_that_puts_every_item_in_one_class():
    collapsed = np.tile([0.99, 0.005, 0.005], (30, 1))
    spread = np.eye(3)[np.arange(30) % 3] * 0.9 + 0.1 / 3
    assert A.information(collapsed) < 0.05 < 0.5 < A.information(spread)
    assert A.information(spread) == pytest.approx(np.log(3) - A.entropy(spread))


def test_no_target_gives_the_probe_and_unknown_candidates_are_refused(tiny_text_dir):
    from transferkit.backbones import get_backbone

    xs, ys = blobs(40, 0.0, 1.0, 0)
    source = Dataset(modality="text", inputs=[f"s{i}" for i in range(40)], labels=ys)
    ctx = TransferContext(backbone=get_backbone(str(tiny_text_dir)), features=Features(xs, xs[:0]))
    s = get_strategy("auto-adapt").fit(source, ctx)
    assert s.fit_info()["choice"] == "source-only" and s.chosen_.name == "linear-probe"
    assert "no unlabelled target" in ctx.notes[-1]
    with pytest.raises(UserInputError, match="candidates must be 'default' or distinct candidates among"):
        get_strategy("auto-adapt", {"candidates": ["adabn", "no-such-method"]})
    with pytest.raises(UserInputError, match="candidate_params must be"):
        get_strategy("auto-adapt", {"candidate_params": {"mmd": 3}})


def test_defaults_follow_the_modality_and_the_backbone(tiny_text_dir):
    from transferkit.backbones import get_backbone

    text, left = C.resolve("default", {}, get_backbone(str(tiny_text_dir)), "text")
    labels = [c.label for c in text]
    reasons = {r["label"]: r["reason"] for r in left}
    assert labels[:2] == ["source-only", "adabn"] and "adabn-backbone" not in labels
    assert "no BatchNorm" in reasons["adabn-backbone"] and "image" in reasons["input-invariance"]
    image, _ = C.resolve("default", {"mmd": {"steps": 5}}, tiny_cnn(), "image")
    by = {c.label: c for c in image}
    assert "adabn-backbone" in by and by["mmd"].params == {"trade_off": 1.0, "steps": 5}


def test_backbone_candidates_each_start_from_the_pretrained_weights(monkeypatch):
    """adabn-backbone and tent each get their own copy; the run's backbone stays pre-trained until
    the chosen one is put in it, and the candidates scored on pre-trained features keep them."""
    source, target = images(6, 0), images(6, 1, invert=True)
    backbone = tiny_cnn()
    pretrained = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    seen = []
    original = A.AutoAdapt._fit_candidate

    def spy(self, run, data, ctx):
        assert all(torch.equal(v, pretrained[k]) for k, v in ctx.backbone.module.state_dict().items())
        original(self, run, data, ctx)
        seen.append(run)

    monkeypatch.setattr(A.AutoAdapt, "_fit_candidate", spy)
    monkeypatch.setattr(A, "choose", lambda rows, c, m: ([r["label"] for r in rows].index("adabn-backbone"), "test"))
    s = get_strategy("auto-adapt", {"candidates": ["source-only", "adabn-backbone", "tent"], "refit": False})
    model = TransferModel(backbone, s)
    model.ctx.target = target
    s.fit(source, model.ctx)
    runs = {r.cand.label: r for r in seen}
    a, t = runs["adabn-backbone"].backbone, runs["tent"].backbone
    assert a is not t and a is not backbone and t is not backbone
    name, _ = batchnorm_layers(a.module)[0]
    own = dict(batchnorm_layers(backbone.module))
    assert not torch.equal(dict(batchnorm_layers(a.module))[name].running_mean, pretrained[f"{name}.running_mean"])
    # tent trains the normalisation affine parameters on its copy; adabn's copy keeps the pre-trained ones
    assert torch.equal(dict(batchnorm_layers(a.module))[name].weight, pretrained[f"{name}.weight"])
    assert not torch.equal(dict(batchnorm_layers(t.module))[name].weight, pretrained[f"{name}.weight"])
    # the chosen candidate is in the run's backbone now, and its predictions are the scored ones
    assert s.tunes_backbone and torch.equal(own[name].running_mean, dict(batchnorm_layers(a.module))[name].running_mean)
    outs = s.candidate_outputs(target, model.ctx)
    np.testing.assert_allclose(s.predict_proba(target, model.ctx), outs["adabn-backbone"], atol=1e-6)
    # source-only still reads pre-trained features (a copy kept for it)
    so = get_strategy("linear-probe")
    fresh = TransferModel(tiny_cnn(), so)
    so.fit(source.subset(np.sort(A.AutoAdapt._split(s, np.array(
        [s.classes_.index(v) for v in source.labels]), model.ctx)[0])), fresh.ctx)
    np.testing.assert_allclose(outs["source-only"], so.predict_proba(target, fresh.ctx), atol=1e-6)
    assert s.candidate_outputs(target, model.ctx, release=True) and s.candidate_outputs(target, model.ctx) == {}


def test_save_and_load_restore_the_chosen_backbone_candidate(monkeypatch, tmp_path):
    source, target = images(6, 0), images(6, 1, invert=True)
    monkeypatch.setattr(A, "choose", lambda rows, c, m: ([r["label"] for r in rows].index("adabn-backbone"), "test"))
    backbone = tiny_cnn()
    s = get_strategy("auto-adapt", {"candidates": ["source-only", "adabn-backbone"]})
    model = TransferModel(backbone, s)
    model.ctx.target = target
    s.fit(source, model.ctx)
    proba = s.predict_proba(target, model.ctx)
    tensors = s.state_tensors()
    assert "auto.choice" in tensors and all(k == "auto.choice" or k.startswith("chosen.") for k in tensors)
    again = get_strategy("auto-adapt").load_state(tensors, s.classes_, tiny_cnn())
    assert again.fit_info()["choice"] == "adabn-backbone" and again.tunes_backbone
    np.testing.assert_allclose(again.predict_proba(target, TransferModel(again.chosen_.backbone_, again).ctx),
                               proba, atol=1e-6)
    with pytest.raises(UserInputError, match="does not say which candidate"):
        get_strategy("auto-adapt").load_state({k: v for k, v in tensors.items() if k != "auto.choice"},
                                              s.classes_, tiny_cnn())


def test_candidate_evidence_and_the_report_section():
    info = {"criterion": "snd", "choice": "adabn", "why": "highest SND (1.3)", "refit": True,
            "candidates": [{**_row("source-only", 1.0, 0.5, 0.4), "chosen": False, "seconds": 1.0},
                           {**_row("adabn", 1.3, 0.2, None), "chosen": True, "seconds": 2.0}],
            "skipped": [{"label": "shot", "reason": "estimated 900 s > the 300 s left of budget_s=300"}]}
    y = np.array([0, 1, 1, 0])
    outs = {"source-only": np.eye(2)[[0, 1, 1, 0]], "adabn": np.eye(2)[[0, 1, 0, 0]]}
    ev = A.candidate_evidence(info, outs, y, labelled_target=True)
    assert [r["test_accuracy"] for r in ev["candidates"]] == [1.0, 0.75]
    assert ev["best"] == "source-only" and ev["regret_points"] == pytest.approx(25.0)
    assert "the criterion was wrong by 25.0 points" in ev["explanation"]
    test = {"accuracy": 0.75, "accuracy_ci": [0.5, 1.0], "macro_f1": 0.7, "macro_f1_ci": [0.5, 1.0], "ece": 0.1,
            "ece_ci": [0.0, 0.2], "log_loss": 0.5, "per_class": {}, "classes": ["a", "b"]}
    html = render_report({"test": test, "domain": {"auto_adapt": ev}})
    assert "How the adaptation method was chosen" in html and "wrong by 25.0 points" in html
    assert "best on test" in html and "budget_s=300" in html


def test_cli_auto_adapt_end_to_end(tiny_text_dir, domain_files, tmp_path, capsys):  # noqa: F811 (the fixture)
    src, tgt, tgt_test = domain_files
    out = tmp_path / "run"
    rc = main(["fit", "--data", str(src), "--test", str(tgt_test), "--target-unlabelled", str(tgt),
               "--model", str(tiny_text_dir), "--strategy", "auto-adapt", "--param", "candidates=source-only,adabn,mmd",
               "--param", 'candidate_params={"mmd": {"steps": 20}}', "--no-control", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    a = m["domain"]["auto_adapt"]
    assert [r["label"] for r in a["candidates"]] == ["source-only", "adabn", "mmd"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in a["candidates"]) and a["labelled_target"]
    assert 0 <= m["test"]["accuracy"] <= 1 and "regret_points" in a
    assert m["strategy"]["fit"]["choice"] == a["choice"]
    assert "How the adaptation method was chosen" in (out / "report.html").read_text()
    printed = capsys.readouterr().out
    assert "auto-adapt candidate source-only" in printed and "auto-adapt: The criterion" in printed
    again = load(out)
    np.testing.assert_allclose(again.predict_proba(["HELLO THERE !!"]), again.predict_proba(["HELLO THERE !!"]))
    assert RunDir(out).path == out
