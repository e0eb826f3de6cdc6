"""Prompt texts (Markdown files next to this module), read at run time."""

from __future__ import annotations

from importlib import resources
from string import Template


def load_prompt(name: str, **values: object) -> str:
    """The text of ``<name>.md`` with ``$placeholders`` filled in."""
    text = resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})
