"""The measured figures that user-facing messages cite, read from ``transferkit/studies.json``.

A message that justifies a choice with a measurement ("fine-tuning from layer 4 reached 0.304
where the probe reached 0.856") reads the figures here instead of copying them, so that they
live in one place, written by the benchmark that measured them, and a rerun of that benchmark
updates every message at once.

The file's shape (JSON, one object)::

    {
      "<study name>": {                       # e.g. "inner_layer_finetune"
        "source":  "benchmarks/bench_X.py",   # required: the script that measured the figures
        "section": "X",                       # the BENCHMARKS.md anchor where they are shown
        "commit":  "85a0fab",                 # required: the transferkit commit it ran on
        "date":    "2026-12-06 23:30 UTC",    # required: when it ran
        ...                                   # the figures: any JSON, shaped for the messages
      },
      ...
    }

The studies read today, and the figures their readers expect:

* ``inner_layer_finetune``: ``layers: {"<layer>": {"finetune": acc, "probe": acc}}`` plus
  ``task``, ``variant``, ``backbone``, ``train_items``, ``test_items``, ``epochs``
  (``benchmarks/bench_transferability.py --finetune``; :mod:`transferkit.auto` and the
  ``finetune`` strategy's note on inner layers).
* ``auto_pick``: ``variants: [{"task", "variant", "train_items", "auto": {"candidate",
  "accuracy"}, "best": {...}, "logme": {...}}]``: per task variant, the probe accuracy of
  ``--model auto``'s pick, of the best candidate and of LogME's pick
  (``benchmarks/bench_transferability.py``; :mod:`transferkit.auto`).
* ``strategies``: ``seeds`` and ``variants: [{"task", "variant", "backbone", "train_items",
  "accuracy": {"<strategy>": mean accuracy}}]`` (``benchmarks/bench_strategies.py``;
  :mod:`transferkit.auto`).
* ``lora_share``: ``backbone``, ``rank``, ``targets``, ``trainable_params``, ``backbone_params``,
  ``trainable_share`` (adapters + head over the backbone's parameters, a fraction)
  (``benchmarks/bench_finetune.py``, LoRA part; :mod:`transferkit.auto`).

Benchmarks write an entry with :func:`write_study`; code reads it with :func:`study` or
:func:`figure`.  The file is read once per process.
"""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ._files import atomic_write_bytes
from .errors import TransferkitError

__all__ = ["study", "figure", "write_study", "MissingStudyError", "REQUIRED_FIELDS", "STUDIES_FILE"]

#: Every study names where its figures came from.
REQUIRED_FIELDS = ("source", "commit", "date")
#: The file in the source tree that benchmarks write (the installed copy is read through
#: :mod:`importlib.resources`, so a zipped install works too).
STUDIES_FILE = Path(__file__).with_name("studies.json")


class MissingStudyError(TransferkitError, LookupError):
    """A study, or a figure inside one, is not in ``studies.json``: a packaging or code bug, not
    something a user caused; the message names the key and the benchmark that writes it."""


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("studies.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise MissingStudyError("transferkit/studies.json must hold one JSON object keyed by study name")
    return data


def study(name: str) -> dict[str, Any]:
    """The entry of study ``name``: its figures plus ``source``, ``commit`` and ``date``.

    Returns:
        A copy (callers may change it freely).

    Raises:
        MissingStudyError: no such study, or it lacks a required field.
    """
    data = _load()
    if name not in data:
        known = ", ".join(sorted(data)) or "none"
        raise MissingStudyError(f"study {name!r} is not in transferkit/studies.json (it has: {known}); "
                                "run the benchmark that measures it to write it (see transferkit/_studies.py)")
    entry = data[name]
    missing = [f for f in REQUIRED_FIELDS if not isinstance(entry, dict) or f not in entry]
    if missing:
        raise MissingStudyError(f"study {name!r} in transferkit/studies.json lacks {', '.join(missing)}")
    return copy.deepcopy(entry)


def figure(name: str, *path: str | int) -> Any:
    """One figure of a study, by its path: ``figure("inner_layer_finetune", "layers", "4", "probe")``.

    Raises:
        MissingStudyError: the study or any step of the path is missing; the message names the path.
    """
    value: Any = study(name)
    for i, key in enumerate(path):
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{k!r}]" for k in path[: i + 1])
            raise MissingStudyError(f"study {name!r} in transferkit/studies.json has no {where} (source: "
                                    f"{study(name)['source']}); rerun it or fix the code that reads it") from None
    return value


def write_study(name: str, figures: dict[str, Any], *, source: str, commit: str, date: str,
                section: str | None = None, path: str | Path = STUDIES_FILE) -> None:
    """Add or replace study ``name`` in ``studies.json`` (atomically; other studies are kept).

    Args:
        figures: the measured figures (JSON-able), shaped as the readers listed above expect.
        source: the benchmark script, e.g. ``"benchmarks/bench_strategies.py"``.
        commit, date: the transferkit commit and the time the figures were measured on.
        section: the BENCHMARKS.md anchor that shows them.
        path: the file to write (the package's own by default).
    """
    reserved = set(REQUIRED_FIELDS) | {"section"}
    clash = sorted(reserved & set(figures))
    if clash:
        raise ValueError(f"figures must not use the reserved keys {', '.join(clash)}")
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    entry: dict[str, Any] = {"source": source, **({"section": section} if section else {}),
                             "commit": commit, "date": date, **figures}
    data[name] = json.loads(json.dumps(entry))  # fails here, not half-way through the file, if not JSON-able
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    if path.resolve() == STUDIES_FILE.resolve():
        _load.cache_clear()
