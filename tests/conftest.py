"""Shared fixtures: every test gets its own workspace and cache under ``tmp_path``."""

from __future__ import annotations

import pytest

from matloop.settings import Settings
from matloop.workspace import Workspace


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("MATLOOP_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("MATLOOP_CACHE_DIR", str(tmp_path / "cache"))
    return Settings()


@pytest.fixture
def workspace(settings) -> Workspace:
    return Workspace.from_settings(settings)
