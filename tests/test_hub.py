"""The Hub side of a run, offline: README.md in the Hub's model-card format, `transferkit push`
refusing clearly without network or token, and tk.load("hf://...") served by huggingface_hub
from a pre-populated cache with HF_HUB_OFFLINE=1 (nothing is downloaded)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import yaml
from huggingface_hub import ModelCard, constants

import transferkit as tk
from transferkit.cli import main
from transferkit.data import from_arrays
from transferkit.errors import UserInputError
from transferkit.runs.hub import NOT_UPLOADED, parse_uri, push
from transferkit.runs.hub_card import base_model

from conftest import toy_texts

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_text_dir):
    texts, labels = toy_texts(15)
    out = tmp_path_factory.mktemp("hub") / "spam-run"
    tk.fit(train=from_arrays(texts, labels), model=str(tiny_text_dir), strategy_params={"cv": 2}, out=str(out),
           log=None, progress=False)
    return out


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_each_run_writes_a_hub_model_card_that_parses_and_states_the_verdict(run):
    metrics, card = tk.RunDir(run).metrics(), tk.RunDir(run).card()
    text = (run / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(text)
    assert meta["library_name"] == "transferkit" and meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == [f"sha256:{card['data']['train_hash']}"]
    assert f"verdict-{metrics['verdict']}" in meta["tags"] and "linear-probe" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == f"sha256:{card['data']['test_hash']}"
    accuracy = next(m for m in result["metrics"] if m["type"] == "accuracy")
    assert accuracy["value"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    lo, hi = metrics["test"]["accuracy_ci"]
    assert accuracy["args"]["ci_low"] == pytest.approx(lo, abs=1e-4) and accuracy["args"]["ci_high"] == pytest.approx(
        hi, abs=1e-4)
    # the Hub client's own reader agrees
    hub = ModelCard(text)
    assert hub.data.library_name == "transferkit"
    assert hub.data.eval_results[0].metric_type == "accuracy"
    body = text.split("---\n", 2)[2]
    assert f"**Verdict: {metrics['verdict'].upper()}.**" in body
    for control in metrics["controls"]:
        assert f"| control: `{control}` |" in body


def test_base_model_is_the_hub_id_where_there_is_one():
    assert base_model({"backbone": {"name": "minilm-l6"}}) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model({"backbone": {"name": "google/vit-base-patch16-224"}}) == "google/vit-base-patch16-224"
    assert base_model({"backbone": {"name": "efficientnet-lite0"}}) is None  # no Hub repository
    assert base_model({"backbone": {"name": "/models/my-bert"}}) is None


def _serve_from_cache(cache, run, repo_id: str) -> None:
    """``run`` laid out as the Hub's cache holds a downloaded repository: blobs by hash,
    a snapshot folder of links to them, and refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for f in run.iterdir():
        if f.is_file() and f.name != ".lock":
            blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            blob.write_bytes(f.read_bytes())
            os.symlink(os.path.relpath(blob, snap), snap / f.name)


def test_load_hf_uri_from_the_hub_cache_offline(run, tmp_path, monkeypatch):
    texts, _ = toy_texts(3)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _serve_from_cache(tmp_path / "hub", run, "someone/spam-run")
    local = tk.load(run)
    for uri in ("hf://someone/spam-run", f"hf://someone/spam-run@{COMMIT}"):
        model = tk.load(uri)
        assert model.run_dir.name == COMMIT
        assert model.predict(texts) == local.predict(texts)
    with pytest.raises(UserInputError, match="not in the Hub cache.*HF_HUB_OFFLINE=1"):
        tk.load("hf://someone/absent")


def test_a_bad_hub_address_is_refused():
    assert parse_uri("hf://a/b@v1") == ("a/b", "v1")
    for bad in ("hf://just-a-name", "hf://a/b/c", "hf://../x"):
        with pytest.raises(UserInputError, match="not a Hub model address"):
            tk.load(bad)


def test_push_refuses_offline_and_without_a_token(run, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError, match="HF_HUB_OFFLINE"):
        push(run, "someone/spam-run")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UserInputError, match="no Hugging Face token") as e:
        push(run, "someone/spam-run")
    assert "HF_TOKEN" in e.value.hint
    assert main(["push", str(run), "--repo-id", "someone/spam-run"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="not a transferkit run"):
        push(run.parent, "someone/spam-run")
    multi = run.parent / "multi"
    multi.mkdir()
    (multi / "model_card.json").write_text(json.dumps({"format": "transferkit-run/2", "multi_task": {
        "topic": {"dir": "tasks/topic"}, "stars": {"dir": "tasks/stars"}}}))
    with pytest.raises(UserInputError, match="multi-task run") as e:
        push(multi, "someone/spam-run")
    assert "tasks/stars" in e.value.hint
    assert ".lock" in NOT_UPLOADED and "checkpoints/*" in NOT_UPLOADED
