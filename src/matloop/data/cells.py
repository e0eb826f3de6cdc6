"""Numeric property values from the cells of a user's table, one cell at a time, with units.

A column's unit comes from its header, written ``name [unit]`` or ``name (unit)`` (with a space
before the bracket); otherwise it is ``"unknown"``. A cell may carry a unit too: ``3.1 eV`` in
``band_gap [eV]`` is 3.1, ``3100 meV`` is converted to 3.1 with pymatgen's units, and a unit
that cannot be converted makes the cell missing. Each bad cell is reported on its row (see
:mod:`matloop.data.accounting`) and only that value is lost; a column whose cells are mostly
not numbers is a text column, named in a note and not used as a property.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core.units import SUPPORTED_UNIT_NAMES, FloatWithUnit, Unit, UnitError

from matloop.data.accounting import Accounting

_UNIT_HEADER = re.compile(r"^(?P<name>.*\S)\s+[\[(](?P<unit>[^\[\]()]+)[\])]$")
# a number, then a unit that starts with a letter ("3.1 eV", "8 Å^3"; not "1,5")
_NUMBER_AND_UNIT = re.compile(
    r"^(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[^\W\d_].*)$"
)
_MISSING_TEXT = frozenset({"", "nan", "na", "n/a", "null", "none"})
_PMG_SPELLING = {"Å": "ang", "Angstrom": "ang", "angstrom": "ang"}
_SHOWN_CHARS = 40
UNKNOWN_UNIT = "unknown"


def split_header(header: str) -> tuple[str, str]:
    """``("band_gap", "eV")`` from ``"band_gap [eV]"``; the unit is ``"unknown"`` without brackets."""
    match = _UNIT_HEADER.match(header)
    return (match["name"], match["unit"].strip()) if match else (header, UNKNOWN_UNIT)


def show(value: Any) -> str:
    """A cell value as quoted in a message, cut to a readable length."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + "...'"


def _pmg_unit(text: str) -> Unit:
    """A pymatgen unit, refusing names pymatgen would silently misread."""
    for spelling, name in _PMG_SPELLING.items():
        text = text.replace(spelling, name)
    unit = Unit(text)
    unknown = [name for name in unit if name not in SUPPORTED_UNIT_NAMES]
    if unknown or not len(unit):
        raise ValueError(f"unknown unit {text!r}")
    return unit


def _convert(number: float, unit: str, column_unit: str, text: str) -> float:
    if unit.replace(" ", "") == column_unit.replace(" ", ""):
        return number
    if column_unit == UNKNOWN_UNIT:
        raise ValueError(
            f"{show(text)} has a unit but the column has none (write its header 'name [{unit}]')"
        )
    try:
        return float(FloatWithUnit(number, _pmg_unit(unit)).to(_pmg_unit(column_unit)))
    except (Exception, UnitError):  # pymatgen's UnitError is not an Exception
        raise ValueError(f"{show(text)} cannot be converted to the column's unit {column_unit!r}") from None


def parse_cell(value: Any, unit: str) -> float:
    """One cell as a float in ``unit`` (NaN when empty); a ValueError says what is wrong."""
    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_):
        return float(value)
    number: float | None = None
    if isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING_TEXT:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            match = _NUMBER_AND_UNIT.match(text)
            if match is None:
                raise ValueError(f"{show(value)} is not a number") from None
            number = _convert(float(match["number"]), match["unit"].strip(), unit, text)
    if number is None:
        raise ValueError(f"{show(value)} is not a number")
    if math.isinf(number):
        raise ValueError(f"{show(value)} is not a finite number")
    return number


def _column(values: pd.Series, unit: str) -> tuple[np.ndarray, dict[int, str]]:
    """Parsed values and the reason of each bad cell, by position."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        out = values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        bad = np.flatnonzero(np.isinf(out))
        reasons = {int(k): f"{show(values.iloc[k])} is not a finite number" for k in bad}
        out[bad] = np.nan
        return out, reasons
    out = np.full(len(values), np.nan)
    reasons = {}
    for k, value in enumerate(values):
        try:
            out[k] = parse_cell(value, unit)
        except ValueError as exc:
            reasons[k] = str(exc)
    return out, reasons


def _filled(values: pd.Series) -> int:
    """Cells that hold something (not None, NaN or blank text)."""
    return sum(
        not (v is None or (isinstance(v, float) and math.isnan(v)))
        and not (isinstance(v, str) and v.strip().lower() in _MISSING_TEXT)
        for v in values
    )


def numeric_properties(
    frame: pd.DataFrame,
    rows: Sequence[tuple[int, str, str]],
    account: Accounting,
    *,
    reserved: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Property columns of ``frame`` (renamed from ``name [unit]``) and their units.

    ``rows`` gives each frame row's ``(order, item id, where)`` for the report. Bad cells of a
    numeric column are reported and become NaN; text or empty columns are left out, with the reason.
    """
    props: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for column in frame.columns:
        header = str(column)
        name, unit = split_header(header)
        values = frame[column]
        if name in props or name in reserved:
            account.unused_columns[header] = f"its name {name!r} is already taken"
            continue
        parsed, reasons = _column(values, unit)
        filled = _filled(values)
        if filled == 0:
            account.unused_columns[header] = "empty"
            continue
        not_numbers = sum(r.endswith("is not a number") for r in reasons.values())
        if not_numbers * 2 > filled:
            account.unused_columns[header] = f"mostly not numbers ({not_numbers} of {filled} cells)"
            continue
        for k, reason in reasons.items():
            order, item_id, where = rows[k]
            account.bad_cell(order, item_id, where, reason, column=name)
        props[name] = parsed
        units[name] = unit
    return pd.DataFrame(props, index=range(len(frame))), units
