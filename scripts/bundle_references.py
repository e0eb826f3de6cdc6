"""Compute the elemental reference phases shipped with matloop (``data/bundled/references.json``).

- ``chgnet_static``: each element's reference structure relaxed with CHGNet's own optimiser, as
  :func:`matloop.models.cheap_level.chgnet_references` relaxes it (the screening level's μ_el).
- ``chgnet``: each element's energy per atom after atomate2's ``ForceFieldRelaxMaker`` (CHGNet,
  300 steps), exactly the reference job :class:`matloop.validation.makers.FormationEnergyMaker`
  adds to a Flow for an element it has no energy for.

Resumable: finished elements are kept; run again to fill in the rest. An element that fails is
left out (computed at run time, as before). Usage: ``python scripts/bundle_references.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from pymatgen.core import Element

OUT = Path(__file__).parents[1] / "src" / "matloop" / "data" / "bundled" / "references.json"


def _save(data: dict) -> None:
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _relax_energy(element: str) -> float:
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from matloop.data.references import reference_structure
    from matloop.validation.makers import _total_energy_and_sites

    structure, relax_cell = reference_structure(element)
    maker = replace(
        ForceFieldRelaxMaker(force_field_name="CHGNet", steps=300),
        name=f"{element} reference",
        relax_cell=relax_cell,
    )
    job = maker.make(structure)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with tempfile.TemporaryDirectory() as root:
        run_locally(job, store=store, create_folders=True, root_dir=root, ensure_success=True, log=False)
    energy, n = _total_energy_and_sites(job.output.resolve(store))
    return energy / n


def main() -> int:
    import torch

    torch.set_num_threads(1)
    from matloop.models.cheap_level import chgnet_references

    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    chgnet = version("chgnet")
    data["provenance"] = {
        "what": "elemental reference phases relaxed with CHGNet (see scripts/bundle_references.py)",
        "chgnet": chgnet,
        "atomate2": version("atomate2"),
        "pymatgen": version("pymatgen"),
        "date": datetime.now(UTC).date().isoformat(),
        "command": "python scripts/bundle_references.py",
    }
    static = data.setdefault("chgnet_static", {"code_version": chgnet, "structures": {}})
    relax = data.setdefault("chgnet", {"code_version": chgnet, "energies": {}})
    elements = [Element.from_Z(z).symbol for z in range(1, 95)]
    with tempfile.TemporaryDirectory() as cache:
        for k, el in enumerate(elements, 1):
            start = time.perf_counter()
            try:
                if el not in static["structures"]:
                    static["structures"][el] = chgnet_references({el}, Path(cache))[el].as_dict()
                if el not in relax["energies"]:
                    relax["energies"][el] = _relax_energy(el)
            except Exception as exc:  # left out: computed at run time instead
                print(f"{k}/{len(elements)} {el}: failed ({type(exc).__name__}: {exc})", flush=True)
                continue
            _save(data)
            print(f"{k}/{len(elements)} {el}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
