"""``class_weight`` on imbalanced classes: the weights it resolves to, the linear probe, the
fine-tuning family's loss, the classical controls, and the class distribution in the report.

Real imbalanced data: MNIST-5k fours vs nines (nines 10x rarer in training) through
``task_data.pixel_context`` (grey pixels as features, no model) for the probe and the controls;
SpamAssassin ham vs spam (spam 10x rarer) with the tiny random text model for ``finetune``.
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from transferkit.backbones import get_backbone
from transferkit.controls import BASELINES
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.report import render_report
from transferkit.strategies import get_strategy
from transferkit.strategies.finetune import FineTune, FineTuneParams
from transferkit.strategies.params import build_params
from transferkit.strategies.probe import LinearProbe, ProbeParams
from transferkit.tasks.linear import class_weights, fit_logistic

from conftest import shared_file
from task_data import digit_pairs, digit_values, pixel_context, shuffled_mnist


def fours_and_nines(n_four: int = 300, n_nine: int = 30) -> tuple[Dataset, Dataset]:
    """Training: ``n_four`` fours and ``n_nine`` nines; test: 100 of each (balanced, unseen)."""
    images, digits = shuffled_mnist(5000)
    four = [i for i, d in enumerate(digits) if d == 4]
    nine = [i for i, d in enumerate(digits) if d == 9]

    def make(idx: list[int]) -> Dataset:
        return Dataset(modality="image", inputs=[images[i] for i in idx],
                       labels=["four" if digits[i] == 4 else "nine" for i in idx])

    return make(four[:n_four] + nine[:n_nine]), make(four[n_four:n_four + 100] + nine[n_nine:n_nine + 100])


def recall(pred: np.ndarray, labels: list[str], classes: list[str], cls: str) -> float:
    """Share of the test items of class ``cls`` predicted as ``cls`` (``pred``: ``(N,)`` class indices)."""
    y = np.array([classes.index(c) for c in labels])
    k = classes.index(cls)
    return float((pred[y == k] == k).mean())


# ----- the weights ---------------------------------------------------------------------------------
def test_balanced_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 30 + [1] * 3 + [2] * 7)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(class_weights("balanced", y, ["a", "b", "c"]), expected)
    assert class_weights(None, y, ["a", "b", "c"]) is None


def test_explicit_weights_name_known_classes_and_positive_numbers():
    y = np.array([0, 0, 1])
    np.testing.assert_allclose(class_weights({"spam": 5}, y, ["ham", "spam"]), [1.0, 5.0])
    with pytest.raises(UserInputError, match="'spma'") as e:
        class_weights({"spma": 5}, y, ["ham", "spam"])
    assert "ham, spam" in e.value.hint
    with pytest.raises(UserInputError, match="positive"):
        class_weights({"spam": 0}, y, ["ham", "spam"])


def test_the_option_is_typed_for_the_probe_and_the_finetuning_family():
    assert build_params(ProbeParams, {}, "linear-probe").class_weight is None
    assert build_params(ProbeParams, {"class_weight": "balanced"}, "linear-probe").class_weight == "balanced"
    # --param class_weight='{"spam": 5}' arrives as text
    assert build_params(FineTuneParams, {"class_weight": '{"spam": 5}'}, "finetune").class_weight == {"spam": 5}
    for bad in ("balancd", '{"spam": -1}', '{"spam": "x"}'):
        with pytest.raises(UserInputError, match="class_weight"):
            build_params(ProbeParams, {"class_weight": bad}, "linear-probe")
    for name in ("finetune", "gradual", "l2sp", "lp-ft", "lora", "linear-probe", "adabn", "dann", "mmd", "coral",
                 "self-training", "contrastive", "prototype"):
        assert get_strategy(name, {"class_weight": "balanced"}).get_params()["class_weight"] == "balanced"


def test_unit_weights_give_exactly_the_unweighted_fit():
    rng = np.random.RandomState(0)
    X, y = rng.randn(60, 5), np.array([0] * 45 + [1] * 15)
    W0, b0, _ = fit_logistic(X, y, Cs=(0.1, 1.0), cv=3, max_iter=500, seed=0)
    W1, b1, info = fit_logistic(X, y, Cs=(0.1, 1.0), cv=3, max_iter=500, seed=0, class_weight=np.ones(2))
    np.testing.assert_allclose(W0, W1)
    np.testing.assert_allclose(b0, b1)
    assert info["class_weight"] == [1.0, 1.0]


# ----- the linear probe and the controls --------------------------------------------------------------
def test_balanced_probe_raises_the_minority_recall_on_imbalanced_digits():
    train, test = fours_and_nines()
    recalls = {}
    for cw in (None, "balanced"):
        ctx = pixel_context(pool=2)
        probe = LinearProbe(class_weight=cw)
        probe.fit(train, ctx)
        recalls[cw] = recall(probe.predict_proba(test, ctx).argmax(1), test.labels, probe.classes_, "nine")
    # measured: 0.76 -> 0.85 on these 100 test nines (30 nines vs 300 fours in training)
    assert recalls["balanced"] > recalls[None] + 0.04, recalls
    assert probe.info_["class_weight"] == pytest.approx([330 / 600, 330 / 60])


def test_the_classical_control_takes_the_same_weights():
    train, test = fours_and_nines()
    classes = ["four", "nine"]
    y = np.array([classes.index(c) for c in train.labels])
    control = BASELINES.get("pixels-logreg")
    plain, _ = control(train, y, test, 0)
    weighted, info = control(train, y, test, 0, class_weight=class_weights("balanced", y, classes))
    assert info["class_weight"] == pytest.approx([330 / 600, 330 / 60])
    assert recall(weighted.argmax(1), test.labels, classes, "nine") > recall(plain.argmax(1), test.labels, classes,
                                                                               "nine")


def test_multilabel_balanced_weighs_each_labels_positives_by_its_rarity_clipped():
    Y = np.zeros((200, 4), dtype=np.uint8)
    Y[:1, 0] = 1  # 1 of 200: 199 -> clipped to 100
    Y[:50, 1] = 1  # 150 / 50 = 3
    Y[:150, 2] = 1  # 50 / 150 -> clipped to 1 (positives are never weighed down)
    np.testing.assert_allclose(class_weights("balanced", Y, ["a", "b", "c", "d"]), [100, 3, 1, 1])
    np.testing.assert_allclose(class_weights({"b": 5}, Y, ["a", "b", "c", "d"]), [1, 5, 1, 1])
    with pytest.raises(UserInputError, match="'e', which is not a label") as e:
        class_weights({"e": 2}, Y, ["a", "b", "c", "d"])
    assert "labels are: a, b, c, d" in e.value.hint


def test_multilabel_probe_weighs_each_labels_positives():
    """Weighted positives raise every label's probabilities; the weights reach each label's
    logistic regression (its info records them)."""
    train, test = digit_pairs(160).subset(range(120)), digit_pairs(160).subset(range(120, 160))
    outputs = {}
    for cw in (None, "balanced"):
        ctx = pixel_context(pool=4)
        probe = LinearProbe(class_weight=cw, Cs=[0.1], cv=2)
        probe.fit(train, ctx)
        outputs[cw] = probe.predict_outputs(test, ctx)
    Y = np.array([[c in labels for c in probe.classes_] for labels in train.labels])
    expected = np.clip((len(Y) - Y.sum(0)) / Y.sum(0), 1, 100)
    assert [e["pos_weight"] for e in probe.fit_info()["labels"]] == pytest.approx(expected)
    assert outputs["balanced"].mean() > outputs[None].mean() + 0.05, (outputs["balanced"].mean(), outputs[None].mean())


def test_unknown_class_is_refused_at_fit_naming_the_classes():
    train, _ = fours_and_nines(40, 10)
    with pytest.raises(UserInputError, match="'seven'") as e:
        LinearProbe(class_weight={"seven": 2}).fit(train, pixel_context(pool=4))
    assert "four, nine" in e.value.hint


# ----- fine-tuning ----------------------------------------------------------------------------------------
def ham_and_spam(n_ham: int, n_spam: int, n_test: int) -> tuple[Dataset, Dataset]:
    """SpamAssassin 2002 e-mails (subject + start of body): training ``n_ham`` ham and ``n_spam``
    spam; test ``n_test`` of each."""
    rows = {"ham": [], "spam": []}
    with gzip.open(shared_file("spamassassin.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows[r["label"]].append(f"{r['subject']}\n{r['body']}"[:400])
    rng = np.random.RandomState(0)
    for k in rows:
        rng.shuffle(rows[k])

    def make(ham: list[str], spam: list[str]) -> Dataset:
        return Dataset(modality="text", inputs=ham + spam, labels=["ham"] * len(ham) + ["spam"] * len(spam))

    return (make(rows["ham"][:n_ham], rows["spam"][:n_spam]),
            make(rows["ham"][n_ham:n_ham + n_test], rows["spam"][n_spam:n_spam + n_test]))


def test_balanced_finetune_raises_the_minority_recall_on_imbalanced_mail(tiny_text_dir):
    train, test = ham_and_spam(200, 20, 60)
    recalls = {}
    for cw in (None, "balanced"):
        backbone = get_backbone(str(tiny_text_dir))
        s = FineTune(class_weight=cw, epochs=3, max_steps=15, batch_size=16, val_fraction=0.0, lr=1e-3,
                     head_lr=5e-2, warmup=0, schedule="constant", head_dropout=0.0)
        model = TransferModel(backbone, s, progress=False)
        s.fit(train, model.ctx)
        proba = s.predict_proba(test, model.ctx)
        recalls[cw] = (recall(proba.argmax(1), test.labels, s.classes_, "spam"), float(proba[:, 1].mean()))
    # measured after 15 steps of the tiny random model: spam recall 0.00 unweighted, 1.00 balanced
    # (the random features barely tell the mails apart: the weighted loss moves the decision to spam)
    assert recalls["balanced"][0] > recalls[None][0] + 0.1, recalls
    assert recalls["balanced"][1] > recalls[None][1], recalls
    np.testing.assert_allclose(s.loss_weight_, [220 / 400, 220 / 40])


def test_validation_loss_is_weighted_as_the_training_loss():
    import torch
    import torch.nn.functional as F

    from transferkit.strategies.finetune import _scores

    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    y, w = np.array([0, 1, 1]), np.array([0.5, 3.0])
    expected = F.nll_loss(torch.log(torch.tensor(proba)), torch.tensor(y), weight=torch.tensor(w)).item()
    assert _scores(proba, y, w)["loss"] == pytest.approx(expected)
    assert _scores(proba, y)["loss"] == pytest.approx(-np.log([0.9, 0.7, 0.4]).mean())


# ----- regression, and the report --------------------------------------------------------------------------
def test_regression_refuses_class_weight_clearly():
    ds = digit_values(120)
    with pytest.raises(UserInputError, match="regression target has none") as e:
        LinearProbe(class_weight="balanced").fit(ds, pixel_context(pool=4))
    assert "class_weight" in e.value.hint


def test_report_shows_the_class_distribution_of_each_split():
    metrics = {"test": {"n": 4, "accuracy": 0.5, "accuracy_ci": [0.1, 0.9], "confidence": 0.95,
                        "classes": ["ham", "spam"], "per_class": {}}}
    validation = {"problems": [], "counts": {"train": {"items": 220, "classes": {"ham": 200, "spam": 20}},
                                             "test": {"items": 120, "classes": {"ham": 60, "spam": 60}}}}
    html = render_report(metrics, validation=validation)
    assert "Class distribution" in html
    assert "train (220 items)" in html and "test (120 items)" in html
    assert "200 (90.9%)" in html and "20 (9.1%)" in html and "60 (50.0%)" in html
    assert "10.0x" in html and "class_weight=balanced" in html
    regression = {"problems": [], "counts": {"train": {"items": 50, "classes": {}}}}
    assert "Class distribution" not in render_report(metrics, validation=regression)
    assert "Class distribution" not in render_report(metrics)


def test_cli_class_weight_reaches_the_probe_the_controls_and_the_report(tiny_text_dir, tmp_path, monkeypatch):
    """``--class-weight balanced`` end to end: the run's config keeps it, the probe and the
    TF-IDF control are fitted with it, and the report shows the class distribution."""
    from transferkit import classical
    from transferkit.cli import main

    seen = []

    def spy(*args, **kw):
        seen.append(kw.get("class_weight"))
        return fit_logistic(*args, **kw)

    monkeypatch.setattr(classical, "fit_logistic", spy)

    train, _ = ham_and_spam(40, 8, 0)
    data = tmp_path / "mail.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(train.inputs, train.labels)))
    out = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--model", str(tiny_text_dir), "--class-weight", "balanced",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["strategy_params"]["class_weight"] == "balanced"
    metrics = json.loads((out / "metrics.json").read_text())
    weights = metrics["strategy"]["fit"]["class_weight"]  # [ham, spam] on the 80% training part
    assert weights[1] > 1 > weights[0]
    # the selection's classical candidate fits both feature sets (words; words + characters) and is
    # the control's very model (read, not refitted); the hybrid fits one set: each weighted
    assert "tfidf-logreg" in metrics["controls"] and len(seen) == 3
    assert all(list(s) == pytest.approx(weights) for s in seen)
    counts = json.loads((out / "validation.json").read_text())["counts"]
    html = (out / "report.html").read_text()
    assert "Class distribution" in html and f"{counts['train']['classes']['spam']} (" in html


def test_the_classical_control_of_a_multi_label_run_gets_the_label_weights(monkeypatch):
    """``balanced`` on a multi-label run reaches the classical control as per-label positive
    weights (an unweighted control next to a weighted transfer model would be a straw man)."""
    import numpy as np

    from transferkit import classical, controls, evidence
    from transferkit.data import Dataset

    seen = {}

    def fake_fit_linear(task, X, y, **kw):
        seen["class_weight"] = kw.get("class_weight")
        raise RuntimeError("stop here")

    monkeypatch.setattr(classical, "fit_linear", fake_fit_linear)
    labels = [("a",)] * 18 + [("a", "b")] * 2
    train = Dataset(modality="image", inputs=[np.full((8, 8), i, dtype=np.uint8) for i in range(20)], labels=labels,
                    task="multi-label")
    y = np.array([[1, 0]] * 18 + [[1, 1]] * 2)
    with pytest.raises(RuntimeError, match="stop here"):
        controls.pixels_logreg(train, y, train, 0, task="multi-label",
                               class_weight=evidence.class_weights("balanced", y, ["a", "b"]))
    assert seen["class_weight"].tolist() == [1.0, 9.0]
