"""Feature extraction and the content-keyed cache."""
from __future__ import annotations

import numpy as np
import pytest

from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.features import FeatureCache, FeatureCacheWarning, extract_features


def _texts(n):
    return Dataset(modality="text", inputs=[f"text number {i} " + "word " * (i % 7) for i in range(n)])


def test_second_extraction_is_served_from_the_cache(tiny_text_dir, tmp_path):
    cache = FeatureCache(tmp_path)
    b = get_backbone(str(tiny_text_dir))
    ds = _texts(20)
    f1, s1 = extract_features(b, ds, batch_size=4, cache=cache)
    assert s1.n_computed == 20 and s1.n_cached == 0
    b2 = get_backbone(str(tiny_text_dir))  # a new process would build a new object
    f2, s2 = extract_features(b2, ds, batch_size=4, cache=cache)
    assert s2.n_computed == 0 and s2.n_cached == 20 and not b2.loaded  # weights never loaded
    np.testing.assert_array_equal(f1, f2)
    # A subset in another order reuses rows by content.
    sub = ds.subset([5, 2, 9])
    f3, s3 = extract_features(b2, sub, cache=cache)
    assert s3.n_computed == 0
    np.testing.assert_array_equal(f3, f1[[5, 2, 9]])


def test_cached_equals_uncached_and_order_does_not_matter(tiny_text_dir, tmp_path):
    b = get_backbone(str(tiny_text_dir))
    ds = _texts(9)
    direct = b.embed(ds.inputs).numpy()
    f, _ = extract_features(b, ds, batch_size=2, cache=False)
    np.testing.assert_allclose(f, direct, atol=1e-5)


def test_repeated_contents_are_computed_once(tiny_text_dir, tmp_path):
    b = get_backbone(str(tiny_text_dir))
    ds = Dataset(modality="text", inputs=["same", "other", "same", "same"])
    f, s = extract_features(b, ds, cache=FeatureCache(tmp_path))
    assert s.n_computed == 2
    np.testing.assert_array_equal(f[0], f[2])


def test_cache_is_keyed_by_backbone_identity(tiny_text_dir, tmp_path):
    cache = FeatureCache(tmp_path)
    ds = _texts(4)
    extract_features(get_backbone(str(tiny_text_dir)), ds, cache=cache)
    _, s = extract_features(get_backbone(str(tiny_text_dir), layer=1), ds, cache=cache)
    assert s.n_computed == 4  # another layer is another key
    _, s = extract_features(get_backbone(str(tiny_text_dir)).randomized(0), ds, cache=cache)
    assert s.n_computed == 4


def test_damaged_shard_is_recomputed_not_fatal(tiny_text_dir, tmp_path):
    cache = FeatureCache(tmp_path)
    b = get_backbone(str(tiny_text_dir))
    ds = _texts(5)
    f1, _ = extract_features(b, ds, cache=cache)
    shards = list(tmp_path.rglob("shard-*.tkf"))
    assert shards
    for p in shards:
        p.write_bytes(b"garbage")
    with pytest.warns(FeatureCacheWarning, match="damaged"):
        f2, s = extract_features(b, ds, cache=cache)
    assert s.n_computed == 5
    np.testing.assert_allclose(f1, f2, atol=1e-6)


def test_chunk_counts_survive_the_cache(tiny_text_dir, tmp_path):
    cache = FeatureCache(tmp_path)
    b = get_backbone(str(tiny_text_dir), max_length=16)
    ds = Dataset(modality="text", inputs=["short", "long " * 40])
    _, s1 = extract_features(b, ds, cache=cache)
    _, s2 = extract_features(b, ds, cache=cache)
    assert s1.chunked == s2.chunked == 1
    np.testing.assert_array_equal(s1.units, s2.units)


def test_text_pools_span_many_items_and_agree_with_one_item_at_a_time(tiny_text_dir, monkeypatch):
    """Texts are prepared in pools larger than a batch (windows sorted across items); the
    features must not depend on which items share a pool or a forward pass."""
    b = get_backbone(str(tiny_text_dir), max_length=16, max_chunks=3, chunk_batch=4)
    ds = Dataset(modality="text", inputs=[("alpha beta " * (1 + i % 11)) + str(i) for i in range(40)])
    assert b.pool_items(8) > 8
    pools = []
    prepare = b.prepare
    monkeypatch.setattr(b, "prepare", lambda items: pools.append(len(items)) or prepare(items))
    pooled, stats = extract_features(b, ds, batch_size=8, cache=False)
    assert pools == [40] and stats.chunked > 0
    monkeypatch.setattr(b, "prepare", prepare)
    single = np.concatenate([b.embed([x]).numpy() for x in ds.inputs])
    np.testing.assert_allclose(pooled, single, atol=1e-5)
