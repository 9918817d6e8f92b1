"""The replay memory: a bounded, class-balanced reservoir of earlier items.

Each class gets an equal share of the ``capacity`` slots (the remainder to the classes listed
first), and within a class the slots hold a uniform sample of every item of that class seen so
far: reservoir sampling (Vitter 1985, "Algorithm R") per class, counting the items seen in
``seen``.  When a new class arrives the shares shrink and each class drops a uniform random
subset of its slots, which leaves a uniform sample.  This is the class-balanced reservoir of
Chaudhry et al., "On Tiny Episodic Memories in Continual Learning" (2019).

What is kept of an item (``kind``): ``"items"``, the reference to it (the text itself, or the
image/audio file's path: small, but the files must stay where they are), or ``"features"``, its
backbone features ``(D,)`` (the items themselves may be deleted; the features are tied to the
backbone).  Either way each slot lists the item's label, origin (``file:line``) and content hash,
so the run says exactly what it remembers.  Saved as JSON plus, for features, one float32
safetensors tensor: never a pickle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserInputError

KINDS = ("items", "features")


@dataclass
class ReplayMemory:
    """Attributes:
        capacity: the most slots (items) kept, all classes together.
        kind: ``"items"`` or ``"features"`` (see the module docstring).
        slots: one dict per kept item: ``label``, ``origin``, ``hash`` and, for ``items``,
            ``input`` (the text or the file path).
        features: ``(len(slots), D)`` float32, aligned with ``slots`` (kept for both kinds while
            in memory; saved only for ``features``).
        seen: items of each class offered so far (the reservoir's counts).
    """

    capacity: int
    kind: str = "items"
    slots: list[dict[str, Any]] = field(default_factory=list)
    features: np.ndarray | None = None
    seen: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.capacity) < 1:
            raise UserInputError(f"the replay memory needs at least 1 slot, got {self.capacity}",
                                 hint="--memory N with N >= 1, e.g. --memory 200")
        if self.kind not in KINDS:
            raise UserInputError(f"memory_kind must be one of {', '.join(KINDS)}, got {self.kind!r}",
                                 hint="items: references to the texts or files; features: their backbone features")

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def labels(self) -> list[str]:
        return [s["label"] for s in self.slots]

    def per_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lab in self.labels:
            out[lab] = out.get(lab, 0) + 1
        return dict(sorted(out.items()))

    def quotas(self, classes: list[str]) -> dict[str, int]:
        """Slots per class: ``capacity // C`` each, the remainder one each to the first classes."""
        base, extra = divmod(int(self.capacity), max(len(classes), 1))
        return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}

    def offer(self, inputs: list[Any], labels: list[str], origins: list[str], hashes: list[str],
              features: np.ndarray, seed: int) -> None:
        """Offer new items (the training items of a step, ``features (N, D)``): each class's
        reservoir takes each item with probability ``quota / seen``, after the shares shrank for
        the classes that are new.

        Raises:
            UserInputError: ``kind="items"`` and an item is an in-memory array (no reference to keep).
        """
        if self.kind == "items" and any(not isinstance(x, str) for x in inputs):
            raise UserInputError("a replay memory of kind items keeps references to texts or files, and these "
                                 "items are arrays in memory", hint="--param memory_kind=features keeps their "
                                                                    "features instead")
        rng = np.random.default_rng([int(seed), len(self.seen)])
        classes = list(dict.fromkeys([*self.seen, *sorted(set(labels))]))
        quota = self.quotas(classes)
        feats = np.asarray(features, dtype=np.float32)
        kept: dict[str, list[tuple[dict[str, Any], np.ndarray]]] = {c: [] for c in classes}
        for k, s in enumerate(self.slots):
            kept[s["label"]].append((s, self.features[k]))
        for c in classes:  # shrink: a uniform subset of a uniform sample stays uniform
            if len(kept[c]) > quota[c]:
                keep = np.sort(rng.choice(len(kept[c]), quota[c], replace=False))
                kept[c] = [kept[c][i] for i in keep]
        for i in rng.permutation(len(inputs)):  # Algorithm R, per class
            c = labels[i]
            self.seen[c] = self.seen.get(c, 0) + 1
            slot = {"label": c, "origin": origins[i], "hash": hashes[i]}
            if self.kind == "items":
                slot["input"] = inputs[i]
            entry = (slot, feats[i])
            if len(kept[c]) < quota[c]:
                kept[c].append(entry)
            else:
                j = int(rng.integers(self.seen[c]))
                if j < quota[c]:
                    kept[c][j] = entry
        flat = [e for c in classes for e in kept[c]]
        self.slots = [s for s, _ in flat]
        self.features = np.stack([f for _, f in flat]).astype(np.float32) if flat else None

    # ----- files -----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """``memory.json``: what the run remembers, item by item."""
        return {"capacity": int(self.capacity), "kind": self.kind, "n": len(self), "per_class": self.per_class(),
                "seen": dict(self.seen), "slots": self.slots,
                "features_file": "memory.safetensors" if self.kind == "features" else None}

    def tensors(self) -> dict[str, Any]:
        """``memory.safetensors`` (kind ``features`` only): ``features (M, D)`` float32."""
        import torch

        if self.kind != "features" or self.features is None:
            return {}
        return {"features": torch.from_numpy(np.ascontiguousarray(self.features))}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], features: np.ndarray | None,
                      capacity: int | None = None) -> "ReplayMemory":
        """A memory read back (``features``: from ``memory.safetensors``, or recomputed from the
        ``items`` references by the caller), with a new ``capacity`` if given (shrunk at the next
        :meth:`offer`)."""
        mem = cls(capacity=int(capacity or manifest["capacity"]), kind=manifest.get("kind", "items"),
                  slots=list(manifest.get("slots") or []), features=features,
                  seen={str(k): int(v) for k, v in (manifest.get("seen") or {}).items()})
        if mem.slots and (features is None or len(features) != len(mem.slots)):
            raise UserInputError(f"the replay memory lists {len(mem.slots)} items but "
                                 f"{0 if features is None else len(features)} feature rows",
                                 hint="memory.json and memory.safetensors come from different runs: update from "
                                      "an intact run")
        return mem
