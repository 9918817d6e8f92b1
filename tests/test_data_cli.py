"""The data fixes through the command line, on a tiny real model: --text-column a,b in every
command; a lone surrogate stops fit/predict with a data error, never a traceback (#26-2, #26-11)."""
from __future__ import annotations

import json

import pytest

from transferkit.cli import main

from conftest import toy_texts, write_toy_mail


@pytest.fixture()
def mail(tmp_path):
    return write_toy_mail(tmp_path / "mail.csv", 12)


def test_text_column_list_in_fit_validate_predict_and_evaluate(tiny_text_dir, mail, tmp_path, capsys):
    cols = ["--text-column", "subject,body"]
    assert main(["validate", "--data", str(mail), *cols]) == 0
    out = tmp_path / "run"
    assert main(["fit", "--data", str(mail), *cols, "--model", str(tiny_text_dir), "--out", str(out),
                 "--no-control"]) == 0
    new = tmp_path / "new.csv"
    new.write_text("title,text,body\nhello,x,free cash prize\nhi,y,agenda for the review\n")
    preds = tmp_path / "p.json"
    assert main(["predict", str(out), str(new), "--text-column", "title,body", "--out", str(preds)]) == 0
    assert len(json.loads(preds.read_text())) == 2
    assert main(["evaluate", str(out), "--data", str(mail), *cols]) == 0
    capsys.readouterr()
    assert main(["predict", str(out), str(new), "--text-column", "title,bdy"]) == 2
    assert "'bdy'" in capsys.readouterr().err  # a wrong name among several is still named


def test_lone_surrogate_stops_fit_and_predict_cleanly_and_skip_bad_leaves_it_out(tiny_text_dir, tmp_path,
                                                                                  capsys):
    texts, labels = toy_texts(10)
    rows = [{"text": t, "label": y} for t, y in zip(texts, labels)]
    rows[3]["text"] = "free cash \ud800 now"
    data = tmp_path / "mail.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    fit = ["fit", "--data", str(data), "--model", str(tiny_text_dir), "--out", str(out), "--no-control"]
    assert main(fit) == 2
    err = capsys.readouterr().err
    assert "mail.jsonl:4" in err and "bad-text" in err and "pass --skip-bad" in err
    assert main([*fit, "--skip-bad"]) == 0
    skipped = json.loads((out / "validation.json").read_text())["skipped"]
    assert [s["origin"] for s in skipped] == ["mail.jsonl:4"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"text": "agenda \udc80"}) + "\n" + json.dumps({"text": "cash prize"}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(out), str(new)]) == 2
    assert "new.jsonl:1" in capsys.readouterr().err
    preds = tmp_path / "p.json"
    assert main(["predict", str(out), str(new), "--skip-bad", "--out", str(preds)]) == 0
    assert [r["origin"] for r in json.loads(preds.read_text())] == ["new.jsonl:2"]
