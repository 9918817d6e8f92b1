"""Clearing and pruning checkpoints never follows a symbolic link; a finished run drops its
checkpoints (prune_after_run); files written atomically get the usual umask mode."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

from transferkit._files import atomic_write_bytes
from transferkit.errors import UserInputError
from transferkit.training import checkpoint as ckpt
from transferkit.training import train

X = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] > 0).long()


def _fit(ckpt_dir, *, resume=True, epochs=2):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, lambda idx: nn.functional.cross_entropy(model(X[idx]), Y[idx]), len(X), opt, seed=0,
          epochs=epochs, batch_size=8, checkpoint_dir=ckpt_dir, checkpoint_every=1, resume=resume)
    return model


def _save(directory, step, keep_last=5):
    return ckpt.save_checkpoint(directory, step=step, model={"w": torch.ones(3)}, state={"n": step},
                                meta={"epoch": 0}, keep_last=keep_last)


def _victim(tmp_path):
    """A folder outside the run that looks like a checkpoint folder, holding a precious file."""
    outside = tmp_path / "outside"
    (outside / "ckpt-00000001").mkdir(parents=True)
    (outside / "ckpt-00000001" / "manifest.json").write_text("precious")
    (outside / "precious.txt").write_text("keep me")
    return outside


# ----- symbolic links ------------------------------------------------------------------------------
def test_no_resume_refuses_a_symlinked_checkpoint_folder_and_deletes_nothing(tmp_path):
    outside = _victim(tmp_path)
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "transfer").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserInputError, match="symbolic link") as e:
        _fit(run / "transfer", resume=False)
    assert "remove the link" in e.value.hint
    assert (outside / "ckpt-00000001" / "manifest.json").read_text() == "precious"
    assert (outside / "precious.txt").read_text() == "keep me"


def test_resuming_through_a_symlinked_folder_is_refused_before_training(tmp_path):
    outside = _victim(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "transfer").symlink_to(outside, target_is_directory=True)
    steps = []
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(idx):
        steps.append(1)
        return nn.functional.cross_entropy(model(X[idx]), Y[idx])

    with pytest.raises(UserInputError, match="symbolic link"):
        train(model, step, len(X), opt, seed=0, epochs=1, batch_size=8, checkpoint_dir=tmp_path / "run" / "transfer")
    assert steps == [] and sorted(p.name for p in outside.iterdir()) == ["ckpt-00000001", "precious.txt"]


def test_a_symlinked_checkpoints_parent_is_refused_too(tmp_path):
    outside = _victim(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserInputError, match="symbolic link"):
        ckpt.clear_checkpoints(tmp_path / "run" / "checkpoints" / "transfer")
    with pytest.raises(UserInputError, match="symbolic link"):
        ckpt.prune_after_run(tmp_path / "run" / "checkpoints")
    assert (outside / "ckpt-00000001" / "manifest.json").read_text() == "precious"


def test_a_symlinked_checkpoint_entry_is_unlinked_never_followed(tmp_path):
    outside = _victim(tmp_path)
    d = tmp_path / "run" / "checkpoints" / "transfer"
    _save(d, 2)
    (d / "ckpt-00000001").symlink_to(outside / "ckpt-00000001", target_is_directory=True)
    assert [p.name for p in ckpt.complete_checkpoints(d)] == ["ckpt-00000002"]  # never loaded through a link
    ckpt.clear_checkpoints(d)
    assert list(d.iterdir()) == []
    assert (outside / "ckpt-00000001" / "manifest.json").read_text() == "precious"


def test_pruning_unlinks_an_old_symlinked_entry_only(tmp_path):
    outside = _victim(tmp_path)
    d = tmp_path / "ckpts" / "m"
    d.mkdir(parents=True)
    (d / "ckpt-00000001").symlink_to(outside / "ckpt-00000001", target_is_directory=True)
    _save(d, 2, keep_last=1)
    assert not (d / "ckpt-00000001").is_symlink()
    assert (outside / "ckpt-00000001" / "manifest.json").read_text() == "precious"


def test_resume_false_still_clears_a_real_folder(tmp_path):
    d = tmp_path / "run" / "checkpoints" / "transfer"
    _fit(d)
    assert ckpt.complete_checkpoints(d)
    stale = d / "ckpt-99999999"
    stale.mkdir()  # an incomplete one from another run
    _fit(d, resume=False)
    assert not stale.exists() and ckpt.complete_checkpoints(d)


# ----- prune_after_run ----------------------------------------------------------------------------
def test_prune_after_run_removes_every_checkpoint_by_default(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    _fit(root / "transfer")
    _fit(root / "random-init")
    (root / "transfer" / "ckpt-00000099").mkdir()  # an interrupted write
    freed = ckpt.prune_after_run(root)
    assert freed > 0
    assert not root.exists()  # nothing left: the folder goes too
    assert ckpt.prune_after_run(root) == 0  # and a second call is harmless


def test_prune_after_run_can_keep_the_last(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    _fit(root / "transfer", epochs=3)
    assert len(ckpt.complete_checkpoints(root / "transfer")) == 2  # the loop keeps 2 while training
    ckpt.prune_after_run(root, keep_last=1)
    kept = ckpt.complete_checkpoints(root / "transfer")
    assert len(kept) == 1 and kept[0].name.endswith("0009")  # 3 epochs x 3 batches: the newest
    assert ckpt.load_checkpoint(kept[0]).meta["step"] == 9


def test_prune_after_run_leaves_unknown_files(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root / "transfer", 1)
    (root / "notes.txt").write_text("mine")
    ckpt.prune_after_run(root)
    assert (root / "notes.txt").read_text() == "mine" and not (root / "transfer").exists()


# ----- file modes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_umask_mode_not_0600(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        atomic_write_bytes(tmp_path / "a.json", b"{} ")  # replacing keeps the same rule
        d = _save(tmp_path / "ck", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert (tmp_path / "a.json").read_bytes() == b"{} "
    assert stat.S_IMODE((d / "manifest.json").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "card.json"
    atomic_write_bytes(target, b"old")

    def fail(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
