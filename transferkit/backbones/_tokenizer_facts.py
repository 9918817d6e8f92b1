"""What a text backbone's cache key and chunking need from its tokenizer, memoised on disk.

Building a transformers tokenizer costs about a second (importing transformers, reading the
vocabulary), and a fit whose features are all cached needs only three facts from it: its class
name and lowercase flag (part of the feature cache key) and the special token ids around one
sequence (the room for content in a chunk).  They are computed from the real tokenizer once and
kept in ``<cache root>/tokenizer_facts.json``, keyed by the sha256 of the model folder's files
(memoised by path, size and mtime, so a look-up only stats them), the transformers version and
``trust_remote_code``: an edited tokenizer file or another transformers gives a new entry, never
stale facts.  The memo is JSON only; a damaged or unwritable one costs a tokenizer build.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .._files import cache_root, files_sha256, write_json

MEMO_NAME = "tokenizer_facts.json"
FIELDS = ("tokenizer", "lowercase", "prefix", "suffix")


def facts_of(tok: Any) -> dict[str, Any]:
    """The facts of a built tokenizer: class name, lowercase flag, and the ids it puts before
    (``prefix``) and after (``suffix``) one sequence ([CLS] / [SEP] for BERT)."""
    bare = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    at = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
    return {"tokenizer": type(tok).__name__, "lowercase": bool(getattr(tok, "do_lower_case", False)),
            "prefix": [int(t) for t in full[:at]], "suffix": [int(t) for t in full[at + len(bare):]]}


def _memo_key(model_dir: Path, trust_remote_code: bool) -> str | None:
    try:
        files = [p for p in Path(model_dir).iterdir() if p.is_file()]
        version = metadata.version("transformers")
    except (OSError, metadata.PackageNotFoundError):
        return None
    return f"{files_sha256(files)}|transformers {version}|remote code {bool(trust_remote_code)}"


def tokenizer_facts(model_dir: Path, trust_remote_code: bool, build: Callable[[], Any]) -> dict[str, Any]:
    """The tokenizer facts of the model in ``model_dir`` (see :func:`facts_of`): read from the memo,
    else computed from ``build()`` (the tokenizer) and written to it."""
    key = _memo_key(model_dir, trust_remote_code)
    path = cache_root() / MEMO_NAME
    try:
        memo = json.loads(path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    known = memo.get(key) if key else None
    if isinstance(known, dict) and all(f in known for f in FIELDS):
        return known
    facts = facts_of(build())
    if key:
        memo[key] = facts
        try:
            write_json(path, memo)
        except OSError:
            pass  # a read-only cache only costs a tokenizer build next time
    return facts
