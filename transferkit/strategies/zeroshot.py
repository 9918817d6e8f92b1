"""``zero-shot``: classify text by its embedding similarity to descriptions of the labels.

Embedding-based zero-shot classification (the label-embedding approach compared in Yin, Hay &
Roth, "Benchmarking Zero-shot Text Classification", EMNLP 2019), with the prompt ensembling of
CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021): each class is the normalised mean embedding of its descriptions (one
or several per class) placed in several templates ("This e-mail is {description}."), and an
item goes to the class of highest calibrated score.

Raw cosines favour whichever description sits closest to text in general (on the 2002
SpamAssassin mail the issue's two descriptions sent most e-mails to "spam"), so the scores are
calibrated without labels (:mod:`._zeroshot_calibration`): by default contextually, against
content-free inputs; optionally also by class priors that EM estimates on unlabelled items (the
training items' texts at fit time, else the first batch classified).  What is estimated is kept
as tensors, so a saved run predicts the same.
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
from ..tasks.linear import softmax
from ._zeroshot_calibration import contextual_bias, em_prior, prior_bias
from .base import STRATEGIES, Strategy, TransferContext
from .params import Params, param
from .prototype import l2_normalize

DEFAULT_TEMPLATES = ("{description}", "This is {description}.", "This text is {description}.",
                     "An example of {description}.")
FORMAT_HINT = ('write NAME: DESCRIPTION pairs separated by commas, several descriptions of a label separated by '
               '"|", e.g. --labels "spam: unsolicited advertising|a scam,ham: normal personal or work e-mail" '
               '(or only names: --labels spam,ham; or a JSON object {"spam": ["advertising", "a scam"], '
               '"ham": "a normal e-mail"})')


def parse_label_descriptions(spec: str | dict) -> dict[str, list[str]]:
    """``"spam: ads|a scam,ham: normal e-mail"`` -> ``{"spam": ["ads", "a scam"], "ham": ["normal e-mail"]}``.

    Accepts a dict (name -> description or list of descriptions), its JSON text, or
    ``NAME: DESCRIPTION`` pairs separated by commas, where ``|`` separates several descriptions
    of one label; a comma inside a description is kept (a piece without a colon continues the
    description before it).  Names alone (``"spam,ham"``) describe each class by its name.  In
    the dict and JSON forms a description is taken whole (``|`` included).

    Raises:
        UserInputError: empty names or descriptions (an empty piece between two ``|`` too),
            a ``|`` in a label name, duplicates, fewer than two classes.
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
        names = [n.strip() for n, _ in pairs]
        twice = next((n for i, n in enumerate(names) if n and n in names[:i]), None)
        if twice is not None:
            raise UserInputError(f"label {twice!r} appears twice in --labels", hint=FORMAT_HINT)
        pairs = _split_alternatives(pairs)
    else:
        raise UserInputError(f"labels must be a text or a dict, got {type(spec).__name__}", hint=FORMAT_HINT)
    out: dict[str, list[str]] = {}
    for name, desc in pairs:
        name, desc = name.strip(), " ".join(desc.split())
        if not name:
            raise UserInputError("--labels has an empty label name", hint=FORMAT_HINT)
        if not desc:
            raise UserInputError(f"label {name!r} has an empty description in --labels", hint=FORMAT_HINT)
        if "|" in name and not isinstance(spec, dict):
            raise UserInputError(f"--labels has '|' in the label name {name!r}: '|' separates several descriptions "
                                 "of one label, after its 'NAME:'", hint=FORMAT_HINT)
        out.setdefault(name, []).append(desc)
    if len(out) < 2:
        raise UserInputError(f"--labels needs at least two labels, got {len(out)}", hint=FORMAT_HINT)
    return out


def _split_alternatives(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``[("spam", "ads|a scam")]`` -> ``[("spam", "ads"), ("spam", "a scam")]``; an empty alternative is refused."""
    out = []
    for name, desc in pairs:
        alternatives = desc.split("|")
        if len(alternatives) > 1 and not all(a.strip() for a in alternatives):
            raise UserInputError(f"label {name.strip()!r} has an empty description between '|' in --labels: "
                                 f"{desc.strip()!r}", hint=FORMAT_HINT)
        out += [(name, a) for a in alternatives]
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


#: ``calibration`` values: which label-free corrections of the scores apply.
CALIBRATIONS = ("contextual", "contextual+prior", "prior", "none")


@dataclass
class ZeroShotParams(Params):
    """Options of ``zero-shot``."""

    labels: str | dict | None = param(None, "label descriptions, 'spam: unsolicited advertising|a scam,ham: normal "
                                            "e-mail' ('|' between several descriptions of a label) or a JSON object "
                                            "(--labels); null: the data's class names",
                                      check=lambda v: None if v is None else _labels_ok(v))
    templates: list[str] = param(list(DEFAULT_TEMPLATES), "sentences with a {description} slot; each class "
                                                          "embedding averages every description in every template",
                                 check=_templates_ok)
    temperature: float = param(0.05, "divides the cosines before the softmax (sharpness; the prior estimate "
                                     "depends on it)", gt=0)
    # contextual alone is the default: on the SpamAssassin mail (minilm-l6) it raised accuracy with every set of
    # descriptions tried (2002, all 3000: 0.438 -> 0.499 with the two, 0.541 -> 0.722 with several; 2003,
    # 500 of them: 0.742 -> 0.794 with several), while adding the EM prior helped only once (2002, several:
    # 0.817) and pulled toward the over-predicted class where the descriptions separate the classes poorly
    # (0.427 with the two); bench_adapt.py --part zeroshot re-measures it
    calibration: str = param("contextual", "label-free correction of the scores: contextual (divide out the class "
                                           "probabilities of content-free inputs), prior (class priors estimated by "
                                           "EM on unlabelled items), contextual+prior, or none", choices=CALIBRATIONS)
    content_free: list[str] = param(["N/A", "", "[MASK]"], "the content-free inputs of contextual calibration")
    prior_min_items: int = param(20, "the fewest unlabelled items the class priors are estimated on", ge=2)


@STRATEGIES.register("zero-shot", needs="features")
class ZeroShot(Strategy):
    """Zero-shot text classification by label-description embeddings.

    Data: text; no labelled training data (a labelled or unlabelled training set may be given:
    its class names are read when ``labels`` is not set, and with a ``prior`` calibration its
    texts, never its labels, estimate the class priors). Shapes: descriptions x templates ->
    embeddings ``(T, D)`` -> per class: mean of the L2-normalised embeddings, normalised again
    -> ``(C, D)``; items -> features ``(N, D)`` normalised -> cosines ``(N, C)`` / ``temperature``
    + ``contextual_bias_ (C,)`` + ``prior_bias_ (C,)`` -> softmax.  Options: :class:`ZeroShotParams`
    (``labels`` as :func:`parse_label_descriptions` reads them).

    With a ``prior`` calibration and no training texts to estimate on (zero-shot on a test set
    alone), the priors are estimated on the first batch of at least ``prior_min_items`` items
    classified, and kept (``prior_pending_`` turns False): later predictions, and the saved run's,
    use the same bias whatever else is in their batch.
    """

    name = "zero-shot"
    description = ("no training labels: cosine to embedded label descriptions in several templates, calibrated "
                   "without labels (text; --labels 'name: description|another,...')")
    Params = ZeroShotParams
    uses_features = True
    needs_labels = False

    def fit(self, train: Dataset | None, ctx: TransferContext) -> "ZeroShot":
        """Embed the label descriptions and calibrate; ``train`` may be ``None`` or unlabelled (its
        labels are never learned from)."""
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
        E = self._embed(texts, "label descriptions", ctx)
        owner_a = np.array(owner)
        self.class_embeddings_ = l2_normalize(np.stack([E[owner_a == i].mean(0) for i in range(len(self.classes_))]))
        n_classes = len(self.classes_)
        self.info_ = {"descriptions": described, "templates": list(self.templates), "n_prompts": len(texts),
                      "labelled_training_items_used": 0, "calibration": {"method": self.calibration}}
        self.contextual_bias_ = np.zeros(n_classes)
        if "contextual" in self.calibration:
            cf = self._embed(list(self.content_free), "content-free inputs", ctx)
            self.contextual_bias_, p_cf = contextual_bias(cf @ self.class_embeddings_.T / self.temperature)
            self.info_["calibration"]["content_free_probabilities"] = dict(zip(self.classes_, p_cf.round(4).tolist()))
        self.prior_bias_ = np.zeros(n_classes)
        self.prior_pending_ = "prior" in self.calibration
        if self.prior_pending_ and train is not None and len(train) >= self.prior_min_items:
            # the training items' texts only: labels, where train has them, stay unread
            self._estimate_prior(self._logits(ctx.features(train)), f"the {len(train)} training items' texts")
        elif self.prior_pending_:
            self.info_["calibration"]["priors"] = "not yet estimated: on the first batch of at least " \
                                                  f"{self.prior_min_items} items classified"
        self.task_, self.thresholds_, self.fitted_ = "classification", None, True
        return self

    def _embed(self, texts: list[str], source: str, ctx: TransferContext) -> np.ndarray:
        """``texts`` -> L2-normalised embeddings ``(len(texts), D)`` float64."""
        return l2_normalize(ctx.features(Dataset(modality="text", inputs=texts, source=source)).astype(np.float64))

    def _logits(self, features: np.ndarray) -> np.ndarray:
        """Backbone features ``(N, D)`` -> contextually corrected logits ``(N, C)`` (no prior)."""
        Z = l2_normalize(np.asarray(features, dtype=np.float64))
        return Z @ self.class_embeddings_.T / self.temperature + self.contextual_bias_

    def _estimate_prior(self, logits: np.ndarray, where: str) -> None:
        priors, iterations = em_prior(logits)
        self.prior_bias_, self.prior_pending_ = prior_bias(priors), False
        self.info_.setdefault("calibration", {"method": self.calibration})["priors"] = {
            "estimated_on": where, "labels_read": False, "em_iterations": iterations,
            "classes": dict(zip(self.classes_, priors.round(4).tolist()))}

    def check_labels(self, data: Dataset) -> None:
        """Refuse evaluation data whose labels ``labels`` does not describe (see :func:`check_labels_match`)."""
        check_labels_match(self, data)

    def _fit(self, train: Dataset, y: np.ndarray, ctx: TransferContext) -> None:  # pragma: no cover - fit() above
        raise NotImplementedError

    def _predict_proba(self, data: Dataset, ctx: TransferContext) -> np.ndarray:
        logits = self._logits(ctx.features(data))
        if self.prior_pending_ and len(data) >= self.prior_min_items:
            self._estimate_prior(logits, f"the first {len(data)} items classified (transductive; labels not read)")
            ctx.notes.append(f"zero-shot: class priors estimated without labels on the {len(data)} items classified: "
                             + ", ".join(f"{c} {p:.2f}" for c, p in
                                         self.info_["calibration"]["priors"]["classes"].items()))
        return softmax(np.asarray(logits + self.prior_bias_, dtype=np.float64))

    def torch_head(self) -> torch.nn.Module:
        from .prototype import CosineHead

        self._check_fitted()
        return CosineHead(self.class_embeddings_, None, self.temperature,
                          log_prior=self.contextual_bias_ + self.prior_bias_).eval()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"class_embeddings": torch.from_numpy(self.class_embeddings_),
                "contextual_bias": torch.from_numpy(np.asarray(self.contextual_bias_, dtype=np.float64)),
                "prior_bias": torch.from_numpy(np.asarray(self.prior_bias_, dtype=np.float64)),
                "prior_pending": torch.tensor([int(self.prior_pending_)], dtype=torch.uint8)}

    def load_state(self, tensors: dict[str, torch.Tensor], classes: list[str], backbone=None,
                   task: str = "classification") -> "ZeroShot":
        E = tensors["class_embeddings"].numpy()
        if E.ndim != 2 or E.shape[0] != len(classes):
            raise UserInputError(f"the saved class embeddings have shape {E.shape}, expected ({len(classes)}, D)")
        biases = {}
        for key in ("contextual_bias", "prior_bias"):
            # runs saved before calibration existed have neither: their scores were uncorrected
            b = tensors[key].numpy() if key in tensors else np.zeros(len(classes))
            if b.shape != (len(classes),):
                raise UserInputError(f"the saved {key} has shape {tuple(b.shape)}, expected ({len(classes)},)")
            biases[key] = b.astype(np.float64)
        self.class_embeddings_ = E
        self.contextual_bias_, self.prior_bias_ = biases["contextual_bias"], biases["prior_bias"]
        self.prior_pending_ = bool(tensors["prior_pending"].item()) if "prior_pending" in tensors else False
        return self._restored(classes, task)
