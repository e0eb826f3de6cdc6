"""Fixtures shared with the agent tests."""

from __future__ import annotations

from tests.agent.fake_openai import fake_openai  # noqa: F401 (a fixture)
