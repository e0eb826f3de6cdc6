"""Extract the four Materials Project datasets of the matminer 0.4.2 sdist into matloop's bundle.

    pip download --no-deps --no-binary :all: matminer==0.4.2 -d /tmp/mm
    python scripts/extract_matminer_sets.py /tmp/mm/matminer-0.4.2.tar.gz

Reads ``matminer-0.4.2/matminer/datasets/{flla_2015,dielectric_constant,elastic_tensor,
piezoelectric_tensor}.csv`` straight from the archive with ``comment="#"``, builds structures
from the ``poscar`` column (``flla_2015`` has none: its ``structure`` column holds pymatgen
dicts as Python literals), keeps the scalar properties with their units, checks counts, NaNs
and that every structure parses, and writes ``src/matloop/data/bundled/<name>.parquet`` plus
``SHA256SUMS``. Tensors, CIF text and calculation metadata are not bundled.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import tarfile
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.vasp import Poscar

from matloop.data.bundled import BUNDLE_DIR, BUNDLED, CHECKSUM_FILE
from matloop.data.table import SourceTable, write_table

DATASETS = "matminer-0.4.2/matminer/datasets"

# bundled name -> (CSV, {column: unit}, reference)
SETS: dict[str, tuple[str, dict[str, str], str]] = {
    "mp_formation_energy": (
        "flla_2015.csv",
        {"formation_energy_per_atom": "eV/atom", "e_above_hull": "eV/atom", "formation_energy": "eV/cell"},
        "Faber, Lindmaa, von Lilienfeld, Armiento, Int. J. Quantum Chem. 115, 1094 (2015)",
    ),
    "mp_dielectric": (
        "dielectric_constant.csv",
        {
            "band_gap": "eV",
            "n": "dimensionless",
            "poly_electronic": "dimensionless",
            "poly_total": "dimensionless",
            "pot_ferroelectric": "flag",
        },
        "Petousis et al., Sci. Data 4, 160134 (2017)",
    ),
    "mp_elastic": (
        "elastic_tensor.csv",
        {
            "K_VRH": "GPa",
            "G_VRH": "GPa",
            "K_Voigt": "GPa",
            "K_Reuss": "GPa",
            "G_Voigt": "GPa",
            "G_Reuss": "GPa",
            "elastic_anisotropy": "dimensionless",
            "poisson_ratio": "dimensionless",
        },
        "de Jong et al., Sci. Data 2, 150009 (2015)",
    ),
    "mp_piezo": (
        "piezoelectric_tensor.csv",
        {"eij_max": "C/m^2"},
        "de Jong, Chen, Geerlings, Asta, Persson, Sci. Data 2, 150053 (2015)",
    ),
}


def _structures(frame: pd.DataFrame) -> list[Structure]:
    if "poscar" in frame.columns:
        return [Poscar.from_str(text).structure for text in frame["poscar"]]
    return [Structure.from_dict(ast.literal_eval(text)) for text in frame["structure"]]


def extract(archive: Path, out_dir: Path) -> list[Path]:
    """Write the four bundled tables and their checksums; returns the written files."""
    written = []
    with tarfile.open(archive) as tar:
        for name, (csv, units, reference) in SETS.items():
            member = tar.extractfile(f"{DATASETS}/{csv}")
            assert member is not None, csv
            frame = pd.read_csv(io.BytesIO(member.read()), comment="#")
            spec = BUNDLED[name]
            if len(frame) != spec.rows:
                raise SystemExit(f"{csv}: expected {spec.rows} rows, got {len(frame)}")
            props = frame[list(units)].astype(float)
            if props.isna().any().any():
                raise SystemExit(f"{csv}: NaN values in {props.columns[props.isna().any()].tolist()}")
            table = SourceTable.from_items(
                frame["material_id"].tolist(),
                _structures(frame),
                props,
                units=units,
                kind="crystal",
                source=name,
                meta={
                    "reference": reference,
                    "data": "Materials Project (CC-BY 4.0), via matminer 0.4.2 (BSD-style licence)",
                    "original_file": csv,
                },
            )
            path = out_dir / spec.file
            write_table(table, path, compression_level=19)
            written.append(path)
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in written)
    (out_dir / CHECKSUM_FILE).write_text(sums)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="matminer-0.4.2.tar.gz from `pip download`")
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="output folder")
    args = parser.parse_args()
    archive_sha = hashlib.sha256(args.archive.read_bytes()).hexdigest()
    print(f"{args.archive.name} sha256 {archive_sha}")
    for path in extract(args.archive, args.out):
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
