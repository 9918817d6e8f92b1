"""Seeded, deterministic subsets: a stratified train/test split and k-shot sampling."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..errors import UserInputError
from .dataset import Dataset


def _by_class(ds: Dataset, what: str) -> dict[str, list[int]]:
    if ds.labels is None:
        raise UserInputError(f"{what} needs labelled data; {ds.source} has no labels",
                             "name the label column (label_column=...) or use class folders")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(ds.labels):
        groups[lab].append(i)
    return dict(sorted(groups.items()))


def stratified_split(ds: Dataset, test_size: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into train and test parts with (nearly) the class proportions of ``ds``.

    Like scikit-learn's ``StratifiedShuffleSplit``: the test part has ``ceil(test_size * n)``
    items (n counts only classes with at least 2 items), shared out in proportion to class
    size with largest remainders; every class keeps at least one item in the train part, and a
    class with a single item goes to train whole.

    Args:
        ds: labelled data, ``N`` items.
        test_size: a fraction in (0, 1), or an absolute number of test items (int >= 1).
        seed: the same seed and data give the same split.

    Returns:
        ``(train, test)``, each in the original item order.

    Raises:
        UserInputError: no labels, or a test_size that leaves one part empty.
    """
    groups = _by_class(ds, "a stratified split")
    eligible = {c: idx for c, idx in groups.items() if len(idx) >= 2}
    n = sum(len(v) for v in eligible.values())
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool) and test_size >= 1:
        n_test = int(test_size)
    elif 0 < float(test_size) < 1:
        n_test = math.ceil(float(test_size) * n)
    else:
        raise UserInputError(f"test_size={test_size!r}: use a fraction in (0, 1) or a count >= 1")
    cap = sum(len(v) - 1 for v in eligible.values())  # each class keeps one training item
    if n_test > cap or n_test == 0:
        raise UserInputError(f"cannot put {n_test} of {len(ds)} items in the test part "
                             f"(at most {cap} while keeping every class in train)",
                             "use a smaller test_size or add data")
    # Proportional shares, floored, then the remainders in order of size (ties: class order).
    share = {c: n_test * len(v) / n for c, v in eligible.items()}
    take = {c: min(int(s), len(eligible[c]) - 1) for c, s in share.items()}
    order = sorted(eligible, key=lambda c: -(share[c] - int(share[c])))
    while sum(take.values()) < n_test:
        for c in order:
            if sum(take.values()) < n_test and take[c] < len(eligible[c]) - 1:
                take[c] += 1
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in sorted(eligible):  # fixed class order: the rng draws are reproducible
        perm = rng.permutation(len(eligible[c]))
        test_idx += [eligible[c][k] for k in perm[:take[c]]]
    chosen = set(test_idx)
    train_idx = [i for i in range(len(ds)) if i not in chosen]
    return ds.subset(train_idx), ds.subset(sorted(chosen))


def few_shot_sample(ds: Dataset, k: int, seed: int = 0, report=None) -> Dataset:
    """``k`` labelled items per class, seeded.

    Samples are nested: with the same seed, the 8-shot set is contained in the 16-shot set.

    Args:
        ds: labelled data.
        k: items per class (>= 1); a class with fewer items contributes all of them.
        seed: the same seed and data give the same sample.
        report: optional :class:`ValidationReport`; a class with fewer than ``k`` items is
            recorded there as a ``"too-few-per-class"`` warning (its count is also visible
            from the returned labels).

    Returns:
        The sample, in the original item order.
    """
    if int(k) < 1:
        raise UserInputError(f"k={k!r}: need at least one item per class")
    rng = np.random.default_rng(seed)
    keep = []
    for c, idx in _by_class(ds, "few-shot sampling").items():
        perm = rng.permutation(len(idx))  # one draw per class, whatever k: samples are nested
        keep += [idx[p] for p in perm[:k]]
        if len(idx) < k and report is not None:
            report.add("warning", "too-few-per-class", "train set", f"class '{c}' has only "
                       f"{len(idx)} item(s), fewer than k={k}: all are used", split="train")
    return ds.subset(sorted(keep))
