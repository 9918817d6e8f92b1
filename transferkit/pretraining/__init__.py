"""Self-supervised objectives for continued pre-training (``transferkit pretrain``), each an
``nn.Module`` holding its own head whose ``loss(backbone, items)`` is the mean loss of a batch of
raw unlabelled items: masked-language modelling and SimCSE for text (:mod:`.text`), SimCLR for
images (:mod:`.image`); the contrastive loss they share is :func:`.losses.info_nce`."""
from __future__ import annotations

from .image import SimCLR
from .losses import info_nce
from .text import MaskedLM, SimCSE

#: objective name -> (class, modality); the first of a modality is its default.
OBJECTIVES = {"mlm": (MaskedLM, "text"), "simcse": (SimCSE, "text"), "simclr": (SimCLR, "image")}

__all__ = ["OBJECTIVES", "MaskedLM", "SimCLR", "SimCSE", "info_nce"]
