"""SimCLR (Chen et al. 2020) for continued pre-training of an image backbone: two random views of each
image (the project's own augmentation, :class:`~transferkit.training.augment.ImageAugment`: random
resized crop and flip; SimCLR's colour jitter and blur are not used) through the backbone and a
2-layer projection head (D -> D -> 128, discarded afterwards), NT-Xent over the batch.

BatchNorm (EfficientNet's): the pre-trained running statistics are KEPT, during training (the layers
stay in eval mode, :func:`~transferkit.training.batchnorm.keep_statistics`; their affine parameters
train) and afterwards: small CPU batches would give noisy batch statistics and let the two views of a
batch share information through them, and re-estimating them on the corpus afterwards (AdaBN-style)
was measured to destroy the features for a new probe: on MNIST-5k (EfficientNet-Lite0 at 64 px, lr 1e-5, 100
steps, 10 labels per class, 1000 held-out images, seed 0) the trained weights with the ImageNet
statistics gave 0.795 vs 0.733 for the original encoder, the same weights with statistics re-estimated
on 2000 corpus images 0.456, and the re-estimated statistics alone on the published weights 0.272.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones.base import Backbone, Batch
from ..errors import UserInputError
from ..training.augment import ImageAugment
from .losses import info_nce


class SimCLR(nn.Module):
    """Args: temperature (SimCLR: 0.1-0.5; 0.2 here), proj_dim (128)."""

    name = "simclr"
    saved_head = False

    def __init__(self, backbone: Backbone, *, temperature: float = 0.2, proj_dim: int = 128, **_: Any):
        super().__init__()
        if backbone.modality != "image":
            raise UserInputError(f"simclr is an image objective and {backbone.name!r} is a {backbone.modality} model",
                                 hint="text: --objective mlm or simcse")
        d = backbone.num_features
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.augment, self.temperature = ImageAugment(), temperature
        self.info = {"temperature": temperature, "projection": f"{d}->{d}->{proj_dim}",
                     "augment": "random resized crop (0.35-1) + flip",
                     "batchnorm": "the pre-trained running statistics kept (eval mode); affine parameters train"}

    def loss(self, backbone: Backbone, items: list[Any]) -> torch.Tensor:
        device = next(backbone.module.parameters()).device
        batch = backbone.prepare(list(items))
        x = batch.tensors["pixel_values"]
        views = []
        for _ in range(2):
            b = Batch(tensors={**batch.tensors, "pixel_values": self.augment(x)}, n_items=batch.n_items)
            views.append(self.projection(backbone.forward_features(b.to(device))))
        return info_nce(views[0], views[1], self.temperature)
