"""The feature cache can only cost a recomputation: damaged, edited, truncated, old-format or
unwritable caches never change a result or stop a run.  Every case runs a real extraction
with the tiny random models on a real cache folder."""
from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest

from transferkit import features
from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.data.dataset import item_hash
from transferkit.features import (
    FeatureCache,
    FeatureCacheWarning,
    encode_shard,
    extract_features,
)


@pytest.fixture(autouse=True)
def _writable_again():
    """A cache found unwritable is remembered for the process: forget it around each test."""
    features._UNWRITABLE.clear()
    yield
    features._UNWRITABLE.clear()


def _texts(n: int) -> Dataset:
    return Dataset(modality="text", inputs=[f"item {i} " + "word " * (i % 5) for i in range(n)])


def _shards(root) -> list:
    return sorted(root.rglob(f"shard-*{features.SHARD_SUFFIX}"))


def _decode(path):
    shard = features._read_index(path, 32)
    f, u = features._read_rows(shard)
    return shard.keys.copy(), f.copy(), u.copy()


@pytest.fixture
def cached(tiny_text_dir, tmp_path):
    """A real cache holding one shard of 12 items, and the features the first run computed."""
    cache = FeatureCache(tmp_path / "cache")
    ds = _texts(12)
    f1, s1 = extract_features(get_backbone(str(tiny_text_dir)), ds, cache=cache)
    assert s1.n_computed == 12 and len(_shards(tmp_path / "cache")) == 1
    return cache, ds, f1, _shards(tmp_path / "cache")[0]


def _again(tiny_text_dir, cache, ds):
    return extract_features(get_backbone(str(tiny_text_dir)), ds, cache=cache)


def _clean_run(tiny_text_dir, cache, ds, f1):
    """The next run after a repair: every item served from the cache, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)
        f3, s3 = _again(tiny_text_dir, cache, ds)
    assert s3.n_cached == len(ds) and s3.n_computed == 0 and not s3.cache_notes
    np.testing.assert_array_equal(f3, f1)


# ----- damaged shards: discarded, recomputed, warned, recorded --------------------------------------
def test_negated_values_of_the_same_size_are_detected_and_recomputed(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    blob = bytearray(shard.read_bytes())
    index = features._read_index(shard, 32)
    start = index.data_offset + 16 * index.rows  # the float32 block, after the units
    for i in range(start + 3, len(blob), 4):
        blob[i] ^= 0x80  # flip every sign bit: -x, same size, same everything else
    shard.write_bytes(bytes(blob))
    with pytest.warns(FeatureCacheWarning, match="differ from their checksum"):
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert s2.n_computed == 12 and s2.n_cached == 0
    np.testing.assert_array_equal(f2, f1)  # not -f1
    assert any("discarded" in n for n in s2.cache_notes)
    assert not shard.exists()  # the bad shard is gone, a good one replaced it
    _clean_run(tiny_text_dir, cache, ds, f1)


def test_zero_length_shard_costs_one_recomputation_not_every_later_fit(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    shard.write_bytes(b"")
    with pytest.warns(FeatureCacheWarning, match="empty"):
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert s2.n_computed == 12
    np.testing.assert_array_equal(f2, f1)
    _clean_run(tiny_text_dir, cache, ds, f1)


def test_truncated_shard_with_fewer_rows_is_refused(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    blob = shard.read_bytes()
    shard.write_bytes(blob[:-4 * f1.shape[1]])  # the last row cut off
    with pytest.warns(FeatureCacheWarning, match="rows missing"):
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert s2.n_computed == 12
    np.testing.assert_array_equal(f2, f1)


def test_nan_values_are_refused_even_with_matching_checksums(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    keys, f, u = _decode(shard)
    f[3, 1] = np.nan
    shard.write_bytes(encode_shard(keys, f, u))
    with pytest.warns(FeatureCacheWarning, match="not finite"):
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert s2.n_computed == 12 and np.isfinite(f2).all()
    np.testing.assert_array_equal(f2, f1)


def test_a_consistent_shard_with_fewer_rows_only_serves_what_it_holds(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    keys, f, u = _decode(shard)
    shard.write_bytes(encode_shard(keys[:5], f[:5], u[:5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)  # nothing is wrong: a smaller cache
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert s2.n_cached == 5 and s2.n_computed == 7
    np.testing.assert_array_equal(f2, f1)


def test_cached_rows_of_another_width_are_recomputed(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    keys, f, u = _decode(shard)
    # A shard whose checksums are right but whose width is not the backbone's, holding some
    # of the items: the cache is wrong, not the model.
    wide = np.concatenate([f, np.ones((len(f), 3), np.float32)], axis=1)
    shard.write_bytes(encode_shard(keys[:6], wide[:6], u[:6]))
    with pytest.warns(FeatureCacheWarning, match="wide"):
        f2, s2 = _again(tiny_text_dir, cache, ds)
    assert f2.shape == f1.shape and s2.n_computed == 12
    np.testing.assert_allclose(f2, f1, atol=1e-6)


def test_shards_of_different_widths_never_mix(cached, tiny_text_dir):
    cache, ds, f1, shard = cached
    keys, f, u = _decode(shard)
    wide = np.concatenate([f, np.ones((len(f), 3), np.float32)], axis=1)
    (shard.parent / f"shard-0-0{features.SHARD_SUFFIX}").write_bytes(encode_shard(keys[6:], wide[6:], u[6:]))
    with pytest.warns(FeatureCacheWarning) as record:
        f2, _ = _again(tiny_text_dir, cache, ds)
    assert any("width" in str(w.message) for w in record)  # the lookup saw the conflict
    assert f2.shape == f1.shape
    np.testing.assert_allclose(f2, f1, atol=1e-6)


def test_shards_are_one_file_written_by_rename_with_no_temporary_left(cached):
    _, _, _, shard = cached
    assert [p.name for p in shard.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert shard.read_bytes()[:8] == features.MAGIC


# ----- lossless keys: the second run is exactly the first ---------------------------------------------
def _texts_whose_hash_ends_in_nul(k: int) -> list[str]:
    found, i = [], 0
    while len(found) < k:
        t = f"nul-ending candidate {i}"
        if item_hash(t, "text").endswith("00"):
            found.append(t)
        i += 1
    return found


def test_keys_ending_in_a_nul_byte_are_found_and_the_second_run_is_the_first(tiny_text_dir, tmp_path):
    nul = _texts_whose_hash_ends_in_nul(3)
    ds = Dataset(modality="text", inputs=nul + [f"an ordinary text {i}" for i in range(6)])
    assert sum(h.endswith("00") for h in ds.content_hashes()) >= 3
    cache = FeatureCache(tmp_path / "cache")
    f1, s1 = extract_features(get_backbone(str(tiny_text_dir)), ds, cache=cache)
    shards = _shards(tmp_path / "cache")
    f2, s2 = extract_features(get_backbone(str(tiny_text_dir)), ds, cache=cache)
    assert s1.n_computed == len(ds)
    assert s2.n_cached == len(ds) and s2.n_computed == 0  # every item, NUL-ending keys included
    assert _shards(tmp_path / "cache") == shards  # no new shard
    np.testing.assert_array_equal(f2, f1)


def test_old_format_shards_are_a_miss_never_a_crash(tiny_text_dir, tmp_path):
    b = get_backbone(str(tiny_text_dir))
    ds = _texts(6)
    d = tmp_path / "cache" / b.cache_key()
    d.mkdir(parents=True)
    # Format 1: keys as S32 (trailing NULs lost), no checksum; values here are wrong on purpose.
    np.save(d / "shard-1-1.hash.npy", np.array([bytes.fromhex(h) for h in ds.content_hashes()], dtype="S32"))
    np.save(d / "shard-1-1.feat.npy", -np.ones((6, 32), np.float32))
    np.save(d / "shard-1-1.units.npy", np.zeros((6, 2), np.int64))
    (d / "shard-2-1.hash.npy").write_bytes(b"")  # and a damaged one
    cache = FeatureCache(tmp_path / "cache")
    f, s = extract_features(b, ds, cache=cache)
    assert s.n_computed == 6
    np.testing.assert_allclose(f, extract_features(b, ds, cache=False)[0], atol=1e-6)
    assert not list(d.glob("*.npy"))  # the old shards went when the new one was written
    assert len(_shards(tmp_path / "cache")) == 1


# ----- a cache that cannot be written costs speed only ------------------------------------------------
@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"),
                                   PermissionError(errno.EROFS, "Read-only file system"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_unwritable_cache_warns_once_and_the_features_are_still_right(error, tiny_text_dir, tmp_path, monkeypatch):
    def refuse(*_a, **_k):
        raise error

    monkeypatch.setattr(features, "atomic_write_bytes", refuse)
    b = get_backbone(str(tiny_text_dir))
    cache = FeatureCache(tmp_path / "cache")
    with pytest.warns(FeatureCacheWarning, match="cannot be written") as record:
        f, s = extract_features(b, _texts(7), cache=cache)
    assert len([w for w in record if issubclass(w.category, FeatureCacheWarning)]) == 1
    if error.errno == errno.ENOSPC:
        assert "disk is full" in s.cache_notes[0]
    np.testing.assert_allclose(f, extract_features(b, _texts(7), cache=False)[0], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureCacheWarning)  # warned once: not again
        _, s2 = extract_features(b, _texts(9), cache=cache)
    assert s2.n_computed == 9 and any("cannot be written" in n for n in s2.cache_notes)  # still recorded


def test_full_disk_during_the_write_leaves_no_partial_file(tiny_text_dir, tmp_path, monkeypatch):
    """ENOSPC at fsync, inside the real atomic write: its temporary file goes, no shard appears."""
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.warns(FeatureCacheWarning, match="disk is full"):
        f, _ = extract_features(get_backbone(str(tiny_text_dir)), _texts(5), cache=FeatureCache(tmp_path / "c"))
    assert f.shape[0] == 5
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []


def test_cache_root_that_is_a_file(tiny_text_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(blocker))
    b = get_backbone(str(tiny_text_dir))
    with pytest.warns(FeatureCacheWarning, match="cannot be written"):
        f, s = extract_features(b, _texts(4), cache=True)
    assert s.n_computed == 4 and f.shape[0] == 4 and blocker.read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes through chmod; the monkeypatched cases above cover it")
def test_read_only_cache_folder(tiny_text_dir, tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.warns(FeatureCacheWarning, match="cannot be written"):
            _, s = extract_features(get_backbone(str(tiny_text_dir)), _texts(4), cache=FeatureCache(root))
        assert s.n_computed == 4
    finally:
        root.chmod(0o755)


# ----- through fit and predict ----------------------------------------------------------------------
def _labelled(n_per_class: int, seed: int) -> Dataset:
    from conftest import toy_texts

    texts, labels = toy_texts(n_per_class, seed=seed)
    return Dataset(modality="text", inputs=texts, labels=labels)


def test_fit_on_an_edited_cache_gives_the_first_fit(tiny_text_dir, tmp_path, monkeypatch):
    import transferkit as tk

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    train, test = _labelled(10, 0), _labelled(4, 1)
    first = tk.fit(train=train, test=test, model=str(tiny_text_dir), control=False, log=None)
    for shard in _shards(tmp_path / "cache"):
        keys, f, u = _decode(shard)
        blob = bytearray(encode_shard(keys, f, u))
        index = features._read_index(shard, 32)
        start = index.data_offset + 16 * index.rows
        for i in range(start + 3, len(blob), 4):
            blob[i] ^= 0x80
        shard.write_bytes(bytes(blob))
    with pytest.warns(FeatureCacheWarning, match="checksum"):
        second = tk.fit(train=train, test=test, model=str(tiny_text_dir), control=False, log=None)
    assert second.metrics["test"] == first.metrics["test"]
    np.testing.assert_array_equal(second.predict_proba(test), first.predict_proba(test))


def test_fit_and_predict_with_a_cache_that_cannot_be_written(tiny_text_dir, tmp_path, monkeypatch):
    import transferkit as tk

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "atomic_write_bytes",
                        lambda *_a, **_k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
    train, test = _labelled(8, 0), _labelled(3, 1)
    with pytest.warns(FeatureCacheWarning, match="cannot be written"):
        model = tk.fit(train=train, test=test, model=str(tiny_text_dir), control=False, log=None,
                       out=str(tmp_path / "run"))
    loaded = tk.load(tmp_path / "run")
    assert len(loaded.predict(test.inputs)) == len(test)
    assert any("cannot be written" in n for s in model.extraction_log for n in s.cache_notes)
