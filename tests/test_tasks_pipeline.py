"""Regression and multi-label end to end: fit (CLI and Python) -> run directory -> predict,
evaluate, config re-run, report; commands that support only classification refuse clearly."""
from __future__ import annotations

import csv
import json
import random

import pytest

import transferkit as tk
from transferkit.cli import main
from transferkit.errors import UserInputError

from task_data import digit_values

TOPICS = {"sport": ["match", "goal", "team", "score"], "money": ["price", "cash", "bank", "loan"],
          "food": ["bread", "cheese", "soup", "salad"]}


def _topic_mail(path, n=60, seed=0):
    """JSONL texts mixing the words of one or two topics; labels = the topics as a JSON list."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    with open(path, "w") as f:
        for _ in range(n):
            chosen = sorted(rng.sample(names, rng.choice([1, 2])))
            words = [rng.choice(TOPICS[t]) for t in chosen for _ in range(4)]
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": chosen}) + "\n")
    return path


def _counted_mail(path, n=60, seed=0):
    """CSV texts whose target is how many times 'cash' occurs (0..6)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "target"])
        for _ in range(n):
            k = rng.randint(0, 6)
            words = ["cash"] * k + [rng.choice(["meeting", "agenda", "report", "notes"]) for _ in range(8 - k)]
            rng.shuffle(words)
            w.writerow([" ".join(words), k])
    return path


def test_multi_label_from_the_cli_predicts_label_sets_and_reruns_exactly(tiny_text_dir, tmp_path, capsys):
    data = _topic_mail(tmp_path / "topics.jsonl")
    out = tmp_path / "ml"
    assert main(["fit", "--data", str(data), "--model", str(tiny_text_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "micro-F1" in printed.out and "task-inferred" not in printed.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "multi-label" and m["verdict_metric"] == "micro_f1"
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "map"):
        assert key in m["test"] and f"{key}_ci" in m["test"]
    assert m["control"]["name"] in m["controls"] and m["verdict"] in ("helped", "no-difference", "hurt")
    assert json.loads((out / "config.json").read_text())["config"]["task"] == "multi-label"
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "multi-label" and card["classes"] == ["food", "money", "sport"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"text": "goal team cash bank"}) + "\n")
    assert main(["predict", str(out), str(new), "--out", str(tmp_path / "p.csv")]) == 0
    row = next(csv.DictReader(open(tmp_path / "p.csv")))
    assert set(row) == {"origin", "prediction", "p(food)", "p(money)", "p(sport)"}
    assert all(name in TOPICS for name in row["prediction"].split(";") if name)
    assert main(["evaluate", str(out), "--data", str(data), "--out", str(tmp_path / "e.json")]) == 0
    assert "micro_f1" in json.loads((tmp_path / "e.json").read_text())
    assert main(["fit", "--config", str(out / "config.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test"] == m["test"] and again["controls"] == m["controls"]


def test_regression_needs_its_task_then_reports_in_the_targets_units(tiny_text_dir, tmp_path, capsys):
    data = _counted_mail(tmp_path / "counts.csv")
    out = tmp_path / "reg"
    base = ["fit", "--data", str(data), "--label-column", "target", "--model", str(tiny_text_dir), "--out", str(out)]
    assert main(base) == 0  # 0..6: few whole numbers stay classes, as before
    assert json.loads((out / "metrics.json").read_text())["task"] == "classification"
    assert main([*base, "--task", "regression"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "regression" and m["verdict_metric"] == "rmse"
    assert {"rmse", "mae", "r2", "spearman", "predictions"} <= set(m["test"])
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "regression" and card["target"]["scale"] > 0
    assert "mean" in m["controls"] and "random-init" in m["controls"]
    assert len(m["test"]["predictions"]["y_pred"]) == m["n_test"]
    html = (out / "report.html").read_text()
    assert "RMSE" in html and "Traceback" not in html
    new = tmp_path / "new.csv"
    new.write_text("text\ncash cash cash meeting\n")
    assert main(["predict", str(out), str(new), "--out", str(tmp_path / "p.json")]) == 0
    pred = json.loads((tmp_path / "p.json").read_text())[0]["prediction"]
    assert isinstance(pred, float)
    capsys.readouterr()
    capsys.readouterr()
    assert main(["explain", str(out), "cash"]) == 0  # explains the predicted value (test_explain_tasks.py)
    captured = capsys.readouterr()
    assert captured.out.startswith("cash: value ") and "relative to" in captured.out and "Traceback" not in captured.err


def test_regression_on_real_digit_images_in_python(tiny_image_dir, tmp_path):
    train = digit_values(160, seed=0)
    model = tk.fit(train=train, model=str(tiny_image_dir), out=str(tmp_path / "digits"), log=None)
    m = model.metrics
    assert m["task"] == "regression" and m["n_test"] == 32
    assert set(m["controls"]) >= {"mean", "random-init"} and m["control"]["name"] in m["controls"]
    again = tk.load(tmp_path / "digits")
    values = again.predict(train.subset(range(4)))
    assert all(isinstance(v, float) for v in values)
    with pytest.raises(UserInputError, match="regression"):
        again.predict_proba(train.subset(range(2)))


def test_a_strategy_without_the_task_names_those_with_it_before_any_model_loads(tmp_path):
    data = _topic_mail(tmp_path / "topics.jsonl")
    with pytest.raises(UserInputError, match="linear-probe"):  # the model does not even exist
        tk.fit(data=str(data), model=str(tmp_path / "no-such-model"), strategy="prototype", log=None)


def test_the_reports_class_distribution_is_that_of_the_split_parts(tiny_text_dir, tmp_path):
    from conftest import write_toy_mail

    data = write_toy_mail(tmp_path / "mail.csv")  # 15 ham, 15 spam, no test file: an 80/20 split
    model = tk.fit(data=str(data), text_columns="subject,body", model=str(tiny_text_dir), out=str(tmp_path / "r"),
                   control=False, log=None)
    html = (tmp_path / "r" / "report.html").read_text()
    table = html[html.index('id="class-distribution"'):]
    table = table[:table.index("</table>")]
    assert model.metrics["n_train"] == 24 and ">12 (50.0%)<" in table and ">3 (50.0%)<" in table
    assert ">15 (50.0%)<" not in table  # not the whole file's counts
