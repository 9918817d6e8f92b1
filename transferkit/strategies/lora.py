"""``lora``: low-rank adapters on a frozen backbone, plus a trainable head.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022: a frozen weight
``W (out, in)`` gets a trainable update ``(alpha / r) * B A`` with ``A (r, in)`` random and
``B (out, r)`` zero, so training starts from the pre-trained function and moves through a
rank-``r`` subspace: well under 1% of the parameters train, and a run saves only those.

The adapters are PEFT's (``pip install peft``, the ``lora`` extra), injected in place into the
backbone's module, so ``forward_features`` and the one training loop are unchanged.  Targets by
architecture: the attention ``query`` and ``value`` projections (the paper's choice) of
BERT-like and ViT models (``q_proj``/``v_proj`` in ViT and wav2vec2 under transformers 5,
``q_lin``/``v_lin`` in DistilBERT); for
conv nets such as EfficientNet-Lite, the 1x1 pointwise convolutions of the blocks (PEFT's
``Conv2d`` LoRA); for the 1-D time-series encoder, its block convolutions (``Conv1d`` LoRA).
``target_modules`` overrides the choice.

The artifact holds the adapter matrices (``lora.<name>``) and the head, never the frozen
weights; loading re-injects adapters into the freshly loaded backbone and copies both in, and
a state without its head is refused (a PEFT model reloaded without ``modules_to_save`` gets a
random head and predicts at chance, silently).  ``merge=True`` (or :meth:`LoRA.merge_adapters`)
folds ``W + (alpha / r) B A`` into the base weights: a plain model for export, whose artifact
loads without PEFT.

Why LoRA on 100 digit images once reached 0.282 when the strategies study reports 0.842 (issue 17):
the budget.  The study trains few-shot runs for 20 epochs (about 120 steps); a user got the default
3 epochs, which on 90 items at batch 16 are 18 optimizer steps, a tenth of them warm-up and the
rest a cosine decay to zero.  ``B`` starts at zero, so the first steps move the random head alone,
at ``head_lr`` 1e-3: 18 such steps leave the loss near chance (2.36 -> 2.12 in the issue).  What
was not the cause: the adapters cover 31 of EfficientNet-Lite0's 49 convolutions (every 1x1
expand/project convolution of the blocks, 59% of its weights); BatchNorm statistics stay the
pre-trained ones; image size (at 18 steps, 0.573 at the default 224 px and 0.663 at the study's 96 px
on inverted MNIST digits, both below the linear probe's 0.813 and 0.743).
The fix is in :class:`~.finetune.FineTune`'s budget (``min_steps``, and no early stopping on a
10-item validation split), so every member of the family gets it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import MissingDependencyError, UserInputError
from ..training.loop import isolated_rng
from ._task_head import head_tensor_names, load_task_head
from ._tuning import mark_adapted
from .base import STRATEGIES, TransferContext
from .finetune import FineTune, FineTuneParams, _check
from .params import param

PREFIX = "lora."
#: attention projections LoRA adapts, by naming convention: BERT/ViT, wav2vec2/BART/LLaMA, DistilBERT
ATTENTION_PAIRS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"))


def _peft():
    try:
        import peft
    except ImportError as e:
        raise MissingDependencyError("the lora strategy", "peft") from e
    return peft


def _tuner_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def default_targets(module: nn.Module) -> list[str]:
    """The modules LoRA adapts in ``module``, found from its layers' names and types.

    Returns:
        Module names, matched by PEFT as name suffixes: ``["query", "value"]`` for BERT/ViT;
        for conv nets, the full names of the 1x1 convolutions (``groups=1``) inside the largest
        ``nn.ModuleList`` (the repeated blocks).

    Raises:
        UserInputError: nothing recognisable; the hint names some linear layers to choose from.
    """
    linear = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    leaves = {n.rsplit(".", 1)[-1] for n in linear}
    for pair in ATTENTION_PAIRS:
        if set(pair) <= leaves:
            return list(pair)
    lists = [(sum(p.numel() for p in m.parameters()), n) for n, m in module.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 1]
    if lists:
        blocks = max(lists)[1] + "."
        # Only convolutions reached through the module tree: a layer also held elsewhere (a
        # stem kept in a plain list) would be replaced in one place and still called in the other.
        # 1-D convolutions (the time-series encoder) are adapted whatever their kernel: they are its layers.
        convs = [n for n, m in module.named_modules() if n.startswith(blocks) and m.__class__ in (nn.Conv2d, nn.Conv1d)
                 and (type(m) is nn.Conv1d or m.kernel_size == (1, 1)) and m.groups == 1]
        if convs:
            return convs
    raise UserInputError(f"lora does not know which layers of {type(module).__name__} to adapt",
                         hint="pass target_modules=[...] naming its attention projections"
                              + (f"; its linear layers include: {', '.join(linear[:6])}" if linear else ""))


def apply_lora(module: nn.Module, *, r: int, lora_alpha: float, lora_dropout: float,
               target_modules: list[str] | None = None, seed: int = 0) -> list[str]:
    """Inject LoRA adapters into ``module`` in place; only the adapters stay trainable.

    Returns:
        The target module names used (``target_modules``, or :func:`default_targets`).

    Raises:
        MissingDependencyError: PEFT is not installed.
        UserInputError: the module already has adapters, or no layer matches the targets.
    """
    peft = _peft()
    _check(not _tuner_layers(module), "the backbone already carries adapters",
           "load a fresh backbone for each fit (or load) of a lora model")
    targets = list(target_modules or default_targets(module))
    config = peft.LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
                             bias="none")
    try:
        with isolated_rng(seed):  # A is drawn at random: part of the seeded run
            peft.inject_adapter_in_model(config, module)
    except ValueError as e:  # PEFT: "Target modules ... not found in the base model"
        raise UserInputError(f"lora could not adapt the model: {e}",
                             hint="check target_modules against the model's layer names") from None
    return targets


def adapter_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of the LoRA matrices in ``module`` (names as in its state dict)."""
    return {n: p for n, p in module.named_parameters() if ".lora_" in n}


def merge_lora(module: nn.Module) -> list[str]:
    """Fold every adapter into its base layer (``W + scale * B A``) and remove the adapters.

    Returns:
        The names of the merged base weights, as in the plain model's state dict.
    """
    merged = []
    for name, layer in _tuner_layers(module):
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, layer.get_base_layer())
        merged.append(f"{name}.weight")
    if hasattr(module, "peft_config"):
        del module.peft_config
    return sorted(merged)


@dataclass
class LoRAParams(FineTuneParams):
    """:class:`FineTuneParams` plus the adapters' own; ``unfreeze`` chooses the groups whose adapters train."""

    r: int = param(8, "rank of the update (typical: 4 to 16)", ge=1)
    lora_alpha: float = param(16.0, "scale numerator: the update is (lora_alpha / r) B A (typical: twice r)", gt=0)
    lora_dropout: float = param(0.1, "dropout on the adapter's input", ge=0, lt=1)
    target_modules: list[str] | None = param(None, "names (suffixes) of the layers to adapt, e.g. [\"query\", "
                                                   "\"value\"]; null: chosen by architecture")
    merge: bool = param(False, "fold the adapters into the base weights after training (a plain model for export)")
    # LoRA trains few parameters from zero: a larger rate (BENCHMARKS.md, section lora, compares 5e-4 and 2e-3).
    lr: float = param(2e-3, "rate of the adapters (they start from zero: larger than finetune's)", gt=0, lt=1)
    layer_decay: float = param(1.0, "1: one rate for every adapter", gt=0, le=1)
    scratch_lr: float | None = param(None, "null: the random-init control trains its adapters at lr too (they "
                                           "start from zero on either backbone)", gt=0, lt=1)


@STRATEGIES.register("lora", needs="backbone",
                     summary="PEFT LoRA adapters (query/value; 1x1 convs for CNNs) and a new head; saves "
                             "adapters + head only; optional merge for export (Hu et al., ICLR 2022)")
class LoRA(FineTune):
    """LoRA adapters and a linear head, trained in the one loop; the backbone stays frozen.

    Data: labelled items of any modality, every task of :class:`FineTune` (in a joint fit the
    adapters are shared, one head per task). Shapes: items -> features ``(B, D)`` of the adapted
    backbone -> head ``Linear(D, K)``. Each adapted layer ``(out, in)`` trains ``r * (in + out)``
    parameters; ``fit_info()`` reports the trainable share of the backbone and the artifact
    size against the backbone's.

    Options: :class:`LoRAParams`.
    """

    name = "lora"
    description = ("PEFT LoRA adapters (query/value; 1x1 convs for CNNs) and a new head; saves adapters + head only; "
                   "optional merge for export (Hu et al., ICLR 2022)")
    Params = LoRAParams

    # ----- adapters ------------------------------------------------------------------------
    def _attach(self, backbone: Backbone, seed: int) -> None:
        """Inject fresh adapters into ``backbone.module`` (seeded: ``A`` is random)."""
        try:
            self.targets_ = apply_lora(backbone.module, r=self.r, lora_alpha=self.lora_alpha,
                                       lora_dropout=self.lora_dropout, target_modules=self.target_modules, seed=seed)
        except UserInputError as e:
            raise UserInputError(f"{backbone.name!r}: {e.message}", hint=e.hint) from None
        self.merged_ = False

    def _trainable_groups(self, groups):
        out = [(n, [p for p in ps if id(p) in self._adapter_ids]) for n, ps in groups]
        _check(any(ps for _, ps in out), "none of the adapters is used by the backbone's features",
               "choose target_modules on the path of forward_features")
        return out

    def _fit(self, train_ds: Dataset, y: np.ndarray, ctx: TransferContext) -> None:
        self._attach(ctx.backbone, ctx.seed)
        module = ctx.backbone.module
        self._adapter_ids = {id(p) for p in adapter_parameters(module).values()}
        try:
            super()._fit(train_ds, y, ctx)
        finally:
            del self._adapter_ids
        adapters = sum(p.numel() for p in adapter_parameters(module).values())
        base = sum(p.numel() for p in module.parameters()) - adapters
        trainable = adapters + self.info_["head_params"]  # every task's head in a joint fit
        state_bytes = sum(t.numel() * t.element_size() for t in self._trained_tensors().values())
        self.info_.update(targets=list(self.targets_), adapter_params=adapters, trainable_params=trainable,
                          backbone_params=base, trainable_share=trainable / base, state_bytes=state_bytes,
                          backbone_bytes=sum(p.numel() * p.element_size() for n, p in module.named_parameters()
                                             if ".lora_" not in n))
        if self.merge:
            self._merge()

    def merged_for_export(self) -> "LoRA":
        """One plain set of weights in the graph: the adapters merged (see :meth:`merge_adapters`)."""
        return self.merge_adapters()

    def merge_adapters(self) -> "LoRA":
        """Fold the adapters into the base weights (``W + (lora_alpha / r) B A``), in place.

        The backbone becomes a plain model of its original architecture (save it as such for
        export); predictions agree with the adapter model to float rounding. The artifact then
        holds the merged layers (``backbone.<name>``) and the head, and loads without PEFT.
        """
        self._check_fitted()
        self._merge()
        return self

    def _merge(self) -> None:
        if not self.merged_:
            names = merge_lora(self.backbone_.module)
            for model in self._peers or [self]:  # the models of a joint fit share the merged backbone
                model.trained_names_, model.merged_ = names, True
            mark_adapted(self.backbone_, self._trained_tensors())

    def _share_fit(self, driver: "FineTune") -> None:
        super()._share_fit(driver)
        self.targets_, self.merged_ = driver.targets_, driver.merged_

    # ----- persistence -------------------------------------------------------------------
    def _trained_tensors(self) -> dict[str, torch.Tensor]:
        if self.merged_:
            return super()._trained_tensors()
        out = {PREFIX + n: p.detach().cpu().clone() for n, p in adapter_parameters(self.backbone_.module).items()}
        out.update(self._head_tensors())
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone: Backbone,
                   task: str = "classification") -> "LoRA":
        """Re-inject adapters into the freshly loaded ``backbone`` and load them and the head.

        A merged state (``backbone.*`` tensors, from ``merge=True``) loads as a fine-tuned one.
        """
        _check("head.weight" in tensors and "head.bias" in tensors,
               "the lora state has no head (head.weight, head.bias): without it the model would "
               "predict with a random head", "the weights file is incomplete: save the run again")
        if any(k.startswith("backbone.") for k in tensors):
            super().load_state(tensors, classes, backbone, task=task)
            self.merged_ = True
            return self
        self.check_task(task)
        extra = sorted(k for k in tensors if not k.startswith(PREFIX) and k not in head_tensor_names(task))
        _check(not extra, f"unexpected tensors in a lora state: {', '.join(extra[:5])}")
        saved = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        _check(bool(saved), "the lora state has no adapter tensors (lora.*)")
        self._attach(backbone, 0)  # the random A is overwritten below
        own = adapter_parameters(backbone.module)
        bad = sorted(set(own) ^ set(saved)) + sorted(k for k in saved if k in own and own[k].shape != saved[k].shape)
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        _check(not bad, f"the saved adapters do not fit backbone {backbone.name!r} with r={self.r}, "
               f"targets {self.targets_}: {', '.join(bad[:5])}{more}",
               "load the run with the backbone and options it was trained with")
        head, unit = load_task_head(tensors, task, classes, backbone.num_features, self.name)
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)
        backbone.module.eval()
        self.head_, self.task_head_, self.backbone_, self.trained_names_ = head, unit, backbone, sorted(own)
        mark_adapted(backbone, tensors)
        return self._restored(classes, task, unit.thresholds)
