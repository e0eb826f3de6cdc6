"""Cells one at a time: numbers, blanks, units in the cell, conversion with pymatgen's units."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from matloop.data.accounting import Accounting
from matloop.data.cells import numeric_properties, parse_cell, split_header


@pytest.mark.parametrize(
    ("cell", "unit", "value"),
    [
        (3.1, "eV", 3.1),
        ("3.1", "eV", 3.1),
        (" -2.5e-1 ", "eV", -0.25),
        ("3.1 eV", "eV", 3.1),
        ("3.1eV", "eV", 3.1),
        ("3100 meV", "eV", 3.1),
        ("2 Ha", "eV", 54.4228),
        ("-0.5 eV/atom", "meV/atom", -500.0),
        ("100 MPa", "GPa", 0.1),
        ("1 ang^3", "bohr^3", 6.74833),
        ("8 Å^3", "Å^3", 8.0),
        (True, "unknown", 1.0),
    ],
)
def test_numbers_and_units_are_read(cell, unit, value):
    assert parse_cell(cell, unit) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("cell", [None, math.nan, "", "  ", "NaN", "n/a", "null"])
def test_blank_cells_are_missing_without_complaint(cell):
    assert math.isnan(parse_cell(cell, "eV"))


@pytest.mark.parametrize(
    ("cell", "unit", "reason"),
    [
        ("abc", "eV", "'abc' is not a number"),
        ("1,5", "eV", "'1,5' is not a number"),
        ([1.0], "eV", "[1.0] is not a number"),
        (math.inf, "eV", "inf is not a finite number"),
        ("-inf", "eV", "'-inf' is not a finite number"),
        ("3.1 GPa", "eV", "'3.1 GPa' cannot be converted to the column's unit 'eV'"),
        ("3.1 parsec", "eV", "'3.1 parsec' cannot be converted to the column's unit 'eV'"),
        ("3.1 eV", "μB/cell", "'3.1 eV' cannot be converted to the column's unit 'μB/cell'"),
        ("3.1 eV", "unknown", "'3.1 eV' has a unit but the column has none (write its header 'name [eV]')"),
        ("x" * 60, "eV", "'" + "x" * 35 + "...' is not a number"),
    ],
)
def test_bad_cells_say_why(cell, unit, reason):
    with pytest.raises(ValueError) as err:
        parse_cell(cell, unit)
    assert str(err.value) == reason


def test_split_header():
    assert split_header("band_gap [eV]") == ("band_gap", "eV")
    assert split_header("K_VRH (GPa)") == ("K_VRH", "GPa")
    assert split_header("log10(K_VRH)") == ("log10(K_VRH)", "unknown")


def test_bad_cells_cost_one_value_and_text_columns_are_named():
    frame = pd.DataFrame(
        {
            "gap [eV]": ["1.0", "abc", "3100 meV", None],
            "formula": ["MgO", "NaCl", "Si", "1"],
            "empty": [None, None, None, None],
            "gap (eV)": [1, 2, 3, 4],
            "lattice": [1.0, 2.0, 3.0, 4.0],
        }
    )
    rows = [(k, f"i{k}", f"row {k + 1}") for k in range(4)]
    account = Accounting(read=4)
    props, units = numeric_properties(frame, rows, account, reserved=("lattice",))
    assert units == {"gap": "eV"}
    assert props["gap"].tolist()[:3] == [1.0, pytest.approx(math.nan, nan_ok=True), 3.1]
    assert [i.message for i in account.issues] == ["row 2, gap: 'abc' is not a number"]
    assert account.unused_columns == {
        "formula": "mostly not numbers (3 of 4 cells)",
        "empty": "empty",
        "gap (eV)": "its name 'gap' is already taken",
        "lattice": "its name 'lattice' is already taken",
    }
