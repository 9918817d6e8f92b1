"""Text objectives: masked-language modelling (Devlin et al. 2019; continued pre-training as in
Gururangan et al. 2020, "Don't Stop Pretraining") and SimCSE (Gao et al. 2021: two dropout-noised
encodings of the same sentence are the positive pair).

The zoo's MiniLM ships as a sentence encoder without its MLM head.  :class:`MaskedLM` builds the
head of transformers' ``BertForMaskedLM`` (``BertOnlyMLMHead``: dense + GELU + LayerNorm, then a
decoder onto the vocabulary) and initialises it as ``BertPreTrainedModel`` does a new layer
(weights ~ N(0, initializer_range), biases 0, LayerNorm 1/0), with the decoder's weight TIED to
the encoder's input word embeddings (as in BERT), so only the transform layer (H x H) and the
vocabulary bias start from nothing; the masking is transformers' own
(``DataCollatorForLanguageModeling``: 15% of the non-special tokens, 80% [MASK], 10% random, 10%
kept).  The head is not saved: the run keeps the encoder.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..errors import UserInputError
from .losses import info_nce


class MaskedLM(nn.Module):
    """Masked-language modelling on a BERT-family text backbone.

    Args:
        backbone: a text backbone whose module is a transformers BERT encoder.
        mask_prob: share of tokens masked.
        max_length: tokens per text (longer texts are cut: pre-training reads their beginning).
    """

    name = "mlm"
    saved_head = False

    def __init__(self, backbone: Backbone, *, mask_prob: float = 0.15, max_length: int = 128, **_: Any):
        super().__init__()
        module, tok = backbone.module, backbone.tokenizer
        cfg = getattr(module, "config", None)
        if tok is None or getattr(cfg, "model_type", None) != "bert" or tok.mask_token is None:
            raise UserInputError(f"masked-language modelling is built for BERT-family encoders, and {backbone.name!r} "
                                 f"is a {getattr(cfg, 'model_type', type(module).__name__)} model",
                                 hint="use --objective simcse (any text encoder)")
        from transformers import DataCollatorForLanguageModeling
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead

        self.head = BertOnlyMLMHead(cfg)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=cfg.initializer_range)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.predictions.bias)
        self.head.predictions.decoder.weight = module.get_input_embeddings().weight  # tied, as in BERT
        self.collator = DataCollatorForLanguageModeling(tok, mlm_probability=mask_prob)
        self.tokenizer, self.max_length, self.vocab = tok, max_length, cfg.vocab_size
        self.info = {"head": "BertOnlyMLMHead, transform N(0, %g), decoder tied to the word embeddings, bias 0"
                             % cfg.initializer_range, "mask_prob": mask_prob, "max_length": max_length}

    def loss(self, backbone: Backbone, items: list[str]) -> torch.Tensor:
        device = next(backbone.module.parameters()).device
        enc = self.tokenizer(list(items), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt", return_special_tokens_mask=True)
        ids, labels = self.collator.torch_mask_tokens(enc["input_ids"], special_tokens_mask=enc["special_tokens_mask"])
        hidden = backbone.module(input_ids=ids.to(device), attention_mask=enc["attention_mask"].to(device))[0]
        chosen = (labels != -100).to(device)
        if not chosen.any():  # no token drawn this batch (very short texts): nothing to predict
            return hidden.sum() * 0.0
        # the vocabulary projection only at the masked positions (15%): most of an MLM step's cost otherwise
        logits = self.head(hidden[chosen])
        return F.cross_entropy(logits.float(), labels.to(device)[chosen])


class SimCSE(nn.Module):
    """Unsupervised SimCSE: each text encoded twice in train mode (different dropout masks) is its own
    positive, the batch's other texts the negatives; the backbone's own pooled features are the
    sentence embeddings (no projection head, as SimCSE uses at test time).

    Args:
        temperature: of :func:`~.losses.info_nce` (SimCSE: 0.05).
    """

    name = "simcse"
    saved_head = False

    def __init__(self, backbone: Backbone, *, temperature: float = 0.05, **_: Any):
        super().__init__()
        if backbone.modality != "text":
            raise UserInputError(f"simcse is a text objective and {backbone.name!r} is a {backbone.modality} model",
                                 hint="images: --objective simclr")
        self.temperature = temperature
        self.info = {"temperature": temperature, "noise": "dropout (the encoder in train mode)"}

    def loss(self, backbone: Backbone, items: list[str]) -> torch.Tensor:
        device = next(backbone.module.parameters()).device
        z1 = backbone.forward_features(backbone.prepare(list(items)).to(device))
        z2 = backbone.forward_features(backbone.prepare(list(items)).to(device))
        return info_nce(z1, z2, self.temperature)
