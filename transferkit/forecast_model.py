"""The forecaster's adaptations to a target series: zero-shot, fine-tuned, a probe on its
embeddings, and the same network trained from scratch (the control).

* ``zero-shot``: the pre-trained network as it ships.
* ``finetune``: every weight trained further on the target history's windows (pinball loss on
  the first H quantile rows), through the one training loop (:func:`transferkit.training.train`),
  from the pre-trained weights, with the scratch control's budget (:data:`FINETUNE`).
* ``probe``: the pre-trained embedding frozen, a ridge regression per (step, quantile) from the
  embedding of each training window to its scaled future — the linear probe of forecasting.
* ``scratch`` (control): the same architecture, randomly initialised, trained on the same
  windows with the same loop and budget: the two differ only in the initialisation.

Every model reads and writes per-window scaled values (:func:`~.tasks.backtest.scale_contexts`);
:func:`forecast` maps the quantiles back to the series' units.  Layer 4.
"""
from __future__ import annotations

import numpy as np
import torch

from .backbones.forecaster import CONTEXT, MAX_HORIZON, ForecasterNet, load_net, pinball_loss
from .errors import UserInputError
from .tasks.backtest import scale_contexts, scaled_pairs, training_windows
from .training import make_scheduler, train
from .training.optim import adamw

ADAPTATIONS = ("zero-shot", "finetune", "probe")
#: (steps, learning rate): fine-tuning from the pre-trained weights, and the from-scratch control: the
#: same training, so that the two differ only in the initialisation (as every random-init control here)
FINETUNE = (400, 2e-3)
SCRATCH = (400, 2e-3)
MIN_CONTEXT = 8  # the shortest history a training window may have


def check_horizon(horizon: int) -> None:
    if not 1 <= horizon <= MAX_HORIZON:
        raise UserInputError(f"--horizon {horizon}: the forecaster predicts 1 to {MAX_HORIZON} steps ahead",
                             hint=f"pass --horizon {MAX_HORIZON} or less (forecast further by re-running on the "
                                  "extended series)")


@torch.inference_mode()
def scaled_quantiles(net: ForecasterNet, x: np.ndarray, horizon: int) -> np.ndarray:
    """``x (N, 2, CONTEXT)`` -> sorted scaled quantiles ``(N, horizon, Q)``."""
    net.eval()
    q = net(torch.from_numpy(np.asarray(x, dtype=np.float32)))[:, :horizon]
    return torch.sort(q, dim=-1).values.double().numpy()


def forecast(net: ForecasterNet, histories: list[np.ndarray], horizon: int, probe: "Probe | None" = None) -> np.ndarray:
    """Quantile forecasts ``(N, horizon, Q)`` in each series' units, one per history."""
    x, loc, scale = scale_contexts(histories, CONTEXT)
    q = probe.predict(net, x, horizon) if probe is not None else scaled_quantiles(net, x, horizon)
    return q * scale[:, None, None] + loc[:, None, None]


def _pairs(histories: list[np.ndarray], horizon: int) -> tuple[np.ndarray, np.ndarray]:
    cuts = training_windows(histories, CONTEXT, horizon, min_context=MIN_CONTEXT)
    if len(cuts) < 2:
        longest = max(len(h) for h in histories)
        raise UserInputError(f"too little history to train on: the longest has {longest} values, and a training "
                             f"window needs {MIN_CONTEXT} of context plus the horizon of {horizon}",
                             hint="use --strategy zero-shot, a shorter --horizon, or fewer --windows")
    return scaled_pairs(histories, cuts, CONTEXT, horizon)


def train_net(net: ForecasterNet, histories: list[np.ndarray], horizon: int, *, steps: int, lr: float,
              seed: int = 0, batch_size: int = 64, x: np.ndarray | None = None,
              y: np.ndarray | None = None) -> ForecasterNet:
    """Train ``net`` in place on the windows of ``histories`` (or given ``x``, ``y``) with the
    pinball loss on the first ``horizon`` rows, for ``steps`` optimizer steps (cosine schedule)."""
    if x is None or y is None:
        x, y = _pairs(histories, horizon)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y[:, :horizon])
    epochs = max(1, -(-steps * batch_size // len(xt)))
    optimizer = adamw(list(net.parameters()), lr=lr, weight_decay=1e-4)
    scheduler = make_scheduler(optimizer, "cosine", steps, warmup=0.05)

    def step(idx: np.ndarray) -> torch.Tensor:
        i = torch.from_numpy(idx)
        return pinball_loss(net(xt[i])[:, :yt.shape[1]], yt[i])

    train(net, step, len(xt), optimizer, scheduler=scheduler, epochs=epochs, max_steps=steps,
          batch_size=min(batch_size, len(xt)), seed=seed, progress=False, desc="forecaster")
    net.eval()
    return net


class Probe:
    """Ridge regressions from the frozen embedding to each scaled future (step, quantile): the
    point forecast at the median, the other quantiles as the median plus the training residuals'
    empirical quantiles per step."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    @torch.inference_mode()
    def _embed(self, net: ForecasterNet, x: np.ndarray) -> np.ndarray:
        net.eval()
        return net.embed(torch.from_numpy(np.asarray(x, dtype=np.float32))).double().numpy()

    def fit(self, net: ForecasterNet, histories: list[np.ndarray], horizon: int) -> "Probe":
        from sklearn.linear_model import Ridge

        from .tasks.forecast import QUANTILES

        x, y = _pairs(histories, horizon)
        e = self._embed(net, x)
        self.ridge_ = Ridge(alpha=self.alpha).fit(e, y)
        resid = y - self.ridge_.predict(e)
        self.offsets_ = np.quantile(resid, QUANTILES, axis=0).T  # (H, Q)
        self.offsets_ -= self.offsets_[:, [list(QUANTILES).index(0.5)]]
        return self

    def predict(self, net: ForecasterNet, x: np.ndarray, horizon: int) -> np.ndarray:
        point = self.ridge_.predict(self._embed(net, x))[:, :horizon]
        return np.sort(point[:, :, None] + self.offsets_[None, :horizon], axis=-1)


def adapt(adaptation: str, histories: list[np.ndarray], horizon: int, *, seed: int = 0,
          steps: int | None = None, lr: float | None = None) -> tuple[ForecasterNet, Probe | None]:
    """The pre-trained forecaster adapted to ``histories`` (the target's training part)."""
    if adaptation not in ADAPTATIONS:
        raise UserInputError(f"unknown forecasting strategy {adaptation!r}",
                             hint=f"use one of {', '.join(ADAPTATIONS)}")
    net = load_net()
    if adaptation == "finetune":
        train_net(net, histories, horizon, steps=steps or FINETUNE[0], lr=lr or FINETUNE[1], seed=seed)
    if adaptation == "probe":
        return net, Probe().fit(net, histories, horizon)
    return net, None


def scratch(histories: list[np.ndarray], horizon: int, *, seed: int = 0, steps: int | None = None) -> ForecasterNet:
    """The control: the same network from a random initialisation, trained on the same windows."""
    torch.manual_seed(seed)
    return train_net(ForecasterNet(), histories, horizon, steps=steps or SCRATCH[0], lr=SCRATCH[1], seed=seed)
