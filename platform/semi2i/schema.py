"""The one way configuration is validated: pydantic dataclasses (frozen, unknown keys forbidden) whose
field types carry their own checks, and :func:`validate`, which turns pydantic's errors into one
:class:`ConfigError` line per bad key (dotted path, what was wrong, a "did you mean" for typos).

Why pydantic dataclasses rather than ``BaseModel``: the settings are passed around, pickled into Ray
workers and checkpoints, and derived with :func:`dataclasses.replace` (which re-validates here); a
dataclass keeps all of that, and pydantic validates every construction.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import types
import typing
from typing import Annotated, Any, Callable, Mapping

import pydantic
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, ValidationError
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A config, profile or override is invalid; the message lists every bad key on its own line."""


#: a frozen pydantic dataclass that refuses unknown keys
settings = functools.partial(pydantic.dataclasses.dataclass, frozen=True, config=ConfigDict(extra="forbid"))


def _plain_int(value: Any) -> Any:  # numpy integers are ints; bools never are (YAML's true is not 1)
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def _plain_float(value: Any) -> Any:  # ints and numpy numbers are floats; bools and strings are not
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value


def rule(test: Callable[[Any], bool], message: str) -> AfterValidator:
    """A check on one value; ``message`` may name the value as ``{v}``."""

    def check(value: Any) -> Any:
        if value is not None and not test(value):
            raise PydanticCustomError("config", "{text}", {"text": message.format(v=value)})
        return value

    return AfterValidator(check)


def one_of(choices: tuple[str, ...]) -> AfterValidator:
    return rule(lambda v: v in choices, f"must be one of {list(choices)}, got {{v!r}}")


Int = Annotated[int, BeforeValidator(_plain_int), Strict()]
Float = Annotated[float, BeforeValidator(_plain_float), Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
PosInt = Annotated[Int, rule(lambda v: v > 0, "must be > 0, got {v}")]
NonNegInt = Annotated[Int, rule(lambda v: v >= 0, "must be >= 0, got {v}")]
PosFloat = Annotated[Float, rule(lambda v: v > 0, "must be > 0, got {v}")]
NonNegFloat = Annotated[Float, rule(lambda v: v >= 0, "must be >= 0, got {v}")]
Beta = Annotated[Float, rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1), got {v}")]


def relations(problems: list[str]) -> None:
    """Raise the cross-field problems of one object (``"key: message"`` lines) as one validation error."""
    if problems:
        raise PydanticCustomError("config", "{text}", {"text": "\n".join(problems)})


# --- pydantic's errors as our lines ---------------------------------------------------------------
Unknown = Callable[[str, list[str]], str]  # (dotted path, known keys) -> the line for an unknown key
Line = Callable[[str, str], str]  # (dotted path, message) -> the line


MISSING = ("missing", "missing_argument")


def suggest(key: str, known: list[str]) -> str:
    """``(did you mean 'x'?)`` for a near miss, else the known keys."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"(did you mean {close[0]!r}?)" if close else f"(known: {', '.join(known)})"


def _options(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _unwrap(hint: Any) -> Any:
    """``X`` for ``X | None``."""
    inner = [o for o in _options(hint) if o is not type(None)]
    return inner[0] if len(inner) == 1 else hint


def _field_types(cls: Any) -> dict[str, Any]:
    cls = _unwrap(cls)
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


def _hint_at(cls: Any, loc: tuple) -> Any:
    """The annotation of the field at ``loc`` (``cls`` itself for ``()``; None where loc leaves the dataclasses)."""
    hint = cls
    for part in loc:
        inner = [o for o in _options(hint) if o is not type(None)]
        if len(inner) != 1:
            return None
        container = typing.get_origin(inner[0])
        if container in (dict, list):  # a mapping's value / a list's item
            hint = typing.get_args(inner[0])[-1]
        else:
            hint = _field_types(inner[0]).get(part)
        if hint is None:
            return None
    return hint


def _translate(error: dict, cls: Any, unknown: Unknown, line: Line) -> list[tuple[str, str]]:
    """(dotted path, line) for one pydantic error."""
    loc = tuple(str(p) for p in error["loc"])
    path, kind, value = ".".join(loc), error["type"], error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return [(path, unknown(path, list(_field_types(_hint_at(cls, loc[:-1])))))]
    if kind in MISSING:
        return [(path, line(path, "missing (required)"))]
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type"):
        return [(path, line(path, f"expected a mapping of settings, got {type(value).__name__}"))]
    if kind in ("int_type", "float_type", "string_type", "bool_type", "list_type"):
        hint = _hint_at(cls, loc)
        wanted = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in _options(hint)) \
            if hint is not None else kind.split("_")[0]
        return [(path, line(path, f"expected {wanted}, got {type(value).__name__} {value!r}"))]
    if kind != "config":
        return [(path, line(path, error["msg"]))]
    text = str(error["ctx"]["text"])
    if not dataclasses.is_dataclass(_unwrap(_hint_at(cls, loc))):  # a field's own rule
        return [(path, line(path, text))]
    out = []  # relations() of a dataclass: "key: message" lines inside it
    for item in text.splitlines():
        key, _, message = item.partition(": ")
        full = ".".join((*loc, key)) if key else path  # ": message" is about the object itself
        out.append((full, line(full, message)))
    return out


def _drop(data: Any, path: str) -> Any:
    """``data`` without the key at dotted ``path`` (a copy; missing keys are fine)."""
    if not isinstance(data, Mapping):
        return data
    head, _, rest = path.partition(".")
    if not rest:
        return {k: v for k, v in data.items() if str(k) != head}
    return {k: (_drop(v, rest) if str(k) == head else v) for k, v in data.items()}


def validate(cls: type, data: Any, *, unknown: Unknown, line: Line) -> tuple[Any, list[str]]:
    """``cls`` validated from ``data``: (the object, []) or (None, every problem as one line each).

    A check across fields only runs once its fields are valid, so what was found bad is set aside (a
    key, or a whole section whose fields disagree) and the rest validated again, to report the other
    problems in the same go; nothing inside a set-aside section is reported twice.
    """
    adapter = pydantic.TypeAdapter(cls)
    found: dict[str, str] = {}
    aside: set[str] = set()
    while True:
        try:
            obj = adapter.validate_python(data)
        except ValidationError as exc:
            new = []
            for error in exc.errors(include_url=False):
                loc = tuple(str(p) for p in error["loc"])
                lines = [(p, text) for p, text in _translate(error, cls, unknown, line)
                         if p not in found and not any(p == a or p.startswith(f"{a}.") for a in aside)]
                new += lines
                whole = loc if error["type"] == "config" else loc[:-1] if error["type"] in MISSING else None
                if lines and whole and dataclasses.is_dataclass(_unwrap(_hint_at(cls, whole))):
                    aside.add(".".join(whole))  # its fields disagree, or one is missing: the rest without it
                    data = _drop(data, ".".join(whole))
            if not new:
                return None, list(found.values())
            for p, text in new:
                found.setdefault(p, text)
                aside.add(p)
                data = _drop(data, p)
            continue
        return (obj, []) if not found else (None, list(found.values()))
