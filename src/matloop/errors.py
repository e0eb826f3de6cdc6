"""The three kinds of error matloop raises.

- :class:`ToolInputError`: the caller (often the LLM) can fix it; the message says what was
  expected, what arrived and which values are valid. The agent returns it as a tool message.
- ``ValueError`` / ``TypeError``: programmer errors, raised as usual.
- :class:`CampaignStop`: terminal; the campaign records it and stops cleanly.
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


def invalid_choice(what: str, got: Any, valid: Iterable[Any]) -> ToolInputError:
    """A :class:`ToolInputError` for a value outside a known set."""
    return ToolInputError(f"expected {what}, got {got!r}; valid values are {sorted(map(str, valid))}")
