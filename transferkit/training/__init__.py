"""The one training loop, its callbacks, checkpoints and learning-rate schedules.

Strategies that train weights (fine-tuning, adapters, domain adaptation...) supply a
``training_step(indices) -> loss`` and call :func:`train`; see :mod:`.loop`.
"""
from .callbacks import Callback, EarlyStopping, Validation, observing, trainable_state
from .checkpoint import Checkpoint, load_latest, save_checkpoint
from .loop import Budget, NonFiniteLossError, TrainState, epoch_batches, plan_budget, plan_steps, set_train_mode, train
from .schedules import SCHEDULES, make_scheduler, schedule_fn

__all__ = ["train", "TrainState", "NonFiniteLossError", "plan_steps", "plan_budget", "Budget", "epoch_batches",
           "set_train_mode", "Callback", "Validation", "EarlyStopping", "observing", "trainable_state", "Checkpoint",
           "save_checkpoint", "load_latest", "make_scheduler", "schedule_fn", "SCHEDULES"]
