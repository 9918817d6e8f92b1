"""`transferkit fit --strategy finetune`: training flags, checkpoints in --out dropped once the run is written."""
from __future__ import annotations

import csv
import json

from transferkit.cli import main

from conftest import toy_texts


def test_cli_finetune_training_flags_and_a_rerun_into_the_same_out(tiny_text_dir, tmp_path, capsys):
    texts, labels = toy_texts(12)
    data = tmp_path / "toy.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    out = tmp_path / "run"
    args = ["fit", "--data", str(data), "--text-column", "text", "--model", str(tiny_text_dir), "--strategy",
            "finetune", "--epochs", "2", "--lr", "1e-3", "--batch-size", "8", "--checkpoint-every", "1",
            "--out", str(out)]

    def fit_info():
        return json.loads((out / "metrics.json").read_text())["strategy"]["fit"]

    assert main(args) == 0
    first = fit_info()
    assert first["resumed_from"] is None and first["steps"] > 0
    assert json.loads((out / "metrics.json").read_text())["strategy"]["params"]["batch_size"] == 8
    # a finished fit drops its checkpoints (they only serve to resume a killed one: test_resume.py)
    assert not any(p.is_file() for p in (out / "checkpoints").rglob("*"))
    assert main(args) == 0  # the same command again trains again, to the same result
    assert fit_info()["resumed_from"] is None and fit_info()["history"] == first["history"]
    assert main(args + ["--no-resume"]) == 0
    assert fit_info()["resumed_from"] is None
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--text-column", "text", "--model", str(tiny_text_dir),
                 "--epochs", "2", "--no-control"]) == 2  # linear-probe has no epochs
    assert "has no option 'epochs'" in capsys.readouterr().err
