"""QM9 (Ramakrishnan et al., Sci. Data 1, 140022, 2014; CC-BY 4.0) from the ``qm9pack`` package.

``qm9pack`` ships the 130,831 characterised molecules as ``qm9pack/data/qm9_part{1,2,3}.csv``
(B3LYP/6-31G(2df,p); energies in Hartree). The package is located without importing it
(its ``__init__`` needs ``pkg_resources``). Energies are converted to eV; geometries
(``XYZ_Ang``) become pymatgen ``Molecule`` objects on demand.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from matloop.data.table import SourceTable
from matloop.errors import MissingExtraError, ToolInputError

HARTREE_EV = 27.211386
QM9_PACKAGE = "qm9pack"
QM9_COUNT = 130_831
QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

# QM9 column -> (property name, unit, factor to that unit)
QM9_PROPERTIES: dict[str, tuple[str, str, float]] = {
    "HOMO_au": ("homo", "eV", HARTREE_EV),
    "LUMO_au": ("lumo", "eV", HARTREE_EV),
    "HOMO_LUMO_gap_au": ("gap", "eV", HARTREE_EV),
    "Dipole_debye": ("dipole", "D", 1.0),
    "Polarizability_bohr3": ("polarizability", "bohr^3", 1.0),
    "R2_bohr2": ("r2", "bohr^2", 1.0),
    "ZPVE_au": ("zpve", "eV", HARTREE_EV),
    "InternalEnergy_0K_au": ("u0", "eV", HARTREE_EV),
    "InternalEnergy_298K_au": ("u298", "eV", HARTREE_EV),
    "Enthalphy_298K_au": ("h298", "eV", HARTREE_EV),
    "GibbsFreeEnergy_298K_au": ("g298", "eV", HARTREE_EV),
    "Heatcapacity_Cv_cal_mol_K": ("cv", "cal/(mol K)", 1.0),
}
QM9_UNITS = {name: unit for name, unit, _ in QM9_PROPERTIES.values()}


def qm9_installed() -> bool:
    """Whether the ``qm9pack`` package (extra ``matloop[qm9]``) is installed."""
    return importlib.util.find_spec(QM9_PACKAGE) is not None


def qm9_data_dir() -> Path:
    """The folder holding the QM9 CSV files of the installed ``qm9pack``."""
    spec = importlib.util.find_spec(QM9_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "QM9 needs the optional package 'qm9pack'; install it with: pip install 'matloop[qm9]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _parse_symbols(text: str) -> list[str]:
    return [s.strip().strip("'\"") for s in text.strip()[1:-1].split(",")]


def _parse_xyz(text: str) -> np.ndarray:
    # values such as "0." are not JSON, so split the nested list by hand
    return np.array(text.replace("[", "").replace("]", "").split(","), dtype=np.float64)


def read_qm9(path: Path | None = None, max_rows: int | None = None) -> SourceTable:
    """Parse QM9 from ``path`` (a folder with ``qm9_part*.csv``; default: the installed ``qm9pack``)."""
    folder = qm9_data_dir() if path is None else Path(path)
    files = [folder / name for name in QM9_FILES if (folder / name).is_file()]
    if not files:
        raise ToolInputError(f"expected QM9 files {list(QM9_FILES)} in a folder, got {str(folder)!r}")
    columns = ["Index", "N_atoms", "Elements", "XYZ_Ang", *QM9_PROPERTIES]
    parts: list[pd.DataFrame] = []
    remaining = max_rows
    for file in files:
        if remaining is not None and remaining <= 0:
            break
        parts.append(pd.read_csv(file, usecols=columns, nrows=remaining))
        remaining = None if remaining is None else remaining - len(parts[-1])
    raw = pd.concat(parts, ignore_index=True)
    species = [_parse_symbols(text) for text in raw["Elements"]]
    coords = [_parse_xyz(text) for text in raw["XYZ_Ang"]]
    bad = [
        i
        for i, (s, c, n) in enumerate(zip(species, coords, raw["N_atoms"], strict=True))
        if not len(s) == n == len(c) // 3
    ]
    if bad:
        raise ValueError(
            f"QM9 rows with inconsistent atoms/coordinates: indices {raw['Index'].iloc[bad[:5]].tolist()}"
        )
    frame = pd.DataFrame(
        {
            "id": [f"qm9-{int(i):06d}" for i in raw["Index"]],
            "species": species,
            "coords": coords,
            "lattice": [None] * len(raw),
        }
    )
    for column, (name, _, factor) in QM9_PROPERTIES.items():
        frame[name] = raw[column].to_numpy(dtype=np.float64) * factor
    meta = {
        "reference": "Ramakrishnan et al., Sci. Data 1, 140022 (2014); CC-BY 4.0",
        "level_of_theory": "B3LYP/6-31G(2df,p)",
        "files": [f.name for f in files],
    }
    return SourceTable(frame, dict(QM9_UNITS), "molecule", "qm9", meta)
