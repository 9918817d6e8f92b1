"""SHOT (Liang et al., ICML 2020): the information-maximisation loss and the centroid
pseudo-labels on constructed arrays; the ``shot`` strategy on a tiny random EfficientNet-Lite0."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.alignment import centroid_pseudo_labels, information_maximization


# ----- information maximisation ----------------------------------------------------------------
def test_im_loss_is_mean_entropy_minus_entropy_of_the_mean():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    loss, parts = information_maximization(logits)
    p = torch.softmax(logits, 1).numpy().astype(np.float64)
    ent = float(np.mean(-(p * np.log(p + 1e-5)).sum(1)))
    m = p.mean(0)
    div = float(-(m * np.log(m + 1e-5)).sum())
    assert float(loss) == pytest.approx(ent - div, abs=1e-5)
    assert parts["entropy"] == pytest.approx(ent, abs=1e-5) and parts["diversity"] == pytest.approx(div, abs=1e-5)


def test_im_loss_prefers_confident_and_diverse_over_collapsed_or_uncertain():
    c = 4
    confident_diverse = 20.0 * torch.eye(c)  # each item sure of a different class
    collapsed = 20.0 * torch.eye(c)[[0, 0, 0, 0]]  # every item sure of class 0
    uncertain = torch.zeros(c, c)  # every item uniform
    best, _ = information_maximization(confident_diverse)
    assert float(best) == pytest.approx(-math.log(c), abs=1e-3)  # the minimum, -log C
    assert float(information_maximization(collapsed)[0]) == pytest.approx(0.0, abs=1e-3)
    assert float(information_maximization(uncertain)[0]) == pytest.approx(0.0, abs=1e-3)


def test_im_loss_gradient_sharpens_and_spreads_predictions():
    logits = torch.tensor([[1.0, 0.8], [0.9, 1.0], [1.0, 0.7]], requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    first = information_maximization(logits)[0].item()
    for _ in range(50):
        opt.zero_grad()
        information_maximization(logits)[0].backward()
        opt.step()
    loss, parts = information_maximization(logits)
    assert loss.item() < first - 0.3
    assert set(logits.argmax(1).tolist()) == {0, 1}  # not all in one class


# ----- centroid pseudo-labels ------------------------------------------------------------------
def _clusters(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated directions in 5-d feature space, ``n`` items each, and their classes."""
    rng = np.random.default_rng(seed)
    centres = np.array([[5, 0, 0, 0, 0], [0, 5, 0, 0, 0], [0, 0, 5, 0, 0]], float)
    y = np.repeat(np.arange(3), n)
    return centres[y] + rng.normal(0, 0.5, (3 * n, 5)), y


def test_pseudo_labels_follow_the_clusters_where_the_head_is_wrong_on_some_items():
    f, y = _clusters()
    proba = np.full((len(y), 3), 0.1)
    proba[np.arange(len(y)), y] = 0.8
    wrong = np.arange(0, len(y), 5)  # a fifth of the items: the head is confidently wrong
    proba[wrong] = 0.05
    proba[wrong, (y[wrong] + 1) % 3] = 0.9
    labels, info = centroid_pseudo_labels(f, proba)
    assert (proba.argmax(1) == y).mean() == pytest.approx(0.8)
    assert (labels == y).all()
    assert info["changed_from_head"] == pytest.approx(0.2) and info["classes_used"] == 3
    assert len(info["agreement_rounds"]) == 1


def test_pseudo_labels_use_cosine_distance_not_euclidean():
    # the same direction at very different norms is one class by cosine distance
    f = np.array([[1.0, 0.0], [100.0, 0.0], [0.0, 1.0], [0.0, 80.0]])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.6, 0.4]])  # the head is wrong on items 1 and 3
    labels, _ = centroid_pseudo_labels(f, proba)
    assert labels.tolist() == [0, 0, 1, 1]


def test_a_class_the_head_never_predicts_gets_no_pseudo_label():
    f, y = _clusters()
    proba = np.zeros((len(y), 3))
    proba[:, 2] = 0.2
    proba[np.arange(len(y)), np.where(y == 2, 0, y)] += 0.8  # class 2 is never the argmax
    labels, info = centroid_pseudo_labels(f, proba)
    assert info["classes_used"] == 2 and set(labels.tolist()) <= {0, 1}


def test_refinement_rounds_are_counted_and_shapes_checked():
    f, y = _clusters(10)
    proba = np.eye(3)[y] * 0.7 + 0.1
    labels, info = centroid_pseudo_labels(f, proba, rounds=3)
    assert labels.dtype == np.int64 and labels.shape == (30,) and len(info["agreement_rounds"]) == 3
    assert centroid_pseudo_labels(f, proba, rounds=0)[1]["agreement_rounds"] == []
    with pytest.raises(ValueError, match="proba must be"):
        centroid_pseudo_labels(f, proba[:5])


# ----- the strategy, on a tiny random EfficientNet-Lite0 ---------------------------------------------------
def _between_the_colours(n: int, seed: int):
    """Images between test_finetune's two colour classes (red and blue raised by amounts summing to
    120): the source head is unsure of them, so information maximisation has work to do."""
    from transferkit.data import Dataset

    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        img = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
        a = rng.randint(40, 81)
        img[..., 0] += a
        img[..., 2] += 120 - a
        out.append(img)
    return Dataset(modality="image", inputs=out)


def test_shot_adapts_the_last_groups_under_the_source_head_and_reloads():
    from test_adabn_backbone import images, tiny_cnn

    from transferkit.model import TransferModel
    from transferkit.strategies import get_strategy

    # the paper's statistics (batch statistics while training): a random-init network's running
    # statistics are meaningless, and kept (the default) they leave nothing to learn here
    params = {"epochs": 2, "batch_size": 8, "lr": 0.01, "Cs": [0.01], "statistics": "target"}
    s = get_strategy("shot", params)
    backbone = tiny_cnn()
    model = TransferModel(backbone, s)
    model.ctx.target = _between_the_colours(16, 1)
    s.fit(images(6, 0), model.ctx)
    info = s.fit_info()
    assert info["adapted"] and len(info["epochs"]) == 2 and info["trained_groups"] == ["stage7", "stage8"]
    assert info["im_after"] < info["im_before"] - 0.05  # more confident and still diverse on the target
    # the head is the source hypothesis: the plain probe on the pre-trained (here random-init) features
    probe = s.source_only()
    probe.fit(images(6, 0), TransferModel(tiny_cnn(), probe).ctx)
    np.testing.assert_array_equal(s.head_weight_, probe.head_weight_)
    # only the last two groups (and their BatchNorm statistics) changed
    fresh = tiny_cnn()
    base, own = fresh.module.state_dict(), backbone.module.state_dict()
    changed = {k for k in own if not torch.equal(own[k], base[k])}
    saved = {k[len("backbone."):] for k in s.state_tensors() if k.startswith("backbone.")}
    ids = {id(p) for name, ps in backbone.layer_groups() if name in ("stage7", "stage8") for p in ps}
    layers = {n.rsplit(".", 1)[0] for n, p in backbone.module.named_parameters() if id(p) in ids}
    assert changed and changed <= saved and {k.rsplit(".", 1)[0] for k in saved} <= layers
    again = get_strategy("shot", s.get_params()).load_state(s.state_tensors(), s.classes_, fresh)
    ctx = TransferModel(fresh, again).ctx
    np.testing.assert_allclose(again.predict_proba(model.ctx.target, ctx), s.predict_proba(model.ctx.target, model.ctx),
                               atol=1e-5)
    assert fresh.cache_key() == backbone.cache_key()


def test_shot_is_classification_only_and_without_target_the_probe():
    from test_adabn_backbone import images, tiny_cnn

    from transferkit.errors import UserInputError
    from transferkit.model import TransferModel
    from transferkit.strategies import get_strategy

    s = get_strategy("shot")
    model = TransferModel(tiny_cnn(), s)
    s.fit(images(4, 0), model.ctx)
    assert s.fit_info()["adapted"] is False and "plain linear probe" in model.ctx.notes[-1]
    assert s.state_tensors().keys() == {"head.weight", "head.bias"}
    with pytest.raises(UserInputError, match="strategy 'shot' handles classification; for regression use"):
        s.check_task("regression")
