"""The one training loop: determinism, accumulation, clipping, the non-finite guard, schedules,
checkpoints (atomicity, keep-last-K, no pickle) and in-process resume.  Tiny MLPs, milliseconds."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.errors import UnsafeFileError, UserInputError
from transferkit.training import (
    Callback,
    EarlyStopping,
    NonFiniteLossError,
    epoch_batches,
    load_latest,
    plan_steps,
    schedule_fn,
    set_train_mode,
    train,
)
from transferkit.training import checkpoint as ckpt

N = 40
X = torch.randn(N, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] + X[:, 1] > 0).long()


def make(seed: int = 1, *, dropout: float = 0.2, bn: bool = True):
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(16)] if bn else []
    model = nn.Sequential(nn.Linear(6, 16), *norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def step_fn(model):
    return lambda idx: nn.functional.cross_entropy(model(X[idx]), Y[idx])


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run(seed=0, ckpt_dir=None, **kw):
    model, opt = make()
    kw.setdefault("epochs", 3)
    kw.setdefault("batch_size", 8)
    state = train(model, step_fn(model), N, opt, seed=seed, checkpoint_dir=ckpt_dir, **kw)
    return model, state


def test_same_seed_gives_bitwise_equal_weights_and_other_seed_differs():
    a, sa = run(seed=3)
    b, _ = run(seed=3)
    c, _ = run(seed=4)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))
    assert sa.step == sa.total_steps == 15 and len(sa.history) == 3


def test_caller_rng_is_left_alone():
    model, opt = make()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, step_fn(model), N, opt, epochs=2, batch_size=8)
    assert torch.equal(torch.rand(3), expected)


def test_data_order_is_seeded_per_epoch_and_never_leaves_a_lone_item():
    b0, b1 = epoch_batches(17, 16, seed=0, epoch=0), epoch_batches(17, 16, seed=0, epoch=1)
    assert [len(b) for b in b0] == [9, 8]  # near-equal, not 16 + 1 (a lone item breaks BatchNorm)
    assert sorted(np.concatenate(b0)) == list(range(17))
    assert not np.array_equal(np.concatenate(b0), np.concatenate(b1))
    assert np.array_equal(np.concatenate(b0), np.concatenate(epoch_batches(17, 16, seed=0, epoch=0)))
    assert plan_steps(17, batch_size=4, grad_accum=2, epochs=3) == (3, 9)
    assert plan_steps(17, batch_size=4, grad_accum=2, epochs=3, max_steps=5) == (3, 5)


def test_gradient_accumulation_matches_one_big_batch():
    def go(batch_size, grad_accum):
        model, opt = make(dropout=0.0, bn=False)
        train(model, step_fn(model), 32, opt, epochs=2, batch_size=batch_size, grad_accum=grad_accum, seed=0)
        return weights(model)

    big, accum = go(16, 1), go(8, 2)
    for k in big:
        torch.testing.assert_close(accum[k], big[k], rtol=1e-5, atol=1e-6)
    assert not same(go(8, 1), big)  # and it is not the same as smaller steps


def test_clipping_bounds_the_update():
    model, _ = make(dropout=0.0, bn=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    train(model, step_fn(model), N, opt, epochs=1, max_steps=1, batch_size=8, clip=0.01)
    delta = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before
    assert delta.norm().item() == pytest.approx(0.01, rel=1e-4)


def poisoned(model, bad_calls, *, grad=False):
    calls = {"n": 0}

    def step(idx):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
        if calls["n"] in bad_calls:
            if grad:  # a finite loss (0) whose gradient is NaN: sqrt'(0) * 0
                w = model[0].weight
                return loss * 0 + torch.sqrt(((w - w.detach()) ** 2).sum())
            return loss * float("nan")
        return loss
    return step


@pytest.mark.parametrize("grad", [False, True], ids=["nan-loss", "nan-gradient"])
def test_nonfinite_stops_before_any_bad_update_and_keeps_last_good_checkpoint(tmp_path, grad):
    model, opt = make()
    with pytest.raises(NonFiniteLossError, match="not finite") as err:
        train(model, poisoned(model, {7}, grad=grad), N, opt, epochs=3, batch_size=8,
              checkpoint_dir=tmp_path, checkpoint_every=1)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    latest = load_latest(tmp_path)
    assert latest.meta["step"] == 6 and str(latest.path) in str(err.value)
    assert all(torch.isfinite(v).all() for v in latest.model.values() if v.is_floating_point())
    for k, v in latest.model.items():  # the weights in memory are those of the last good step
        assert torch.equal(model.state_dict()[k], v)


def test_nonfinite_skip_mode_counts_and_finishes():
    model, opt = make()
    state = train(model, poisoned(model, {3, 9}), N, opt, epochs=3, batch_size=8, nonfinite="skip")
    assert state.skipped == 2 and state.step == 15
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model, opt = make()
    state = train(model, poisoned(model, {4}, grad=True), N, opt, epochs=1, batch_size=8, nonfinite="skip")
    assert state.skipped == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_schedule_shapes():
    T = 100
    cos = [schedule_fn("cosine", T, warmup=0.1)(t) for t in range(T)]
    assert cos[0] < cos[5] < cos[9] <= 1.0 and max(cos) == pytest.approx(1.0, abs=0.02)
    assert all(a >= b for a, b in zip(cos[10:], cos[11:])) and cos[-1] < 0.01
    one = [schedule_fn("onecycle", T, warmup=0.3)(t) for t in range(T)]
    peak = int(np.argmax(one))
    assert one[0] == pytest.approx(1 / 25) and 25 <= peak <= 31 and one[peak] == pytest.approx(1.0)
    assert one[-1] == pytest.approx(1 / 25e4, rel=1e-3)
    stlr = [schedule_fn("slanted", T, warmup=0.1)(t) for t in range(T)]
    assert stlr[0] == pytest.approx(1 / 32) and stlr[10] == pytest.approx(1.0) and stlr[-1] < 0.05
    assert int(np.argmax(stlr)) == 10  # short rise, long decay (ULMFiT)
    const = [schedule_fn("constant", T, warmup=0)(t) for t in range(T)]
    assert const == [1.0] * T
    with pytest.raises(UserInputError, match="unknown schedule"):
        schedule_fn("linear-ish", T)


def test_scheduler_is_stepped_once_per_optimizer_step():
    model, opt = make()
    from transferkit.training import make_scheduler

    sched = make_scheduler(opt, "cosine", 15, warmup=0.2)
    seen = []

    class Watch(Callback):
        def on_step_end(self, state, logs):
            seen.append(logs["lr"])

    train(model, step_fn(model), N, opt, scheduler=sched, epochs=3, batch_size=8, callbacks=[Watch()])
    f = schedule_fn("cosine", 15, warmup=0.2)
    assert seen == pytest.approx([1e-2 * f(t) for t in range(1, 16)])


def test_keep_last_k_and_half_written_checkpoints_are_ignored(tmp_path):
    run(ckpt_dir=tmp_path, checkpoint_every=1, keep_last=3)
    done = ckpt.complete_checkpoints(tmp_path)
    assert [p.name for p in done] == ["ckpt-00000013", "ckpt-00000014", "ckpt-00000015"]
    # a write cut short: data files there, manifest not yet renamed into place, a temp file left
    half = tmp_path / "ckpt-00000016"
    half.mkdir()
    (half / ckpt.MODEL_FILE).write_bytes((done[-1] / ckpt.MODEL_FILE).read_bytes())
    (half / ".manifest.json.x1y2.tmp").write_text("{")
    (tmp_path / "ckpt-00000017").mkdir()
    assert load_latest(tmp_path).meta["step"] == 15
    # a complete-looking checkpoint whose file differs from its manifest is skipped, with a warning
    (done[-1] / ckpt.STATE_FILE).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert load_latest(tmp_path).meta["step"] == 14


def test_pickled_object_in_a_checkpoint_is_refused_naming_the_file(tmp_path):
    run(ckpt_dir=tmp_path, epochs=1)
    path = ckpt.complete_checkpoints(tmp_path)[-1]
    import io

    buf = io.BytesIO()
    torch.save({"optimizer": {}, "payload": random.Random(0)}, buf)  # any class instance needs pickle
    blob = buf.getvalue()
    (path / ckpt.STATE_FILE).write_bytes(blob)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())  # a forger would fix the hash too
    manifest["files"][ckpt.STATE_FILE] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UnsafeFileError, match=str(path / ckpt.STATE_FILE).replace("\\", "\\\\")):
        load_latest(tmp_path)


def test_resume_after_interruption_is_bitwise_exact(tmp_path):
    full, _ = run(epochs=3, batch_size=8)

    class Crash(Exception):
        pass

    model, opt = make()
    calls = {"n": 0}

    def crashing(idx):
        calls["n"] += 1
        if calls["n"] == 8:  # mid-epoch 2, after the step-6 checkpoint (and the epoch-1 one)
            raise Crash
        return nn.functional.cross_entropy(model(X[idx]), Y[idx])

    with pytest.raises(Crash):
        train(model, crashing, N, opt, epochs=3, batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=3)
    resumed, state = run(ckpt_dir=tmp_path, checkpoint_every=3)
    assert state.resumed_from == 6
    assert same(weights(resumed), weights(full))
    # a finished run resumes as finished: nothing more is trained
    again, state = run(ckpt_dir=tmp_path, checkpoint_every=3)
    assert state.resumed_from == 15 and same(weights(again), weights(full))


def test_resume_refuses_checkpoints_of_another_configuration(tmp_path):
    run(ckpt_dir=tmp_path, epochs=1)
    with pytest.raises(UserInputError, match="another configuration"):
        run(ckpt_dir=tmp_path, epochs=2)
    _, state = run(ckpt_dir=tmp_path, epochs=2, resume=False)  # starting over is allowed
    assert state.resumed_from is None and state.step == 10


def test_frozen_batchnorm_stays_in_eval_mode():
    model, _ = make()
    set_train_mode(model)
    assert model[1].training
    for p in model[1].parameters():
        p.requires_grad_(False)
    set_train_mode(model)
    assert not model[1].training and model[0].training and model[3].training


def test_early_stopping_restores_the_best_epoch_and_survives_resume(tmp_path):
    table = [0.5, 0.4, 0.45, 0.47, 0.9, 0.9]  # best at epoch 1; patience 2 stops after epoch 3

    class FakeValidation(Callback):  # a validation loss that depends only on the epoch
        def on_epoch_end(self, state, logs):
            logs["val_loss"] = table[state.epoch]

    def fit(ckpt_dir=None, crash_at=None):
        model, opt = make()
        calls = {"n": 0}

        def step(idx):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt
            return nn.functional.cross_entropy(model(X[idx]), Y[idx])

        stopper = EarlyStopping(model, monitor="val_loss", patience=2)
        state = train(model, step, N, opt, epochs=6, batch_size=8, callbacks=[FakeValidation(), stopper],
                      checkpoint_dir=ckpt_dir)
        return model, state, stopper

    model, state, stopper = fit()
    assert state.should_stop and len(state.history) == 4 and stopper.best_epoch == 1
    assert [h["val_loss"] for h in state.history] == table[:4]
    plain, opt = make()
    train(plain, step_fn(plain), N, opt, epochs=2, batch_size=8)
    assert same(weights(model), weights(plain))  # the weights after epoch 1, the best one
    # killed in epoch 3 (after the epoch-2 checkpoint, which holds the best weights in the
    # callback's state), then resumed: the same best epoch and the same final weights
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, crash_at=13)
    resumed, state, stopper = fit(tmp_path)
    assert state.resumed_from == 10 and stopper.best_epoch == 1 and same(weights(resumed), weights(model))
