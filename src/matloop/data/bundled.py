"""The four Materials Project datasets bundled with matloop (see ``bundled/PROVENANCE.md``).

Each is a parquet table written by ``scripts/extract_matminer_sets.py``. Loading verifies the
file's SHA-256 against ``bundled/SHA256SUMS`` and sanity-checks the content (row count, no
NaN targets, physical ranges, well-formed structures); any failure raises
:class:`CorruptDataError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Element

from matloop.data.table import SourceTable, read_table, table_info
from matloop.errors import MatloopError

BUNDLE_DIR = Path(__file__).parent / "bundled"
CHECKSUM_FILE = "SHA256SUMS"
_ELEMENTS = frozenset(e.symbol for e in Element)


class CorruptDataError(MatloopError, ValueError):
    """A bundled data file is damaged or fails its sanity checks (reinstall matloop)."""


@dataclass(frozen=True)
class BundledSet:
    """What a bundled set must look like: its file, row count, targets and their physical ranges."""

    name: str
    file: str
    rows: int
    description: str
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.ranges)


BUNDLED: dict[str, BundledSet] = {
    s.name: s
    for s in (
        BundledSet(
            "mp_formation_energy",
            "mp_formation_energy.parquet",
            3938,
            "MP formation energies and energies above hull (Faber et al. 2015, flla)",
            {"formation_energy_per_atom": (-6.0, 4.0), "e_above_hull": (0.0, 5.0)},
        ),
        BundledSet(
            "mp_dielectric",
            "mp_dielectric.parquet",
            1056,
            "MP PBE band gaps, refractive indices, dielectric constants (Petousis et al. 2017)",
            {"band_gap": (0.0, 15.0), "n": (1.0, 50.0)},
        ),
        BundledSet(
            "mp_elastic",
            "mp_elastic.parquet",
            1181,
            "MP bulk and shear moduli (de Jong et al. 2015)",
            {"K_VRH": (0.0, 1000.0), "G_VRH": (0.0, 1000.0)},
        ),
        BundledSet(
            "mp_piezo",
            "mp_piezo.parquet",
            941,
            "MP maximum piezoelectric modulus (de Jong et al. 2015)",
            {"eij_max": (0.0, 100.0)},
        ),
    )
}


def _expected_sha256(file: str) -> str | None:
    sums = BUNDLE_DIR / CHECKSUM_FILE
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.strip() == file:
            return digest
    return None


def bundled_info(name: str) -> tuple[int, dict[str, str]]:
    """Row count and units of a bundled set from its file footer (no full read)."""
    rows, info = table_info(BUNDLE_DIR / BUNDLED[name].file)
    return rows, info["units"]


def check_bundled(table: SourceTable, spec: BundledSet) -> None:
    """Raise :class:`CorruptDataError` unless ``table`` has the content ``spec`` promises."""
    problems = []
    if len(table) != spec.rows:
        problems.append(f"expected {spec.rows} rows, got {len(table)}")
    for target, (low, high) in spec.ranges.items():
        if target not in table.frame.columns:
            problems.append(f"missing target column {target!r}")
            continue
        values = table.frame[target].to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            problems.append(f"{int(np.isnan(values).sum())} NaN values of {target!r}")
        outside = (values < low) | (values > high)
        if outside.any():
            problems.append(f"{int(outside.sum())} values of {target!r} outside [{low}, {high}]")
    for item_id, species, coords, lattice in table.frame[["id", "species", "coords", "lattice"]].itertuples(
        index=False
    ):
        reason = _structure_problem(species, coords, lattice)
        if reason:
            problems.append(f"structure {item_id}: {reason}")
            break
    if problems:
        raise CorruptDataError(f"bundled set {spec.name!r} fails its checks: " + "; ".join(problems))


def _structure_problem(species, coords, lattice) -> str | None:
    if len(species) == 0 or len(coords) != 3 * len(species):
        return "sites and coordinates do not match"
    if unknown := set(species) - _ELEMENTS:
        return f"unknown elements {sorted(unknown)}"
    if lattice is None or len(lattice) != 9:
        return "no 3x3 lattice"
    if not (np.isfinite(coords).all() and np.isfinite(lattice).all()):
        return "non-finite coordinates"
    if abs(np.linalg.det(np.reshape(lattice, (3, 3)))) < 1.0:
        return "degenerate lattice"
    return None


def load_bundled(name: str, path: Path | None = None) -> SourceTable:
    """Load and check one bundled set (``path`` overrides the packaged file, e.g. a copy)."""
    spec = BUNDLED[name]
    file = Path(path) if path is not None else BUNDLE_DIR / spec.file
    if not file.is_file():
        raise CorruptDataError(f"bundled file {file} is missing; reinstall matloop")
    expected = _expected_sha256(spec.file)
    if expected is not None and hashlib.sha256(file.read_bytes()).hexdigest() != expected:
        raise CorruptDataError(
            f"bundled file {file} is corrupt or truncated (SHA-256 differs from {CHECKSUM_FILE}); "
            "reinstall matloop"
        )
    try:
        table = read_table(file)
    except Exception as exc:
        raise CorruptDataError(f"bundled file {file} cannot be read ({exc}); reinstall matloop") from exc
    check_bundled(table, spec)
    return table
