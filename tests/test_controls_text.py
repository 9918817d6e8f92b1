"""The text control chooses its features on its training items: word 1-2-gram TF-IDF, or word
1-2-grams plus character 2-5-grams, whichever the task's cross-validation scores better.  On single
words (VADER lexicon, real human ratings) only the characters generalise; where word order is all
that matters the character n-grams (blind to order) add nothing and the words stay alone."""
from __future__ import annotations

import numpy as np

from transferkit.classical import WORDS, WORDS_CHARS
from transferkit.controls import BASELINES, tfidf_logreg
from transferkit.data import Dataset
from transferkit.tasks import get_task

from task_data import split, vader_lexicon, word_sentiment


def _rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(y, dtype=np.float64)) ** 2)))


def test_single_words_get_character_ngrams_and_beat_the_mean():
    """An unseen word shares no word n-gram with a training word, but its letters ("lovely" after
    "love"): the character n-grams win the cross-validation and the control is far from the mean
    (measured: RMSE 1.17 vs the mean's 1.65 on 300 words; word n-grams alone gave the mean)."""
    train, test = split(word_sentiment(2000, seed=0), 1700)
    out, info = tfidf_logreg(train, np.asarray(train.labels), test, 0, task="regression")
    sel = info["feature_selection"]
    assert info["features"] == WORDS_CHARS and sel["metric"] == "R² (leave-one-out)"
    assert sel["scores"][WORDS_CHARS] > sel["scores"][WORDS] + 0.2 and sel["scores"][WORDS] < 0.05
    assert info["vocabulary"] == sel["vocabulary"]["words"] + sel["vocabulary"]["chars"]
    assert _rmse(out, test.labels) < 0.8 * _rmse(np.full(len(test), np.mean(train.labels)), test.labels)


def test_where_word_order_decides_the_words_are_kept():
    """Two real words; the label says whether they come in alphabetical order.  Character n-grams
    (within words) are the same for "a b" and "b a": they only add noise to the word bigrams, and
    the cross-validation keeps the words alone (measured margin of log-likelihood: 0.009)."""
    lex = [w for w, _ in vader_lexicon() if w.isalpha() and len(w) >= 4]
    rng = np.random.default_rng(2)
    vocab = list(rng.choice(lex, 12, replace=False))
    pairs = [rng.choice(vocab, 2, replace=False) for _ in range(400)]
    ds = Dataset(modality="text", inputs=[f"{a} {b}" for a, b in pairs],
                 labels=["ordered" if a < b else "reversed" for a, b in pairs])
    train, test = split(ds, 300)
    y = get_task("classification").encode(list(train.labels), ["ordered", "reversed"])
    proba, info = tfidf_logreg(train, y, test, 0)
    assert info["features"] == WORDS and info["vocabulary"] == info["feature_selection"]["vocabulary"]["words"]
    assert np.mean(np.array(["ordered", "reversed"])[proba.argmax(1)] == np.array(test.labels)) > 0.75


def test_too_few_items_to_cross_validate_keep_the_words():
    train = Dataset(modality="text", inputs=["cheap pills now", "meeting at noon"], labels=["spam", "ham"])
    test = Dataset(modality="text", inputs=["pills now"], labels=["spam"])
    proba, info = tfidf_logreg(train, np.array([1, 0]), test, 0)
    assert proba.shape == (1, 2) and info["features"] == WORDS
    assert info["feature_selection"]["scores"] == {WORDS: None, WORDS_CHARS: None}


def test_multi_label_chooses_by_the_per_label_cross_validation():
    rng = np.random.default_rng(0)
    topics = {"work": ["meeting", "agenda", "budget"], "money": ["cash", "prize", "lottery"]}
    texts, labels = [], []
    for _ in range(60):
        chosen = sorted(rng.choice(sorted(topics), size=rng.integers(1, 3), replace=False))
        texts.append(" ".join(str(rng.choice(topics[t])) for t in chosen for _ in range(3)))
        labels.append(tuple(chosen))
    train, test = split(Dataset(modality="text", inputs=texts, labels=labels, task="multi-label"), 45)
    task = get_task("multi-label")
    proba, info = tfidf_logreg(train, task.encode(list(train.labels), ["money", "work"]), test, 0, task="multi-label")
    assert proba.shape == (15, 2) and info["thresholds"].shape == (2,)
    assert info["features"] in (WORDS, WORDS_CHARS) and "log-loss" in info["feature_selection"]["metric"]
    assert all(s is not None and s < 0 for s in info["feature_selection"]["scores"].values())


def test_the_choice_depends_on_the_training_items_only():
    """The same training words with three test sets (the real one, the same words with negated
    ratings, other words): the same choice, the same scores, the same predictions for the same
    words; a selection that looked at the test items would change with them."""
    train, test = split(word_sentiment(800, seed=0), 600)
    y = np.asarray(train.labels)
    flipped = Dataset(modality="text", inputs=test.inputs, labels=[-v for v in test.labels], task="regression")
    other = word_sentiment(900, seed=0).subset(range(800, 900))
    runs = [tfidf_logreg(train, y, t, 0, task="regression") for t in (test, flipped, other)]
    assert runs[0][1]["features"] == runs[1][1]["features"] == runs[2][1]["features"]
    assert runs[0][1]["feature_selection"] == runs[1][1]["feature_selection"] == runs[2][1]["feature_selection"]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_the_registration_says_which_features():
    summary = BASELINES.entry("tfidf-logreg").meta["summary"]
    assert "word 1-2-grams" in summary and "character 2-5-grams" in summary and "cross-validation" in summary
