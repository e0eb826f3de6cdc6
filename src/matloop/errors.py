"""The kinds of error matloop raises.

- :class:`ToolInputError`: the caller (often the LLM) can fix it; the message says what was
  expected, what arrived and which values are valid. The agent returns it as a tool message.
- ``ValueError`` / ``TypeError``: programmer errors, raised as usual.
- :class:`CampaignStop`: terminal; the campaign records it and stops cleanly.
- :class:`Interrupted`: SIGTERM, handled like Ctrl-C: the campaign stops, resumable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class MatloopError(Exception):
    """Base class of matloop's own errors."""


class ToolInputError(MatloopError, ValueError):
    """Bad input the caller can correct ("expected X, got Y; valid values are ...")."""


class MissingExtraError(MatloopError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class CampaignStop(MatloopError):
    """A terminal condition: the campaign records the reason and stops cleanly."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt (never caught as an ordinary error): the
    campaign stops cleanly and can be resumed. Its message is the signal's name."""


def invalid_choice(what: str, got: Any, valid: Iterable[Any]) -> ToolInputError:
    """A :class:`ToolInputError` for a value outside a known set."""
    return ToolInputError(f"expected {what}, got {got!r}; valid values are {sorted(map(str, valid))}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model that holds the field at ``loc`` (nested models followed)."""
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def validation_problems(exc: Any, model: Any = None) -> list[str]:
    """One ``field: expected X, got Y`` line per error of a pydantic ``ValidationError``
    (``model``, the validated class, lets an unknown field's line list the valid ones)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(map(str, loc)) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            lines.append(f"{where}: unknown field" + (f"; valid fields are {valid}" if valid else ""))
        elif err["type"] == "missing":
            lines.append(f"{where}: expected a value, got none")
        elif msg.startswith("Input should be "):
            expected, _, why = msg.removeprefix("Input should be ").partition(", got ")
            why = f" ({why})" if why else ""  # e.g. "a number with a fractional part"
            lines.append(f"{where}: expected {expected}, got {_shown(err['input'])}{why}")
        else:
            lines.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return lines
