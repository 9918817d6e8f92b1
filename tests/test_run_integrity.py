"""A run directory is data: it never runs code, its files are checked against its card, it is
written by one process at a time and never left half-written, and its config re-runs it exactly."""
from __future__ import annotations

import csv
import errno
import io
import json
import shutil

import numpy as np
import pytest
import torch

import transferkit as tk
from transferkit.cli import main
from transferkit.errors import UserInputError
from transferkit.predict import write_predictions
from transferkit.runs import RunDir
from transferkit.runs import rundir as rundir_module

from conftest import write_toy_mail


@pytest.fixture()
def toy_files(tmp_path):
    """20 training and 10 test e-mails, both classes in each (rows 0-14 are ham, 15-29 spam)."""
    all_rows = write_toy_mail(tmp_path / "all.csv")
    lines = all_rows.read_text().splitlines(keepends=True)
    head, rows = lines[0], lines[1:]
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text(head + "".join(rows[:10] + rows[15:25]))
    test.write_text(head + "".join(rows[10:15] + rows[25:]))
    return train, test


@pytest.fixture()
def run(tiny_text_dir, toy_files, tmp_path):
    """A finished linear-probe run (no controls: fast)."""
    train, test = toy_files
    out = tmp_path / "run"
    tk.fit(data=str(train), test=str(test), text_columns="subject,body", model=str(tiny_text_dir), out=str(out),
           control=False, log=None)
    return out


# ----- config.json re-runs exactly -----------------------------------------------------------------
def test_every_fit_flag_survives_config_json_and_reruns_identically(tiny_text_dir, toy_files, tmp_path, capsys):
    train, test = toy_files
    out = tmp_path / "a"
    flags = ["--data", str(train), "--test", str(test), "--text-column", "subject,body", "--label-column", "label",
             "--modality", "text", "--model", str(tiny_text_dir), "--strategy", "linear-probe", "--param", "cv=3",
             "--seed", "3", "--out", str(out), "--skip-bad", "--batch-size", "8", "--no-cache", "--no-control",
             "--max-length", "32", "--pooling", "mean", "--layer", "1", "--no-resume", "--keep-checkpoints", "2"]
    assert main(["fit", *flags]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    # the --test path is recorded (it was silently dropped, and a re-run then split the training file)
    assert cfg["test"] == str(test) and cfg["data"] == str(train)
    assert cfg["text_columns"] == ["subject", "body"] and cfg["label_column"] == "label"
    assert cfg["modality"] == "text" and cfg["model"] == str(tiny_text_dir) and cfg["strategy"] == "linear-probe"
    assert cfg["strategy_params"]["cv"] == 3 and cfg["seed"] == 3 and cfg["skip_bad"] is True
    assert cfg["batch_size"] == 8 and cfg["cache"] is False and cfg["control"] is False and cfg["resume"] is False
    assert cfg["keep_checkpoints"] == 2
    assert cfg["backbone_options"] == {"max_length": 32, "pooling": "mean", "layer": 1}
    assert main(["fit", "--config", str(out / "config.json"), "--out", str(tmp_path / "b")]) == 0
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["n_test"] == b["n_test"] == 10  # the given test file, not a split of the training file
    assert a["test"] == b["test"] and a["strategy"]["params"] == b["strategy"]["params"]
    again = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in cfg.items() if k != "out"}


def test_a_test_path_given_to_fit_is_a_config_field(tiny_text_dir, toy_files, tmp_path):
    train, test = toy_files
    model = tk.fit(data=str(train), test=test, text_columns="subject,body", model=str(tiny_text_dir),
                   out=str(tmp_path / "r"), control=False, log=None)
    assert model.metrics["n_test"] == 10
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["test"] == str(test)


def test_rerunning_a_copied_config_never_overwrites_the_original_run(run, tmp_path, capsys):
    card = (run / "model_card.json").read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "config.json", copy / "config.json")
    assert main(["fit", "--config", str(copy / "config.json")]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--out" in err
    assert (run / "model_card.json").read_bytes() == card


def test_fit_config_refuses_another_commands_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"command": "distill", "config": {"data": "x.csv"}}))
    with pytest.raises(UserInputError, match="transferkit distill"):
        tk.FitConfig.load(tmp_path / "config.json")


# ----- one writer at a time; never half-written ------------------------------------------------------
def test_a_second_writer_of_one_run_is_refused(tiny_text_dir, toy_files, tmp_path):
    train, test = toy_files
    out = tmp_path / "busy"
    with RunDir(out).lock():  # another fit holding the run
        with pytest.raises(UserInputError, match="another transferkit process is writing"):
            tk.fit(data=str(train), test=str(test), text_columns="subject,body", model=str(tiny_text_dir),
                   out=str(out), control=False, log=None)
    assert not (out / "model_card.json").exists()


def test_a_fit_stopped_by_bad_data_leaves_no_directory(tiny_text_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("subject,body,label\nhi,free cash,spam\n")  # one item, one class
    out = tmp_path / "never"
    with pytest.raises(UserInputError):
        tk.fit(data=str(bad), text_columns="subject,body", model=str(tiny_text_dir), out=str(out), log=None)
    assert not out.exists()  # the lock it took is gone with the directory it made


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "not writable")])
def test_a_failed_write_leaves_no_run_that_predict_would_take(run, tiny_text_dir, toy_files, monkeypatch, err, words):
    train, test = toy_files
    real = rundir_module.atomic_write_bytes

    def failing(path, data):
        if path.name == "report.html":
            raise OSError(err, "simulated")
        return real(path, data)

    monkeypatch.setattr(rundir_module, "atomic_write_bytes", failing)
    with pytest.raises(UserInputError, match=words):  # rewriting the finished run fails half-way
        tk.fit(data=str(train), test=str(test), text_columns="subject,body", model=str(tiny_text_dir), out=str(run),
               control=False, log=None)
    monkeypatch.undo()
    assert not (run / "model_card.json").exists()
    with pytest.raises(UserInputError, match="not a transferkit run.*\n.*did not finish"):
        tk.load(run)


# ----- the run's own files are checked ------------------------------------------------------------------
def test_weights_hash_is_reproducible_and_the_file_carries_its_classes(run, tiny_text_dir, toy_files, tmp_path):
    train, test = toy_files
    tk.fit(data=str(train), test=str(test), text_columns="subject,body", model=str(tiny_text_dir),
           out=str(tmp_path / "again"), control=False, log=None)
    a = json.loads((run / "model_card.json").read_text())["weights"]
    b = json.loads((tmp_path / "again" / "model_card.json").read_text())["weights"]
    assert a["sha256"] == b["sha256"]
    blob = (run / "strategy.safetensors").read_bytes()
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert list(header["__metadata__"]) == ["transferkit"]  # one key: no key order to vary
    assert json.loads(header["__metadata__"]["transferkit"])["classes"] == ["ham", "spam"]


@pytest.mark.parametrize("which,file", [("transfer", "strategy.safetensors"), ("delivered", "delivered.safetensors")])
def test_swapped_head_rows_are_refused(run, which, file):
    """Each of a run's weight files is checked when the model it holds is loaded (the delivered
    model's exists where selection chose another model than the transfer model)."""
    from safetensors.torch import load_file, save_file

    path = run / file
    if not path.exists():
        pytest.skip("selection delivered the transfer model: there is no second weights file")
    tensors = load_file(path)
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = tensors[name].flip(0).contiguous()
    save_file(tensors, path)
    with pytest.raises(UserInputError, match="sha256 mismatch"):
        tk.load(run, which=which)


def test_card_classes_that_differ_from_the_weights_are_refused(run):
    card = json.loads((run / "model_card.json").read_text())
    card["classes"] = card["classes"][::-1]
    card["label_map"] = {str(i): c for i, c in enumerate(card["classes"])}
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(UserInputError, match="classes"):
        tk.load(run)


def test_a_card_without_weight_hashes_is_refused(run):
    card = json.loads((run / "model_card.json").read_text())
    del card["backbone"]["identity"]["weights_sha256"]
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(UserInputError, match="no weight hash"):
        tk.load(run)
    assert tk.load(run, check_weights=False).classes == ["ham", "spam"]


# ----- a received run cannot run code ----------------------------------------------------------------
def _hostile_model(where, tiny_text_dir, marker):
    """A model folder whose config asks transformers to import its own .py file, which would
    write ``marker`` if it ever ran."""
    d = where / "evil-model"
    shutil.copytree(tiny_text_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    cfg.pop("model_type")  # no built-in class to fall back on: only its own code could load it
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                               "from transformers import BertConfig, BertModel\n"
                               "class EvilConfig(BertConfig):\n    pass\n"
                               "class EvilModel(BertModel):\n    config_class = EvilConfig\n")
    return d


def _point_card_at(run, name, *, options=None, keep_hash=True):
    card = json.loads((run / "model_card.json").read_text())
    card["backbone"]["name"] = str(name)
    card["backbone"]["options"] = {"trust_remote_code": True, "allow_pickle": True, **(options or {})}
    if not keep_hash:
        del card["backbone"]["identity"]["weights_sha256"]
    (run / "model_card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("keep_hash", [True, False])
def test_a_received_run_never_runs_its_code(run, tiny_text_dir, tmp_path, capsys, keep_hash):
    marker = tmp_path / "pwned"
    evil = _hostile_model(run, tiny_text_dir, marker)  # inside the run: followed, but no code may run
    _point_card_at(run, evil, keep_hash=keep_hash)
    for attempt in (lambda: tk.load(run).predict(["free cash"]),
                    lambda: main(["predict", str(run), "--out", str(tmp_path / "p.csv"), str(tmp_path / "x.csv")])):
        (tmp_path / "x.csv").write_text("subject,body\nhi,free cash\n")
        try:
            code = attempt()
        except UserInputError as e:
            assert "trust" in str(e) or "weight hash" in str(e)
        else:
            assert code == 2, "a hostile run must be refused"
        assert not marker.exists(), "the run's own code ran"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_trust_remote_code_comes_from_the_user_and_names_the_code(run, tiny_text_dir, tmp_path):
    marker = tmp_path / "ran"
    evil = _hostile_model(run, tiny_text_dir, marker)
    _point_card_at(run, evil)
    with pytest.raises(UserInputError, match=r"own Python code.*evil\.py"):
        tk.load(run).predict(["free cash"])
    assert not marker.exists()


def test_a_card_backbone_outside_the_run_and_caches_needs_the_users_own_flag(run, tiny_text_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_text_dir, elsewhere)  # same weights, a folder no fit on this machine used
    _point_card_at(run, elsewhere, options={})
    with pytest.raises(UserInputError, match="outside the run directory"):
        tk.load(run)
    model = tk.load(run, backbone=str(elsewhere))  # named by the user: followed
    assert model.predict(["free cash prize"])[0] in ("ham", "spam")
    assert model.backbone.trust_remote_code is False and model.backbone.allow_pickle is False


# ----- what leaves the run --------------------------------------------------------------------------
def test_predictions_csv_escapes_formulas(tmp_path):
    rows = [{"origin": "=HYPERLINK(\"http://x\",\"y\")", "prediction": "+cmd|' /C calc'!A0", "confidence": 0.9,
             "p(@SUM(1))": 0.9, "p(-2)": 0.1},
            {"origin": "plain.txt", "prediction": "\tTAB", "confidence": 0.5, "p(@SUM(1))": 0.5, "p(-2)": -0.5}]
    write_predictions(rows, tmp_path / "p.csv")
    got = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert got[0] == ["origin", "prediction", "confidence", "p(@SUM(1))", "p(-2)"]  # start with p(
    assert got[1][:2] == ["'=HYPERLINK(\"http://x\",\"y\")", "'+cmd|' /C calc'!A0"]
    assert got[2][1] == "'\tTAB" and got[2][4] == "-0.5"  # numbers stay numbers
    write_predictions(rows, tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())[0]["origin"].startswith("=")  # JSON as it is


def test_reference_and_weights_survive_a_round_trip(run):
    rd = RunDir(run)
    card = rd.card()
    ref = rd.reference(card)
    assert ref is not None and ref.dtype == np.float32 and ref.shape[0] == card["drift_reference"]["n"]
    tensors = rd.read_weights(card)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
