"""Domain adaptation (dann, mmd, coral, self-training), prototype, zero-shot and contrastive:
the maths on synthetic features, the strategies on a known shift, the pipeline and CLI end to
end on a tiny model (fast)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from transferkit.alignment import CoralLoss, MultipleKernelMMD, dann_lambda, dev_risk, gradient_reverse, snd
from transferkit.cli import main
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.strategies import get_strategy
from transferkit.strategies.base import TransferContext
from transferkit.strategies.contrastive import PairSampler
from transferkit.strategies.zeroshot import parse_label_descriptions

from conftest import toy_texts


# ----- the losses ------------------------------------------------------------------------------
def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.ones(3, 2, requires_grad=True)
    gradient_reverse(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3, 2), -0.5))
    assert dann_lambda(0.0) == 0.0 and 0.99 < dann_lambda(1.0) < 1.0
    assert dann_lambda(0.2) < dann_lambda(0.5)


def test_mmd_and_coral_are_zero_for_one_set_and_grow_with_the_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, generator=g)
    mmd, coral = MultipleKernelMMD(), CoralLoss()
    assert abs(float(mmd(a, a))) < 1e-6 and float(coral(a, a)) == 0.0
    near, far = a + 0.2, a + 2.0
    assert 0 < float(mmd(a, near)) < float(mmd(a, far))
    assert float(coral(a, a * 3)) > float(coral(a, a * 1.1)) > 0
    # scale-free bandwidth: the same loss for features 100x larger
    assert float(mmd(a * 100, far * 100)) == pytest.approx(float(mmd(a, far)), rel=1e-4)


def test_dev_risk_uses_normalised_weights_and_tracks_the_loss():
    rng = np.random.default_rng(0)
    f_s, f_t = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + [1.5, 0, 0, 0]
    f_val = rng.normal(size=(100, 4))
    low, high = np.full(100, 0.1), np.full(100, 1.0)
    r_low, r_high = dev_risk(low, f_val, f_s, f_t), dev_risk(high, f_val, f_s, f_t)
    assert r_low["weight_mean"] == pytest.approx(1.0)
    assert r_low["risk"] == pytest.approx(0.1) and r_high["risk"] == pytest.approx(1.0)
    # items that look like the target weigh more: their loss moves the risk more
    losses = np.where(f_val[:, 0] > 0.5, 1.0, 0.0)
    assert dev_risk(losses, f_val, f_s, f_t)["risk"] > losses.mean()


def test_snd_prefers_confident_clusters():
    rng = np.random.default_rng(0)
    clustered = np.eye(3)[rng.integers(0, 3, 90)] * 0.9 + 0.1 / 3
    diffuse = rng.dirichlet(np.ones(3), 90)
    # identical rows within a cluster: each row's neighbours are spread evenly over its cluster
    sizes = np.bincount(clustered.argmax(1))
    expected = np.mean([np.log(sizes[k] - 1) for k in clustered.argmax(1)])
    assert snd(clustered) == pytest.approx(expected, abs=0.05)
    assert snd(clustered) > snd(diffuse)


# ----- the strategies on a known shift -----------------------------------------------------------------
def _shifted_problem(n: int = 200, d: int = 8, seed: int = 0):
    """Two classes split along dim 0; the target moved by +2 along dim 0 and +3 along dim 1.
    Features are served by index (the inputs are the row numbers as text)."""
    rng = np.random.default_rng(seed)
    ys, yt = rng.integers(0, 2, n), rng.integers(0, 2, n)
    xs = rng.normal(size=(n, d))
    xs[:, 0] += np.where(ys == 1, 2.0, -2.0)
    xt = rng.normal(size=(n, d))
    xt[:, 0] += np.where(yt == 1, 2.0, -2.0) + 2.0
    xt[:, 1] += 3.0
    src, test, ctx, _ = _served(xs, ys, xt, yt)
    return src, test, ctx


def _served(xs, ys, xt, yt):
    """Source / labelled target test sets whose items are row numbers, and a context factory
    serving the rows of ``[xs; xt]`` as their features (the target set as ``ctx.target``)."""
    n = len(xs)
    table = np.vstack([xs, xt]).astype(np.float32)
    src = Dataset(modality="text", inputs=[str(i) for i in range(n)], labels=[str(v) for v in ys])
    tgt = Dataset(modality="text", inputs=[str(n + i) for i in range(len(xt))])
    test = Dataset(modality="text", inputs=tgt.inputs, labels=[str(v) for v in yt])

    def ctx():
        return TransferContext(backbone=None, features=lambda ds: table[[int(i) for i in ds.inputs]], seed=0,
                               target=tgt)
    return src, test, ctx, table


def _acc(strategy, test, ctx) -> float:
    return float((np.array(strategy.classes_)[strategy.predict_proba(test, ctx).argmax(1)]
                  == np.array(test.labels)).mean())


@pytest.mark.parametrize("name,params", [("mmd", {"trade_off": 1.0}), ("self-training", {"threshold": 0.8})])
def test_adaptation_beats_source_only_on_a_known_shift(name, params):
    src, test, make_ctx = _shifted_problem()
    adapted = get_strategy(name, {**params, "steps": 300})
    ctx = make_ctx()
    adapted.fit(src, ctx)
    source_only = adapted.source_only()
    source_only.fit(src, make_ctx())
    a, s = _acc(adapted, test, ctx), _acc(source_only, test, ctx)
    assert s < 0.75 and a > s + 0.15, (a, s)
    # the adapter's features of the two domains are closer after adaptation
    assert adapted.transform(test, ctx).shape == (len(test), adapted.hidden)


def test_domain_standardisation_fixes_a_per_feature_affine_shift_and_survives_saving():
    rng = np.random.default_rng(1)
    n, d = 300, 6
    ys, yt = rng.integers(0, 2, n), rng.integers(0, 2, n)
    xs = rng.normal(size=(n, d))
    xs[:, 0] += np.where(ys == 1, 1.5, -1.5)
    xt = rng.normal(size=(n, d))
    xt[:, 0] += np.where(yt == 1, 1.5, -1.5)
    xt = xt * np.array([0.2, 4, 1, 3, 1, 1]) + np.array([6.0, -5, 2, 0, 8, 1])  # each feature rescaled and moved
    src, test, make_ctx, table = _served(xs, ys, xt, yt)
    acc = {}
    for norm in ("domain", "source"):
        s = get_strategy("dann", {"trade_off": 0.0, "normalize": norm, "steps": 200})
        ctx = make_ctx()
        s.fit(src, ctx)
        acc[norm] = _acc(s, test, ctx)
        assert s.fit_info()["normalize"] == norm
    assert acc["domain"] > 0.85 and acc["source"] < acc["domain"] - 0.2, acc
    # the source-only comparison standardises with the source's statistics
    s = get_strategy("dann", {"trade_off": 0.0, "normalize": "domain", "steps": 200})
    ctx = make_ctx()
    s.fit(src, ctx)
    assert _acc(s, test, ctx) == acc["domain"] and s.source_only().normalize == "source"
    assert get_strategy("dann").normalize == "source"
    assert any("AdaBN" in note for note in ctx.notes)
    # adabn: the probe through the target's statistics; its source-only comparison is the plain probe
    p = get_strategy("adabn")
    ctx = make_ctx()
    p.fit(src, ctx)
    probe = p.source_only()
    probe.fit(src, make_ctx())
    assert probe.name == "linear-probe" and p.fit_info()["target_statistics"]
    assert _acc(p, test, ctx) > 0.85 and _acc(probe, test, ctx) < _acc(p, test, ctx) - 0.2
    with torch.no_grad():  # the folded head is the model: export and explanations see the same
        np.testing.assert_allclose(torch.softmax(p.torch_head()(torch.as_tensor(table[n:])), 1).numpy(),
                                   p.predict_proba(test, ctx), atol=1e-5)
    # source items embedded with the source's statistics land where target items do
    fs, ft = s.transform(src, ctx, domain="source"), s.transform(test, ctx)
    fs_wrong = s.transform(src, ctx)
    assert np.abs(fs.mean(0) - ft.mean(0)).mean() < 0.5 * np.abs(fs_wrong.mean(0) - ft.mean(0)).mean()
    # saved and loaded: the same predictions and the same source statistics
    from transferkit.strategies.base import Strategy  # noqa: F401

    again = get_strategy("dann", s.get_params()).load_state(s.state_tensors(), s.classes_)
    np.testing.assert_allclose(again.predict_proba(test, ctx), s.predict_proba(test, ctx), atol=1e-6)
    np.testing.assert_allclose(again.transform(src, ctx, domain="source"), fs, atol=1e-5)
    with pytest.raises(UserInputError, match="normalize"):
        get_strategy("dann", {"normalize": "domain", "on": "backbone"})
    with pytest.raises(UserInputError, match="normalize"):
        get_strategy("coral", {"normalize": "target"})


def test_knob_chosen_without_target_labels_and_explained():
    src, test, make_ctx = _shifted_problem()
    s = get_strategy("dann", {"steps": 100})
    ctx = make_ctx()
    s.fit(src, ctx)
    sel = s.fit_info()["selection"]
    assert sel["criterion"] == "dev" and sel["candidates"] == [0.0, 0.1, 0.3, 1.0]
    assert [r["trade_off"] for r in sel["scores"]] == sel["candidates"]
    assert sel["chosen"] in sel["candidates"] and s.fit_info()["trade_off"] == sel["chosen"]
    assert any("without target labels" in n for n in ctx.notes)


def test_domain_strategies_refuse_bad_options():
    with pytest.raises(UserInputError, match="trade_off"):
        get_strategy("dann", {"trade_off": -1})
    with pytest.raises(UserInputError, match="threshold"):
        get_strategy("self-training", {"threshold": 1.5})
    with pytest.raises(UserInputError, match="selection"):
        get_strategy("mmd", {"selection": "oracle"})


def test_prototype_is_the_nearest_class_mean():
    src, test, make_ctx = _shifted_problem()
    p = get_strategy("prototype")
    ctx = make_ctx()
    p.fit(src, ctx)
    assert _acc(p, src, ctx) > 0.9
    proba = p.predict_proba(src, ctx)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)


# ----- zero-shot --------------------------------------------------------------------------------------
def test_label_descriptions_parse_every_accepted_form():
    assert parse_label_descriptions("spam: unsolicited advertising, offers, ham: normal e-mail") == {
        "spam": ["unsolicited advertising, offers"], "ham": ["normal e-mail"]}
    assert parse_label_descriptions("spam,ham") == {"spam": ["spam"], "ham": ["ham"]}
    assert parse_label_descriptions('{"spam": ["ads", "a scam"], "ham": "mail"}') == {
        "spam": ["ads", "a scam"], "ham": ["mail"]}
    for bad, msg in [("spam: ads", "at least two"), ("spam: ads,: x", "empty label"),
                     ("spam: ads,ham:", "empty description"), ("{bad json", "does not parse"),
                     ("spam: a,spam: b", "twice")]:
        with pytest.raises(UserInputError, match=msg):
            parse_label_descriptions(bad)


# ----- contrastive pairs -----------------------------------------------------------------------------
def test_pair_sampler_is_lazy_deterministic_and_balanced():
    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    s = PairSampler(y, seed=3)
    pairs = [s(i) for i in range(200)]
    assert pairs == [PairSampler(y, seed=3)(i) for i in range(200)]
    for a, b, t in pairs:
        assert (y[a] == y[b]) == (t == 1.0)
    # pair 10**12 costs what pair 0 costs: nothing is materialised
    a, b, t = s(10 ** 12)
    assert 0 <= a < len(y) and 0 <= b < len(y)


def test_contrastive_counts_in_batch_pairs():
    c = get_strategy("contrastive", {"batch_size": 4, "num_iterations": 2})
    assert c.num_pairs(10) == 2 * (2 * 6 + 1)  # batches of 4, 4, 2 items: 6 + 6 + 1 pairs, 2 passes
    assert get_strategy("contrastive", {"pairs": "sampled", "num_iterations": 2}).num_pairs(10) == 40
    with pytest.raises(UserInputError, match="pairs"):
        get_strategy("contrastive", {"pairs": "all"})


# ----- pipeline and CLI ------------------------------------------------------------------------------
def _write(path, texts, labels=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"] + (["label"] if labels else []))
        for i, t in enumerate(texts):
            w.writerow([t] + ([labels[i]] if labels else []))
    return path


@pytest.fixture()
def domain_files(tmp_path):
    texts, labels = toy_texts(12, seed=0)
    t_texts, t_labels = toy_texts(10, seed=1)
    t_texts = [t.upper() + " !!" for t in t_texts]  # a shifted domain
    return (_write(tmp_path / "src.csv", texts, labels), _write(tmp_path / "tgt.csv", t_texts),
            _write(tmp_path / "tgt_test.csv", t_texts, t_labels))


def test_cli_domain_adaptation_reports_source_only_and_distance(tiny_text_dir, domain_files, tmp_path, capsys):
    src, tgt, tgt_test = domain_files
    out = tmp_path / "run"
    rc = main(["fit", "--data", str(src), "--test", str(tgt_test), "--target-unlabelled", str(tgt),
               "--model", str(tiny_text_dir), "--strategy", "coral", "--param", "steps=50", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    d = m["domain"]
    assert d["adaptation_verdict"] in ("helped", "no-difference", "hurt")
    assert {"accuracy", "per_class"} <= set(d["source_only"])
    assert [r["features"].split()[0] for r in d["shift"]] == ["backbone", "source-only", "adapted"]
    assert d["selection"]["criterion"] in ("dev", "snd")
    assert m["n_target_unlabelled"] == 20
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["n_target"] == 20 and card["data"]["target_hash"]
    html = (out / "report.html").read_text()
    assert "Domain shift and adaptation" in html and "source-only" in html
    printed = capsys.readouterr().out
    assert "source-only (no adaptation)" in printed and "domain distance" in printed
    # the run reloads and predicts like it did
    import transferkit as tk

    again = tk.load(out)
    assert again.predict(["HELLO THERE !!"])[0] in ("ham", "spam")


def test_any_strategy_reports_the_distance_to_a_target(tiny_text_dir, domain_files, tmp_path):
    src, tgt, _ = domain_files
    import transferkit as tk

    model = tk.fit(data=str(src), model=str(tiny_text_dir), target_unlabelled=str(tgt), control=False, log=None)
    assert [r["features"].split()[0] for r in model.metrics["domain"]["shift"]] == ["backbone"]
    assert "source_only" not in model.metrics["domain"]


def test_domain_adaptation_user_errors(tiny_text_dir, domain_files, tmp_path, capsys):
    src, tgt, _ = domain_files
    assert main(["fit", "--data", str(src), "--model", str(tiny_text_dir), "--strategy", "dann"]) == 2
    assert "--target-unlabelled" in capsys.readouterr().err
    assert main(["fit", "--data", str(src), "--model", str(tiny_text_dir), "--strategy", "dann",
                 "--target-unlabelled", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_cli_zero_shot_on_a_test_set_alone(tiny_text_dir, domain_files, tmp_path, capsys):
    _, _, tgt_test = domain_files
    out = tmp_path / "zs"
    rc = main(["fit", "--test", str(tgt_test), "--model", str(tiny_text_dir), "--strategy", "zero-shot",
               "--labels", "spam: unsolicited advertising,ham: normal personal or work e-mail", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_train"] == 0 and m["n_test"] == 20
    assert m["strategy"]["fit"]["labelled_training_items_used"] == 0
    assert list(m["controls"]) == ["random-init"]  # no labels to train a classical baseline on
    # a misspelt label is caught before anything is embedded
    rc = main(["fit", "--test", str(tgt_test), "--model", str(tiny_text_dir), "--strategy", "zero-shot",
               "--labels", "spma: ads,ham: mail"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'spam' instead of 'spma'" in err and "no item has: spma" in err


def test_on_backbone_tunes_the_backbone_and_reloads(tiny_text_dir, domain_files, tmp_path):
    """--on backbone: the alignment trains the backbone's last groups too; the run stores them and
    reloads to the same predictions; the source-only comparison uses its own copy of the backbone."""
    src, tgt, tgt_test = domain_files
    import transferkit as tk

    out = tmp_path / "run"
    model = tk.fit(data=str(src), test=str(tgt_test), target_unlabelled=str(tgt), model=str(tiny_text_dir),
                   strategy="mmd", strategy_params={"on": "backbone", "trade_off": [0.0, 1.0], "steps": 20,
                                                    "unfreeze": 1},
                   out=str(out), control=False, log=None)
    info = model.metrics["strategy"]["fit"]
    assert info["on"] == "backbone" and len(info["trained_groups"]) == 1
    assert info["selection"]["criterion"] == "dev" and len(info["selection"]["scores"]) == 2
    fresh = tk.get_backbone(str(tiny_text_dir))
    assert model.backbone.cache_key() != fresh.cache_key()  # tuned features are cached apart
    texts = ["HELLO !!", "cheap pills offer"]
    again = tk.load(out)
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    assert [r["features"].split()[0] for r in model.metrics["domain"]["shift"]] == ["backbone", "source-only",
                                                                                    "adapted"]
    with pytest.raises(UserInputError, match="cached features only"):
        get_strategy("self-training", {"on": "backbone"})
