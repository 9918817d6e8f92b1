"""Seeded, deterministic subsets: a stratified train/test split and k-shot sampling.

Classification stratifies on the class; regression on quantile bins of the target;
multi-label on each item's rarest label.  Only classification has classes to sample k of.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from ..errors import UserInputError
from .dataset import Dataset


def _by_class(ds: Dataset, what: str) -> dict[str, list[int]]:
    _need_labels(ds, what)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(ds.labels):
        groups[lab].append(i)
    return dict(sorted(groups.items()))


def _need_labels(ds: Dataset, what: str) -> None:
    if ds.labels is None:
        raise UserInputError(f"{what} needs labelled data; {ds.source} has no labels",
                             "name the label column (label_column=...) or use class folders")


def stratified_split(ds: Dataset, test_size: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into train and test parts with (nearly) the class proportions of ``ds``.

    Like scikit-learn's ``StratifiedShuffleSplit``: the test part has ``ceil(test_size * n)``
    items (n counts only classes with at least 2 items), shared out in proportion to class
    size with largest remainders; every class keeps at least one item in the train part, and a
    class with a single item goes to train whole.

    Regression and multi-label data are split the same way over strata (see
    :func:`_regression_strata`, :func:`_label_strata`), n counting every item.

    Args:
        ds: labelled data, ``N`` items.
        test_size: a fraction in (0, 1), or an absolute number of test items (int >= 1).
        seed: the same seed and data give the same split.

    Returns:
        ``(train, test)``, each in the original item order.

    Raises:
        UserInputError: no labels, or a test_size that leaves one part empty.
    """
    train_idx, test_idx = split_indices(ds, test_size, seed)
    return ds.subset(train_idx), ds.subset(test_idx)


def split_indices(ds: Dataset, test_size: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """The item indices of :func:`stratified_split`'s ``(train, test)`` parts, each ascending:
    what splits several label columns of the same items alike (a multi-task fit)."""
    if ds.task != "classification":
        return _split_task(ds, test_size, seed)
    groups = _by_class(ds, "a stratified split")
    eligible = {c: idx for c, idx in groups.items() if len(idx) >= 2}
    n = sum(len(v) for v in eligible.values())
    n_test = _test_count(test_size, n, eligible, len(ds), "class")
    chosen = _draw(eligible, n_test, seed)
    return [i for i in range(len(ds)) if i not in chosen], sorted(chosen)


def _test_count(test_size: float, n: int, eligible: dict, total: int, what: str) -> int:
    """The size of the test part, or why there can be none."""
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool) and test_size >= 1:
        n_test = int(test_size)
    elif 0 < float(test_size) < 1:
        n_test = math.ceil(float(test_size) * n)
    else:
        raise UserInputError(f"test_size={test_size!r}: use a fraction in (0, 1) or a count >= 1")
    cap = sum(len(v) - 1 for v in eligible.values())  # each stratum keeps one training item
    if n_test > cap or n_test == 0:
        raise UserInputError(f"cannot put {n_test} of {total} items in the test part "
                             f"(at most {cap} while keeping every {what} in train)",
                             "use a smaller test_size or add data")
    return n_test


def _draw(eligible: dict, n_test: int, seed: int) -> set[int]:
    """``n_test`` item indices drawn from the strata in proportion to their sizes.

    Args:
        eligible: stratum key (sortable) -> item indices; every stratum has >= 2 items and
            keeps at least one of them out of the draw.
    """
    n = sum(len(v) for v in eligible.values())
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
    return set(test_idx)


def _split_task(ds: Dataset, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """The stratified split (indices) of regression or multi-label data."""
    _need_labels(ds, "a stratified split")
    if ds.task == "regression":
        strata, _extremes = _regression_strata(ds.labels, test_size)  # extremes: train
        what = "target bin"
    else:
        strata, what = _label_strata(ds.labels), "stratum"
    n_test = _test_count(test_size, len(ds), strata, len(ds), what)
    chosen = _draw(strata, n_test, seed)
    if ds.task == "multi-label":
        chosen = _labels_into_train(ds.labels, chosen, seed)
    return [i for i in range(len(ds)) if i not in chosen], sorted(chosen)


_MAX_BINS = 10


def _regression_strata(targets: list[float], test_size: float) -> tuple[dict[int, list[int]], list[int]]:
    """Equal-count bins of the target (by rank, ties in item order), and the two items that
    stay in training: the smallest and the largest target, so that the test targets lie
    inside the range the model was trained on.

    At most 10 bins, and no more than test items (with 3 test items, 10 bins would give the
    3 lowest bins one each); every bin holds at least 2 items.
    """
    y = np.asarray(targets, dtype=float)
    n = len(y)
    order = np.argsort(y, kind="stable")
    fixed = [int(order[0]), int(order[-1])] if n > 4 else []
    rest = [int(i) for i in order if int(i) not in fixed]
    fraction = float(test_size) if 0 < float(test_size) < 1 else float(test_size) / max(n, 1)
    k = max(1, min(_MAX_BINS, math.ceil(fraction * n), len(rest) // 2))
    strata: dict[int, list[int]] = {}
    for r, i in enumerate(rest):  # rest is in target order: bin = rank * k // n
        strata.setdefault(r * k // len(rest), []).append(i)
    return {b: sorted(v) for b, v in strata.items()}, fixed


_POOL = (1, "")  # the stratum of items whose rarest label is too rare to stratify on


def _label_strata(sets: list[tuple[str, ...]]) -> dict[tuple[int, str], list[int]]:
    """Items grouped by their rarest label (ties: the first name); strata of one item are
    pooled into one stratum drawn at random (keys sort the labels first, the pool last)."""
    counts = Counter(name for labs in sets for name in labs)
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, labs in enumerate(sets):
        rarest = min(labs, key=lambda name: (counts[name], name)) if labs else ""
        groups[(0, rarest)].append(i)
    strata: dict[tuple[int, str], list[int]] = {}
    for key, idx in groups.items():
        if len(idx) >= 2:
            strata[key] = idx
        else:
            strata.setdefault(_POOL, []).extend(idx)
    if len(strata.get(_POOL, [])) < 2:  # a pool of one cannot give an item to test
        lone = strata.pop(_POOL, [])
        if lone and strata:
            first = min(strata)
            strata[first] = sorted(strata[first] + lone)
        elif lone:
            strata[_POOL] = lone
    return strata


def _labels_into_train(sets: list[tuple[str, ...]], chosen: set[int], seed: int) -> set[int]:
    """Move test items back to training until every label of the test part is in training
    (where possible), each time sending to test a training item whose labels all stay in
    training, so the test part keeps its size."""
    rng = np.random.default_rng([seed, 1])
    chosen = set(chosen)
    in_train = Counter(name for i, labs in enumerate(sets) if i not in chosen for name in labs)
    names = sorted({name for i in chosen for name in sets[i]})
    for name in names:
        if in_train[name] or len(chosen) <= 1:
            continue
        back = min((i for i in chosen if name in sets[i]), key=lambda i: (len(sets[i]), i))
        chosen.discard(back)
        in_train.update(sets[back])
        spare = [i for i in range(len(sets)) if i not in chosen and i != back
                 and all(in_train[m] >= 2 for m in sets[i])]
        if spare:
            out = spare[int(rng.integers(len(spare)))]
            chosen.add(out)
            in_train.subtract(sets[out])
    return chosen


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
    if ds.task != "classification":
        raise UserInputError(f"few-shot sampling takes k items per class, and {ds.task} data has "
                             "no classes", "drop labels_per_class (--labels-per-class): few-shot "
                             "is for classification; subsample the data yourself for a smaller "
                             "training set")
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
