"""The items a student learns from in ``transferkit distill``, and what the teacher says of each.

Besides the teacher run's own labelled training items, a student can learn from items that
have no label but do have the teacher's soft label (Hinton et al. 2015 distil on a "transfer
set"; Ba & Caruana 2014 on unlabelled data): items the user gives (``--unlabelled``), and,
for text, cheap views of the training items (``--text-views``): a random window of the text's
words, or the text with some sentences dropped.  An e-mail that the backbone cuts after its
first windows shows the student its later parts this way, each with what the teacher makes of
it.  (Images need no copies: the fine-tuning loop augments each batch, crop and flip.)

The teacher is run once over the whole set: its probabilities, and where its prediction is a
head on backbone features (``Strategy.torch_head``), its pooled features too, which the
student's feature-matching term reads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.dataset import Dataset
from .errors import UserInputError, shown
from .predict import _read_inputs

# A sentence ends at . ! or ? followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")


def text_views(text: str, n: int, rng: np.random.Generator) -> list[str]:
    """Up to ``n`` distinct views of ``text``, none equal to it: even ones a window of 40-90% of
    its words at a random offset, odd ones the text with each sentence dropped with probability
    0.3 (at least one dropped, one kept; texts of at most 2 sentences get a window instead).
    Texts of fewer than 8 words give none (a view would say nothing)."""
    words = text.split()
    if len(words) < 8:
        return []
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    out: list[str] = []
    for k in range(n):
        if k % 2 == 1 and len(sentences) > 2:
            keep = rng.random(len(sentences)) >= 0.3
            if keep.all():  # a view that drops nothing would only reformat the text
                keep[rng.integers(len(sentences))] = False
            if not keep.any():
                keep[rng.integers(len(sentences))] = True
            view = "\n".join(s for s, kept in zip(sentences, keep) if kept)
        else:
            size = max(4, int(round(len(words) * rng.uniform(0.4, 0.9))))
            start = int(rng.integers(0, len(words) - size + 1))
            view = " ".join(words[start:start + size])
        if view.strip() and view != text and view not in out:
            out.append(view)
    return out


def read_unlabelled(teacher, path: str | Path) -> Dataset:
    """The items of a table, folder or file of the teacher's modality, read with the teacher run's
    text columns or file-path column (any label column is ignored)."""
    if not Path(path).exists():
        raise UserInputError(f"the unlabelled data {shown(path)} does not exist",
                             hint="give a table (or, for images and audio, a folder) of items like the training data")
    ds = _read_inputs(teacher, [str(path)], None, skip_bad=False)
    if len(ds) == 0:
        raise UserInputError(f"the unlabelled data {shown(path)} holds no items",
                             hint="give a table (or folder) with at least a few items")
    return ds


@dataclass
class DistillationSet:
    """The student's training items: the teacher's labelled training items first, then the rest.

    Attributes:
        data: all items; labels are the true ones for the first ``n_labelled``, the teacher's
            most probable class for the others (they stratify nothing: only for bookkeeping).
        n_labelled: how many items (the first) carry a real label.
        sources: ``content hash -> content hash of the labelled item it was made from`` for text
            views, ``-> None`` for unlabelled items; labelled items are absent.
        proba: ``(N, C)`` teacher probabilities, class order of ``classes``.
        features: ``(N, D_teacher)`` teacher pooled features, or ``None`` (a teacher whose
            prediction is not a head on backbone features).
        counts: ``{"labelled", "views", "unlabelled", "unlabelled_dropped"}``.
    """

    data: Dataset
    n_labelled: int
    sources: dict[str, str | None]
    proba: np.ndarray
    features: np.ndarray | None
    counts: dict[str, int]


def teacher_outputs(teacher, data: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N, C)`` probabilities and ``(N, D)`` pooled features (``None`` where the teacher has no
    head on features), from one pass of the teacher's backbone."""
    try:
        head = teacher.strategy.torch_head()
    except UserInputError:
        return teacher.predict_proba(data), None
    feats = np.asarray(teacher.ctx.features(data), dtype=np.float32)
    with torch.no_grad():
        logits = head.cpu()(torch.as_tensor(feats)).double()
    return torch.softmax(logits, dim=1).numpy(), feats


def build_set(teacher, train_ds: Dataset, test_ds: Dataset, *, views: int = 0, unlabelled: str | Path | None = None,
              seed: int = 0, log=print) -> DistillationSet:
    """The labelled training items, ``views`` text views of each, and the ``unlabelled`` items
    (those equal to a training or test item of the teacher's split are left out: the test items
    must stay unseen for the comparison to mean something), each with the teacher's outputs.

    Raises:
        UserInputError: views asked for a model that does not read text, a missing or empty
            unlabelled source, or one of another modality.
    """
    if views and train_ds.modality != "text":
        raise UserInputError(f"text views make copies of texts; this teacher reads {train_ds.modality}",
                             hint="leave --text-views at 0: the training loop already augments images "
                                  "(crop and flip) for a student of images")
    seen = set(train_ds.content_hashes())
    extra_inputs, sources = [], {}
    rng = np.random.default_rng(seed)
    for text, h in zip(train_ds.inputs if views else (), train_ds.content_hashes()):
        for v in text_views(text, views, rng):
            vds = Dataset(modality="text", inputs=[v])
            vh = vds.content_hashes()[0]
            if vh not in seen:
                seen.add(vh)
                extra_inputs.append(v)
                sources[vh] = h
    n_views = len(extra_inputs)
    n_unl = dropped = 0
    if unlabelled is not None:
        uds = read_unlabelled(teacher, unlabelled)
        test_hashes = set(test_ds.content_hashes())
        for x, h in zip(uds.inputs, uds.content_hashes()):
            if h in seen or h in test_hashes:
                dropped += 1
                continue
            seen.add(h)
            extra_inputs.append(x)
            sources[h] = None
            n_unl += 1
        if dropped:
            log(f"left out {dropped} unlabelled item(s) that are training or test items of the teacher's split "
                "(or repeat another)")
    log(f"teacher outputs on {len(train_ds)} labelled, {n_views} text-view and {n_unl} unlabelled items …")
    whole = Dataset(modality=train_ds.modality, inputs=list(train_ds.inputs) + extra_inputs,
                    sampling_rate=train_ds.sampling_rate)
    proba, feats = teacher_outputs(teacher, whole)
    classes = teacher.classes
    labels = list(train_ds.labels) + [classes[int(k)] for k in proba[len(train_ds):].argmax(1)]
    data = Dataset(modality=train_ds.modality, inputs=whole.inputs, labels=labels, source=train_ds.source,
                   sampling_rate=train_ds.sampling_rate)
    return DistillationSet(data=data, n_labelled=len(train_ds), sources=sources, proba=proba, features=feats,
                           counts={"labelled": len(train_ds), "views": n_views, "unlabelled": n_unl,
                                   "unlabelled_dropped": dropped})
