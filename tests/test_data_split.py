"""Stratified splits and k-shot samples: proportions, determinism, edge classes."""
from __future__ import annotations

from collections import Counter

import pytest

from transferkit.data import Dataset, ValidationReport, few_shot_sample, stratified_split
from transferkit.errors import UserInputError


def make(counts: dict[str, int]) -> Dataset:
    labels = [c for c, n in counts.items() for _ in range(n)]
    # interleave the classes so that "in order" means something
    labels = sorted(labels, key=lambda c: (labels.index(c) % 7, c))
    return Dataset("text", [f"item {i}" for i in range(len(labels))], labels)


def test_stratified_split_keeps_class_proportions():
    ds = make({"a": 100, "b": 50, "c": 10})
    train, test = stratified_split(ds, test_size=0.2, seed=0)
    assert Counter(test.labels) == {"a": 20, "b": 10, "c": 2}
    assert Counter(train.labels) == {"a": 80, "b": 40, "c": 8}
    assert set(train.inputs).isdisjoint(test.inputs) and len(train) + len(test) == len(ds)
    # each part keeps the original order of the items
    order = {x: i for i, x in enumerate(ds.inputs)}
    assert [order[x] for x in test.inputs] == sorted(order[x] for x in test.inputs)


def test_stratified_split_is_deterministic_for_a_seed():
    ds = make({"a": 30, "b": 30})
    first = stratified_split(ds, 0.3, seed=1)[1].inputs
    assert stratified_split(ds, 0.3, seed=1)[1].inputs == first
    assert stratified_split(ds, 0.3, seed=2)[1].inputs != first


def test_single_item_classes_stay_in_train_and_counts_work():
    ds = make({"a": 10, "b": 10, "rare": 1})
    train, test = stratified_split(ds, test_size=4, seed=0)
    assert "rare" in train.labels and "rare" not in test.labels
    assert Counter(test.labels) == {"a": 2, "b": 2}
    tiny = make({"a": 2, "b": 3})
    train, test = stratified_split(tiny, test_size=0.5)
    assert set(train.labels) == {"a", "b"}  # every class keeps a training item


def test_stratified_split_refuses_what_it_cannot_do():
    with pytest.raises(UserInputError, match="no labels"):
        stratified_split(Dataset("text", ["a", "b"]), 0.5)
    with pytest.raises(UserInputError, match="at most 2"):
        stratified_split(make({"a": 2, "b": 2}), test_size=3)
    with pytest.raises(UserInputError):
        stratified_split(make({"a": 5, "b": 5}), test_size=1.5)


def test_few_shot_takes_k_per_class_seeded_nested_and_in_order():
    ds = make({"a": 40, "b": 40, "c": 3})
    r = ValidationReport()
    s8 = few_shot_sample(ds, 8, seed=0, report=r)
    assert Counter(s8.labels) == {"a": 8, "b": 8, "c": 3}  # all 3 of "c", and it is recorded
    assert [p.kind for p in r.warnings] == ["too-few-per-class"] and "'c'" in r.warnings[0].message
    assert few_shot_sample(ds, 8, seed=0).inputs == s8.inputs
    assert few_shot_sample(ds, 8, seed=5).inputs != s8.inputs
    s16 = few_shot_sample(ds, 16, seed=0)
    assert set(s8.inputs) <= set(s16.inputs)  # 8-shot is inside 16-shot: clean learning curves
    order = {x: i for i, x in enumerate(ds.inputs)}
    assert [order[x] for x in s16.inputs] == sorted(order[x] for x in s16.inputs)
    with pytest.raises(UserInputError):
        few_shot_sample(ds, 0)
