"""Typed strategy hyper-parameters: each option declared once, in a dataclass (as PEFT's configs).

A strategy's ``Params`` is a dataclass whose fields are made by :func:`param`: the default, the
allowed range or choices, and a one-line help.  From that one declaration :func:`build_params`
rejects unknown names with the closest suggestion, coerces values given as JSON or as
command-line text (``--param merge=true``, ``--param Cs=0.1,1``) by the field's type, checks
ranges and choices, and :func:`describe_params` lists everything for ``transferkit strategies``.

Types understood: ``int``, ``float``, ``bool``, ``str``, ``None``, ``dict``, ``list[X]`` (never
empty), ``Literal[...]`` and unions of these.  Values are stored in their JSON shape (lists,
never tuples), so ``get_params()`` survives ``json.dumps``/``json.loads`` unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Union

from ..errors import UserInputError

__all__ = ["Params", "param", "build_params", "describe_params", "type_text", "fraction_or_steps"]

_KEY = "transferkit"


@dataclass(frozen=True)
class Spec:
    """What a field allows besides its type: bounds on every number in it, choices for texts,
    and a free check for what neither can say (``check(value) -> None`` or what is allowed)."""

    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None


def param(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, choices: tuple[str, ...] | list[str] | None = None,
          check: Callable[[Any], str | None] | None = None) -> Any:
    """A field of a ``Params`` dataclass: its default and what it allows.

    Args:
        default: the default value (a list or dict default is copied for every instance).
        help: one line for ``transferkit strategies`` and the hint of an error.
        ge, gt, le, lt: bounds on every number of the value (a scalar, or each item of a list).
        choices: allowed texts (for a ``str`` field, or the ``str`` part of a union).
        check: a last check of the coerced value, returning ``None`` or what is allowed.
    """
    spec = Spec(help, ge, gt, le, lt, tuple(choices) if choices is not None else None, check)
    meta = {_KEY: spec}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class Params:
    """Base of every strategy's parameter dataclass (no options: strategies without any)."""

    owner: ClassVar[str] = "strategy"

    @classmethod
    def names(cls) -> list[str]:
        """Option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        """Checks across options (a subclass overrides it); raises :class:`UserInputError`."""

    def as_dict(self) -> dict[str, Any]:
        """Every option, JSON-shaped."""
        return {n: copy.deepcopy(getattr(self, n)) for n in self.names()}


def fraction_or_steps(v: Any) -> str | None:
    """A ``check`` for warm-up: a share of the steps in [0, 1) (a float) or a number of steps (an int)."""
    ok = (isinstance(v, float) and 0 <= v < 1) or (_is_int(v) and v >= 0)
    return None if ok else "a fraction in [0, 1) or a number of steps >= 0"


# ----- coercion -------------------------------------------------------------------------------------
class _Bad(Exception):
    """The value does not fit the type (internal; turned into a UserInputError naming the option)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TRUE, _FALSE = ("true",), ("false",)  # JSON's words, in any case ("True" from Python habits)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _exact(tp: Any, v: Any) -> bool:
    """Whether ``v`` already has type ``tp`` (a union tries these first, so ``5`` stays an int)."""
    if tp is type(None):
        return v is None
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return _is_int(v)
    if tp is float:
        return isinstance(v, float)
    if tp is str:
        return isinstance(v, str)
    if tp is dict or typing.get_origin(tp) is dict:
        return isinstance(v, dict)
    if typing.get_origin(tp) is Literal:
        return isinstance(v, str) and v in typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return isinstance(v, (list, tuple))
    return False


def _coerce(tp: Any, v: Any) -> Any:
    """``v`` as type ``tp``: JSON values as they are, texts from the command line parsed."""
    args = _union_args(tp)
    if args is not None:
        for a in args:
            if _exact(a, v):
                return _coerce(a, v)
        # A word that is not one of a union's fixed texts ('al' for 'all') stays an error rather
        # than becoming a one-item list; "a,b" and "[...]" still make lists.
        words = any(typing.get_origin(a) is Literal or a is str for a in args)
        for a in args:
            if (words and typing.get_origin(a) is list and isinstance(v, str) and ","
                    not in v and not v.strip().startswith("[")):
                continue
            try:
                return _coerce(a, v)
            except _Bad:
                continue
        raise _Bad
    if tp is Any:
        return v
    if tp is type(None):
        if v is None or (isinstance(v, str) and v.strip().lower() in ("null", "none")):
            return None
        raise _Bad
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise _Bad
    if tp is int:
        if _is_int(v):
            return int(v)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                raise _Bad from None
        raise _Bad
    if tp is float:
        if _is_num(v):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise _Bad from None
        raise _Bad
    if tp is str:
        if isinstance(v, str):
            return v
        raise _Bad
    if typing.get_origin(tp) is Literal:
        if isinstance(v, str) and v in typing.get_args(tp):
            return v
        raise _Bad
    if tp is dict or typing.get_origin(tp) is dict:
        if isinstance(v, str) and v.strip().startswith("{"):
            try:
                v = json.loads(v)
            except ValueError:
                raise _Bad from None
        if isinstance(v, dict):
            return copy.deepcopy(v)
        raise _Bad
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(v, str):  # --param Cs=0.1,1 (JSON lists arrive as lists)
            text = v.strip()
            if text.startswith("["):
                try:
                    v = json.loads(text)
                except ValueError:
                    raise _Bad from None
            else:
                v = [p.strip() for p in text.split(",")] if text else []
        if not isinstance(v, (list, tuple)) or not v:
            raise _Bad
        return [_coerce(item, x) for x in v]
    raise TypeError(f"unsupported parameter type {tp!r}")  # a bug in a Params declaration


def _numbers(v: Any) -> list[float]:
    if _is_num(v):
        return [v]
    if isinstance(v, list):
        return [x for x in v if _is_num(x)]
    return []


def _texts(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    return []


def _in_range(x: float, s: Spec) -> bool:
    if isinstance(x, float) and math.isnan(x):
        return False
    return ((s.ge is None or x >= s.ge) and (s.gt is None or x > s.gt)
            and (s.le is None or x <= s.le) and (s.lt is None or x < s.lt))


def _g(x: float) -> str:
    return f"{x:g}"


def range_text(s: Spec) -> str | None:
    """``"(0, 1)"``, ``"[0, 0.5]"``, ``">= 1"``...; ``None`` without bounds."""
    low = f"[{_g(s.ge)}" if s.ge is not None else f"({_g(s.gt)}" if s.gt is not None else None
    high = f"{_g(s.le)}]" if s.le is not None else f"{_g(s.lt)})" if s.lt is not None else None
    if low and high:
        return f"{low}, {high}"
    if low:
        return f">= {_g(s.ge)}" if s.ge is not None else f"> {_g(s.gt)}"
    if high:
        return f"<= {_g(s.le)}" if s.le is not None else f"< {_g(s.lt)}"
    return None


def type_text(tp: Any) -> str:
    """The type as ``transferkit strategies`` shows it: ``int``, ``list[float]``, ``'all' | int``..."""
    args = _union_args(tp)
    if args is not None:
        return " | ".join(type_text(a) for a in args)
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list[{type_text((typing.get_args(tp) or (Any,))[0])}]"
    if tp is dict or typing.get_origin(tp) is dict:
        return "dict"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _allowed(tp: Any, s: Spec, plural: bool = False) -> str:
    """What ``tp`` with ``s``'s bounds and choices allows, in words."""
    args = _union_args(tp)
    if args is not None:
        parts = [_allowed(a, s, plural) for a in args]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    bounds = range_text(s)
    bounds = (f" in {bounds}" if bounds.startswith(("(", "[")) else f" {bounds}") if bounds else ""
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return ("integers" if plural else "an integer") + bounds
    if tp is float:
        return ("numbers" if plural else "a number") + bounds
    if tp is str:
        if s.choices:
            return "one of " + ", ".join(s.choices)
        return "texts" if plural else "a text"
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if tp is dict or typing.get_origin(tp) is dict:
        return "JSON objects" if plural else "a JSON object"
    if typing.get_origin(tp) is list:
        return "a non-empty list of " + _allowed((typing.get_args(tp) or (Any,))[0], s, plural=True)
    return "any value"


def _check_value(tp: Any, s: Spec, v: Any) -> str | None:
    """``None`` when the coerced ``v`` is allowed, else what is allowed."""
    if any(not _in_range(x, s) for x in _numbers(v)):
        return _allowed(tp, s)
    if s.choices is not None and any(t not in s.choices for t in _texts(v)):
        return _allowed(tp, s)
    if s.check is not None:
        return s.check(v)
    return None


# ----- building -----------------------------------------------------------------------------------------
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:  # resolving string annotations is slow: once per class
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(cls: type[Params]) -> list[tuple[dataclasses.Field, Any, Spec]]:
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} must be declared with param(...)")
        out.append((f, hints[f.name], spec))
    return out


def _unknown_message(owner: str, unknown: list[str], known: list[str]) -> UserInputError:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    word = "option" if len(unknown) == 1 else "options"
    return UserInputError(f"{owner} has no {word} {', '.join(parts)}",
                          hint=f"its options are: {', '.join(known) or 'none'} (see `transferkit strategies`)")


def build_params(cls: type[Params], values: dict[str, Any], owner: str) -> Params:
    """A checked ``cls`` instance from ``values`` (JSON or command-line text); defaults for the rest.

    Args:
        owner: how messages name the strategy, e.g. ``"strategy 'lora'"``.

    Raises:
        UserInputError: an unknown option (with the closest name), a value of the wrong type or out
            of range (naming the option, the value and what is allowed), or a failed cross-check.
    """
    specs = _fields(cls)
    known = [f.name for f, _, _ in specs]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise _unknown_message(owner, unknown, known)
    kwargs: dict[str, Any] = {}
    for f, tp, spec in specs:
        if f.name not in values:
            continue
        raw = values[f.name]
        try:
            v = _coerce(tp, raw)
        except _Bad:
            raise UserInputError(f"{owner}: {f.name} must be {_allowed(tp, spec)}, got {raw!r}",
                                 hint=f"{f.name}: {spec.help}") from None
        what = _check_value(tp, spec, v)
        if what is not None:
            raise UserInputError(f"{owner}: {f.name} must be {what}, got {raw!r}", hint=f"{f.name}: {spec.help}")
        kwargs[f.name] = v
    out = cls(**kwargs)
    out.validate()
    return out


def describe_params(cls: type[Params]) -> list[dict[str, Any]]:
    """One JSON-able row per option: ``name``, ``type``, ``default``, ``range``, ``choices``, ``help``."""
    rows = []
    defaults = cls()
    for f, tp, spec in _fields(cls):
        rows.append({"name": f.name, "type": type_text(tp), "default": getattr(defaults, f.name),
                     "range": range_text(spec), "choices": list(spec.choices) if spec.choices else None,
                     "help": spec.help})
    return rows
