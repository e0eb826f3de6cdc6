"""Fixtures for validation tests."""

from __future__ import annotations

import pytest
from validation_helpers import molecule_slice as _molecule_slice


@pytest.fixture
def molecule_slice(workspace) -> str:
    """Slice of five small molecules (CH4, H2O, NH3, C2H4, C6H6)."""
    return _molecule_slice(workspace)
