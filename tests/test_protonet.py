"""``protonet``: episodic fine-tuning of the encoder, then prototypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.backbones import get_backbone
from transferkit.data import Dataset
from transferkit.errors import UserInputError
from transferkit.model import TransferModel
from transferkit.strategies import get_strategy
from transferkit.strategies.protonet import EpisodeSampler, episode_loss

from conftest import toy_texts


def test_episodes_are_seeded_and_keep_a_query_item_per_class():
    y = np.array([0] * 6 + [1] * 2 + [2] * 1 + [3] * 4)
    s = EpisodeSampler(y, n_way=5, k_shot=5, n_query=3, seed=0)
    assert s.eligible == [0, 1, 3] and s.n_way == 3  # class 2 has one item: it sits out
    support, query = s(7)
    assert all(len(q) >= 1 for q in query) and all(len(set(a) & set(b)) == 0 for a, b in zip(support, query))
    assert [list(a) for a in s(7)[0]] == [list(a) for a in support]  # episode i is the same every time
    for sup, qry in zip(support, query):
        assert len(set(y[np.concatenate([sup, qry])])) == 1


def test_episode_loss_is_low_when_queries_sit_on_their_prototypes():
    protos = torch.eye(3, 8)
    feats = torch.cat([protos, protos])  # one support and one query per class
    good = episode_loss(feats, [1, 1, 1], [1, 1, 1], 0.1)
    bad = episode_loss(torch.cat([protos, protos[[1, 2, 0]]]), [1, 1, 1], [1, 1, 1], 0.1)
    assert good < 0.01 < bad


def test_protonet_tunes_the_encoder_and_saves_it(tiny_text_dir):
    texts, labels = toy_texts(8)
    train = Dataset(modality="text", inputs=texts, labels=labels)
    s = get_strategy("protonet", {"episodes": 6, "lr": 1e-3, "k_shot": 3, "n_query": 3})
    bb = get_backbone(str(tiny_text_dir))
    s.fit(train, TransferModel(bb, s).ctx)
    assert s.info_["episodes"] == 6 and s.info_["n_way"] == 2 and bb.adapted
    saved = s.state_tensors()
    assert any(k.startswith("backbone.") for k in saved) and "prototypes" in saved
    fresh = get_backbone(str(tiny_text_dir))
    assert not torch.allclose(fresh.embed(texts[:2]), bb.embed(texts[:2]), atol=1e-4)
    again = get_strategy("protonet").load_state(saved, s.classes_, fresh)
    test = Dataset(modality="text", inputs=toy_texts(3, seed=5)[0])
    np.testing.assert_allclose(again.predict_proba(test, TransferModel(fresh, again).ctx),
                               s.predict_proba(test, TransferModel(bb, s).ctx), atol=1e-5)
    with pytest.raises(UserInputError, match="two classes with two"):
        get_strategy("protonet").fit(Dataset(modality="text", inputs=["a", "b", "c"], labels=["x", "y", "y"]),
                                     TransferModel(get_backbone(str(tiny_text_dir)), s).ctx)
