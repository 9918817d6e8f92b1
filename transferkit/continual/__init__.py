"""Continual learning on a finished run (``transferkit update RUN --data D``): the replay memory,
EWC, LwF, the head's training through the one loop, and the metrics of the accuracy matrix.

Layer 4 (adaptation): it trains heads on cached features; the command side (reading runs and
data, writing the new run) is :mod:`transferkit.continual_update`.
"""
from .ewc import ewc_penalty, fisher_diagonal
from .head import CONTINUAL, ContinualParams, HeadData, initial_head, train_head
from .lwf import distillation_loss
from .memory import ReplayMemory
from .metrics import continual_metrics, square

__all__ = ["CONTINUAL", "ContinualParams", "HeadData", "ReplayMemory", "continual_metrics", "distillation_loss",
           "ewc_penalty", "fisher_diagonal", "initial_head", "square", "train_head"]
