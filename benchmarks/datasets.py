"""Dataset loading: QM9 parse vs cached reload, bundled sets, ``query_dataset`` end to end.

Figures (ratios against baselines measured in the same run):
- QM9 first load (CSV parse + conversion + cache write) / bare ``pandas.read_csv`` of the same
  columns; second load (parquet cache) / first load.
- Bundled Materials Project sets: load with checksum and sanity checks, and the time to build
  every pymatgen ``Structure``, per set.
- ``query_dataset`` on all of QM9 (seeded sample written to a workspace as a slice): first call
  (parses QM9 when the full source is not cached yet) and second call (cached source).

    python benchmarks/datasets.py            # all 130,831 QM9 molecules
    python benchmarks/datasets.py --quick    # the first 20,000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from _common import peak_rss_mib, timed, write_result
from matloop.data.bundled import BUNDLED, load_bundled
from matloop.data.qm9 import QM9_FILES, QM9_PROPERTIES, qm9_data_dir
from matloop.data.sources import load_table
from matloop.settings import Settings
from matloop.tools import query_dataset
from matloop.workspace import Workspace

SEED = 0


def _bare_read(max_rows: int | None) -> int:
    columns = ["Index", "N_atoms", "Elements", "XYZ_Ang", *QM9_PROPERTIES]
    frames, left = [], max_rows
    for name in QM9_FILES:
        if left is not None and left <= 0:
            break
        frames.append(pd.read_csv(qm9_data_dir() / name, usecols=columns, nrows=left))
        left = None if left is None else left - len(frames[-1])
    return sum(len(f) for f in frames)


def bench_qm9(settings: Settings, max_rows: int | None, n_build: int, sample: int) -> dict[str, Any]:
    n_bare, bare_s = timed(lambda: _bare_read(max_rows))
    first, first_s = timed(lambda: load_table("qm9", max_rows=max_rows, settings=settings))
    second, second_s = timed(lambda: load_table("qm9", max_rows=max_rows, settings=settings))
    assert not first.from_cache and second.from_cache and len(second) == len(first) == n_bare
    data = second.to_slice()
    _, build_s = timed(lambda: [data.structures[k] for k in range(min(n_build, len(data)))])
    ws = Workspace(Path(settings.workspace), settings=settings)

    def query() -> Any:
        return query_dataset("qm9", properties=["gap"], sample=sample, seed=SEED, workspace=ws)

    # the tool reads all of QM9: the first call parses it unless the full source is cached
    _, query_first_s = timed(query)
    result, query_s = timed(query)
    return {
        "molecules": len(first),
        "bare_read_csv_s": round(bare_s, 3),
        "first_load_s": round(first_s, 3),
        "cached_load_s": round(second_s, 3),
        "first_load_over_read_csv": round(first_s / bare_s, 2),
        "cached_over_first_load": round(second_s / first_s, 3),
        "molecules_built": min(n_build, len(data)),
        "build_molecules_s": round(build_s, 3),
        "query_sample": sample,
        "query_dataset_first_s": round(query_first_s, 3),
        "query_dataset_cached_s": round(query_s, 3),
        "query_gap_mean_eV": result.properties["gap"].mean,
    }


def bench_bundled() -> dict[str, Any]:
    out = {}
    for name in BUNDLED:
        table, load_s = timed(lambda name=name: load_bundled(name))
        data = table.to_slice()
        _, build_s = timed(lambda data=data: list(data.structures))
        out[name] = {
            "rows": len(table),
            "load_and_check_s": round(load_s, 3),
            "build_structures_s": round(build_s, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first 20,000 QM9 molecules")
    args = parser.parse_args()
    max_rows = 20_000 if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(cache_dir=Path(tmp) / "cache", workspace=Path(tmp) / "ws")
        qm9 = bench_qm9(settings, max_rows, n_build=10_000, sample=2_000)
    payload = {
        "mode": "quick" if args.quick else "full",
        "seeds": [SEED],
        "qm9": qm9,
        "bundled": bench_bundled(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    path = write_result("datasets", payload)
    print(path.read_text())


if __name__ == "__main__":
    main()
