"""``zero-shot``: classify text by its embedding similarity to descriptions of the labels.

Embedding-based zero-shot classification (the label-embedding approach compared in Yin, Hay &
Roth, "Benchmarking Zero-shot Text Classification", EMNLP 2019), with the prompt ensembling of
CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021): each
class is the normalised mean embedding of its descriptions placed in several templates
("This e-mail is {description}."), and an item goes to the class of highest cosine.
No labelled training item is used: labels, where the data has them, serve only for
evaluation (and, when no descriptions are given, as the class names).
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import UserInputError
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param
from .probe import softmax
from .prototype import l2_normalize

DEFAULT_TEMPLATES = ("{description}", "This is {description}.", "This text is {description}.",
                     "An example of {description}.")
FORMAT_HINT = ('write NAME: DESCRIPTION pairs separated by commas, e.g. --labels "spam: unsolicited '
               'advertising,ham: normal personal or work e-mail" (or only names: --labels spam,ham; or a JSON '
               'object {"spam": ["advertising", "a scam"], "ham": "a normal e-mail"})')


def parse_label_descriptions(spec: str | dict) -> dict[str, list[str]]:
    """``"spam: unsolicited advertising,ham: normal e-mail"`` -> ``{"spam": [...], "ham": [...]}``.

    Accepts a dict (name -> description or list of descriptions), its JSON text, or
    ``NAME: DESCRIPTION`` pairs separated by commas; a comma inside a description is kept
    (a piece without a colon continues the description before it).  Names alone
    (``"spam,ham"``) describe each class by its name.

    Raises:
        UserInputError: empty names or descriptions, duplicates, fewer than two classes.
    """
    if isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            spec = json.loads(spec)
        except ValueError as e:
            raise UserInputError(f"--labels looks like JSON but does not parse: {e}", hint=FORMAT_HINT) from None
    if isinstance(spec, dict):
        pairs = []
        for k, v in spec.items():
            descs = v if isinstance(v, list) else [v]
            if not all(isinstance(d, str) for d in descs) or not descs:
                raise UserInputError(f"the description of label {k!r} must be a text or a list of texts, "
                                     f"got {v!r}", hint=FORMAT_HINT)
            pairs += [(str(k), d) for d in descs]
    elif isinstance(spec, str):
        pieces = [p for p in spec.split(",")]
        if not any(":" in p for p in pieces):
            pairs = [(p, p) for p in pieces]
        else:
            if ":" not in pieces[0]:
                raise UserInputError(f"--labels must start with NAME: DESCRIPTION, got {pieces[0].strip()!r}",
                                     hint=FORMAT_HINT)
            pairs = []
            for p in pieces:
                if ":" in p:
                    name, desc = p.split(":", 1)
                    pairs.append((name, desc))
                else:  # a comma inside the previous description
                    pairs[-1] = (pairs[-1][0], pairs[-1][1] + "," + p)
    else:
        raise UserInputError(f"labels must be a text or a dict, got {type(spec).__name__}", hint=FORMAT_HINT)
    out: dict[str, list[str]] = {}
    for name, desc in pairs:
        name, desc = name.strip(), " ".join(desc.split())
        if not name:
            raise UserInputError("--labels has an empty label name", hint=FORMAT_HINT)
        if not desc:
            raise UserInputError(f"label {name!r} has an empty description in --labels", hint=FORMAT_HINT)
        if name in out and not isinstance(spec, dict):
            raise UserInputError(f"label {name!r} appears twice in --labels", hint=FORMAT_HINT)
        out.setdefault(name, []).append(desc)
    if len(out) < 2:
        raise UserInputError(f"--labels needs at least two labels, got {len(out)}", hint=FORMAT_HINT)
    return out


def check_labels_match(strategy: "ZeroShot", data: Dataset) -> None:
    """Every label of the (labelled) evaluation data is described, and every described label occurs.

    A described label that no item has is most often a misspelling, which would silently
    become a class no item can be right about.
    """
    if strategy.labels is None or data.labels is None:
        return
    described = list(parse_label_descriptions(strategy.labels))
    present = sorted(set(data.labels))
    missing = [c for c in present if c not in described]
    unused = [c for c in described if c not in present]
    if not missing and not unused:
        return
    parts = []
    if missing:
        parts.append(f"the data of {data.source} has label(s) that --labels does not describe: {', '.join(missing)}")
    if unused:
        parts.append(f"--labels names label(s) that no item has: {', '.join(unused)}")
    guesses = [f"{m[0]!r} instead of {u!r}" for u in unused
               for m in [difflib.get_close_matches(u, missing, n=1, cutoff=0.5)
                         or [c for c in missing if c.casefold() == u.casefold()]] if m]
    hint = (f"did you mean {', '.join(guesses)}? (labels are case-sensitive)" if guesses
            else f"the data's labels are: {', '.join(present)}")
    raise UserInputError("; ".join(parts), hint=hint)


def _labels_ok(v: str | dict) -> str | None:
    parse_label_descriptions(v)  # raises with the format's hint
    return None


def _templates_ok(v: list[str]) -> str | None:
    return None if all("{description}" in t for t in v) else "a list of texts with a {description} slot"


@dataclass
class ZeroShotParams(Params):
    """Options of ``zero-shot``."""

    labels: str | dict | None = param(None, "label descriptions, 'spam: unsolicited advertising,ham: normal e-mail' "
                                            "or a JSON object (--labels); null: the data's class names",
                                      check=lambda v: None if v is None else _labels_ok(v))
    templates: list[str] = param(list(DEFAULT_TEMPLATES), "sentences with a {description} slot; each class "
                                                          "embedding averages every description in every template",
                                 check=_templates_ok)
    temperature: float = param(0.05, "divides the cosines before the softmax (sharpness only)", gt=0)


@STRATEGIES.register("zero-shot", needs="features")
class ZeroShot(Strategy):
    """Zero-shot text classification by label-description embeddings.

    Data: text; no labelled training data (a labelled or unlabelled training set may be given:
    only its class names are read, when ``labels`` is not set). Shapes: descriptions x
    templates -> embeddings ``(T, D)`` -> per class: mean of the L2-normalised embeddings,
    normalised again -> ``(C, D)``; items -> features ``(N, D)`` normalised -> cosines
    ``(N, C)`` / ``temperature`` -> softmax.  Options: :class:`ZeroShotParams`
    (``labels`` as :func:`parse_label_descriptions` reads them).
    """

    name = "zero-shot"
    description = ("no training labels: cosine to embedded label descriptions in several templates "
                   "(text; --labels 'name: description,...')")
    Params = ZeroShotParams
    uses_features = True
    needs_labels = False

    def fit(self, train: Dataset | None, ctx: TransferContext) -> "ZeroShot":
        """Embed the label descriptions; ``train`` may be ``None`` or unlabelled (it is not learned from)."""
        if train is not None:
            self.check_task(train.task)
        if ctx.backbone is not None and ctx.backbone.modality != "text":
            raise UserInputError(f"zero-shot compares texts with label descriptions; this backbone takes "
                                 f"{ctx.backbone.modality}", hint="use a text model, or a strategy that trains")
        if self.labels is not None:
            described = parse_label_descriptions(self.labels)
        elif train is not None and train.labels and len(set(train.labels)) >= 2:
            described = {c: [c] for c in sorted(set(train.labels))}
        else:
            raise UserInputError("zero-shot needs the labels to choose from",
                                 hint=f"pass labels (--labels): {FORMAT_HINT}")
        self.classes_ = sorted(described)
        texts, owner = [], []
        for i, c in enumerate(self.classes_):
            for d in described[c]:
                for t in self.templates:
                    texts.append(t.replace("{description}", d))
                    owner.append(i)
        E = l2_normalize(ctx.features(Dataset(modality="text", inputs=texts, source="label descriptions"))
                         .astype(np.float64))
        owner_a = np.array(owner)
        self.class_embeddings_ = l2_normalize(np.stack([E[owner_a == i].mean(0) for i in range(len(self.classes_))]))
        self.info_ = {"descriptions": described, "templates": list(self.templates), "n_prompts": len(texts),
                      "labelled_training_items_used": 0}
        self.task_, self.thresholds_, self.fitted_ = "classification", None, True
        return self

    def check_labels(self, data: Dataset) -> None:
        """Refuse evaluation data whose labels ``labels`` does not describe (see :func:`check_labels_match`)."""
        check_labels_match(self, data)

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:  # pragma: no cover - fit() above
        raise NotImplementedError

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        Z = l2_normalize(ctx.features(data).astype(np.float64))
        return softmax(Z @ self.class_embeddings_.T / self.temperature)

    def torch_head(self) -> torch.nn.Module:
        from .prototype import CosineHead

        self._check_fitted()
        return CosineHead(self.class_embeddings_, None, self.temperature).eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"class_embeddings": torch.from_numpy(self.class_embeddings_)}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "ZeroShot":
        E = tensors["class_embeddings"].numpy()
        if E.ndim != 2 or E.shape[0] != len(classes):
            raise UserInputError(f"the saved class embeddings have shape {E.shape}, expected ({len(classes)}, D)")
        self.class_embeddings_ = E
        return self._restored(classes, task)
