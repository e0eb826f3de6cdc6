"""The VASP level, for cluster users: atomate2's MP-compatible PBE relaxation plus a label summary.

VASP never runs on the local executor. Inputs can be generated and inspected anywhere with
:func:`write_vasp_inputs` (``potcar_spec=True`` writes ``POTCAR.spec`` with the POTCAR
symbols instead of the licensed POTCAR files); flows go to HPC through jobflow-remote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from atomate2.vasp.files import write_vasp_input_set
from atomate2.vasp.jobs.base import BaseVaspMaker
from atomate2.vasp.jobs.mp import MPGGARelaxMaker
from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from matloop.validation.documents import ValidationDocument


@job
def vasp_document(task_doc: Any) -> ValidationDocument:
    """Energy per atom and band gap from an atomate2 VASP task document."""
    output = task_doc.output
    n_sites = len(output.structure)
    properties = {"energy_per_atom": float(output.energy) / n_sites}
    units = {"energy_per_atom": "eV/atom"}
    if output.bandgap is not None:
        properties["band_gap"] = float(output.bandgap)
        units["band_gap"] = "eV"
    return ValidationDocument(
        level="vasp",
        properties=properties,
        units=units,
        code="VASP PBE (atomate2 MPGGARelaxMaker)",
        code_version=str(getattr(task_doc, "vasp_version", None) or f"atomate2 {version('atomate2')}"),
        final_structure=output.structure,
        dir_name=str(task_doc.dir_name),
    )


@dataclass
class VaspLabelMaker(Maker):
    """A VASP relaxation (Materials Project GGA settings by default) and its labels.

    Args:
        name: Flow name.
        relax_maker: The atomate2 VASP Maker that runs the calculation.
    """

    name: str = "vasp relax"
    relax_maker: BaseVaspMaker = field(default_factory=MPGGARelaxMaker)

    def make(self, structure: Structure) -> Flow:
        """A Flow of the VASP job and the label summary."""
        relax = self.relax_maker.make(structure)
        summary = vasp_document(relax.output)
        return Flow([relax, summary], output=summary.output, name=self.name)


def write_vasp_inputs(
    structure: Structure, directory: str | Path, maker: VaspLabelMaker | None = None
) -> list[str]:
    """Write INCAR, KPOINTS, POSCAR and POTCAR.spec for ``structure``; returns the file names."""
    maker = maker or VaspLabelMaker()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_vasp_input_set(
        structure, maker.relax_maker.input_set_generator, directory=directory, potcar_spec=True
    )
    return sorted(p.name for p in directory.iterdir())
