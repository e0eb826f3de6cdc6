"""jobflow Makers of matloop's validation levels, reusable in any jobflow Flow.

- :class:`FormationEnergyMaker`: relax with a machine-learned force field (atomate2
  ``ForceFieldRelaxMaker``: CHGNet, SevenNet, ...) and compute the formation energy per atom
  against elemental reference phases relaxed with the same force field.
- :class:`ChgnetStaticMaker`: CHGNet single point of a crystal as given: energy and formation
  energy per atom (:mod:`matloop.models.cheap_level`).
- :class:`XtbMaker`: GFN2-xTB single point of a molecule with tblite: energy and HOMO–LUMO gap.

All return a :class:`~matloop.validation.documents.ValidationDocument`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import Flow, Maker, job
from pymatgen.core import Molecule, Structure

from matloop.data.references import reference_structure
from matloop.validation.documents import ValidationDocument
from matloop.validation.store import loads

if TYPE_CHECKING:
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker


def _field(doc: Any, *path: str) -> Any:
    """``doc.a.b`` for pydantic documents and their dict form alike."""
    for key in path:
        doc = doc[key] if isinstance(doc, dict) else getattr(doc, key)
    return doc


def _total_energy_and_sites(doc: Any) -> tuple[float, int]:
    structure = _field(doc, "output", "structure")
    n_sites = len(structure["sites"]) if isinstance(structure, dict) else len(structure)
    return float(_field(doc, "output", "energy")), n_sites


@job
def formation_energy_document(
    relax_doc: Any,
    reference_docs: dict[str, Any],
    references: dict[str, float],
    level: str,
) -> ValidationDocument:
    """Energy and formation energy per atom from a relaxation and elemental references."""
    if not _field(relax_doc, "is_force_converged"):
        raise RuntimeError("relaxation did not converge (forces above threshold after max steps)")
    refs = dict(references)
    for element, doc in reference_docs.items():
        energy, n = _total_energy_and_sites(doc)
        refs[element] = energy / n
    energy, n_sites = _total_energy_and_sites(relax_doc)
    structure = _field(relax_doc, "output", "structure")
    structure = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    ref_sum = sum(refs[el.symbol] * amt for el, amt in structure.composition.items())
    return ValidationDocument(
        level=level,
        properties={
            "energy_per_atom": energy / n_sites,
            "formation_energy_per_atom": (energy - ref_sum) / n_sites,
        },
        units={"energy_per_atom": "eV/atom", "formation_energy_per_atom": "eV/atom"},
        code=str(_field(relax_doc, "forcefield_name")).removeprefix("MLFF."),
        code_version=str(_field(relax_doc, "forcefield_version")),
        final_structure=structure,
        references={el.symbol: refs[el.symbol] for el in structure.composition},
        dir_name=str(_field(relax_doc, "dir_name") or ""),
    )


def _chgnet_relax_maker() -> ForceFieldRelaxMaker:
    """atomate2's CHGNet relaxation, imported on first use: a worker that runs only single points
    never loads atomate2's force-field jobs (2.5 s of imports)."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    return ForceFieldRelaxMaker(force_field_name="CHGNet", steps=300)


@dataclass
class FormationEnergyMaker(Maker):
    """Relax a crystal with a force field; label energy and formation energy per atom.

    Elements missing from ``references`` (eV/atom, from an earlier run at the same level) get
    a reference relaxation job of their own in the Flow (see
    :func:`~matloop.data.references.reference_structure`).

    Args:
        name: Flow name.
        level: Level name written into the document.
        relax_maker: The atomate2 force-field relax Maker (CHGNet by default).
        references: Known elemental reference energies in eV/atom.
    """

    name: str = "formation energy"
    level: str = "chgnet"
    relax_maker: ForceFieldRelaxMaker = field(default_factory=_chgnet_relax_maker)
    references: dict[str, float] = field(default_factory=dict)

    def make(self, structure: Structure) -> Flow:
        """A Flow: relax, reference relaxations for unknown elements, formation-energy summary."""
        relax = self.relax_maker.make(structure)
        ref_jobs = {}
        for element in sorted({el.symbol for el in structure.composition} - set(self.references)):
            ref, relax_cell = reference_structure(element)
            maker = replace(self.relax_maker, name=f"{element} reference", relax_cell=relax_cell)
            ref_jobs[element] = maker.make(ref)
        summary = formation_energy_document(
            relax.output,
            {el: j.output for el, j in ref_jobs.items()},
            dict(self.references),
            self.level,
        )
        return Flow([relax, *ref_jobs.values(), summary], output=summary.output, name=self.name)


@dataclass
class ChgnetStaticMaker(Maker):
    """CHGNet 0.3.0 single point of a crystal as given (no relaxation): energy per atom, and
    formation energy per atom against elemental reference phases relaxed once with CHGNet.

    Args:
        name: Job name.
        cache_dir: Directory of the embedding cache and the relaxed references (the settings'
            cache directory).
    """

    name: str = "chgnet static"
    cache_dir: str = "."

    @job
    def make(self, structure: Structure) -> ValidationDocument:
        """Run the single point and return its labels."""
        return _one(self.documents([structure]))

    def documents(self, structures: list[Structure]) -> list[ValidationDocument | str]:
        """The labels of each crystal (one CHGNet pass over all of them), or why it failed."""
        from matloop.data.embedding_cache import EmbeddingCache
        from matloop.models.cheap_level import chgnet_static
        from matloop.models.foundation import get_pretrained

        energy, formation, references = chgnet_static(structures, Path(self.cache_dir) / EmbeddingCache.FILE)
        code, unit = f"CHGNet {get_pretrained('chgnet').model_name}", "eV/atom"
        code_version = version("chgnet")
        return [
            ValidationDocument(
                level="chgnet_static",
                properties={"energy_per_atom": float(e), "formation_energy_per_atom": float(f)},
                units={"energy_per_atom": unit, "formation_energy_per_atom": unit},
                code=code,
                code_version=code_version,
                references={el.symbol: references[el.symbol] for el in structure.composition},
            )
            if np.isfinite(e)
            else "CHGNet could not evaluate the structure (no neighbours within its cutoff)"
            for structure, e, f in zip(structures, energy, formation, strict=True)
        ]


@dataclass
class XtbMaker(Maker):
    """GFN-xTB single point of a molecule with tblite: total energy, HOMO, LUMO and gap (eV).

    Args:
        name: Job name.
        method: tblite method ("GFN2-xTB" or "GFN1-xTB").
        accuracy: tblite numerical accuracy (smaller is tighter).
        max_iterations: SCF iterations before the job fails as not converged.
    """

    name: str = "xtb"
    method: str = "GFN2-xTB"
    accuracy: float = 1.0
    max_iterations: int = 250

    @job
    def make(self, molecule: Molecule) -> ValidationDocument:
        """Run the single point and return its labels."""
        return _one(self.documents([molecule]))

    def documents(self, molecules: list[Molecule]) -> list[ValidationDocument | str]:
        """The labels of each molecule, or why its calculation failed. One OpenMP thread: on
        molecules of QM9's size tblite's threads cost more than they save (2.2 ms per molecule
        with one thread, 90 ms with two on a busy 2-core machine); run more workers instead."""
        from threadpoolctl import threadpool_limits

        code_version = version("tblite")
        with threadpool_limits(limits=1, user_api="openmp"):
            return [self._document(molecule, code_version) for molecule in molecules]

    def _document(self, molecule: Molecule, code_version: str) -> ValidationDocument | str:
        from ase.units import Bohr, Hartree
        from tblite.interface import Calculator

        positions = np.asarray(molecule.cart_coords) / Bohr
        numbers = np.array([site.specie.Z for site in molecule])
        try:
            calc = Calculator(
                self.method,
                numbers,
                positions,
                charge=float(molecule.charge),
                uhf=molecule.spin_multiplicity - 1,
            )
            calc.set("verbosity", 0)
            calc.set("accuracy", self.accuracy)
            calc.set("max-iter", self.max_iterations)
            result = calc.singlepoint()
        except RuntimeError as exc:  # SCF not converged and the like: this molecule fails
            return str(exc)
        eps = result.get("orbital-energies") * Hartree
        occ = result.get("orbital-occupations")
        homo, lumo = float(eps[occ > 0.5].max()), float(eps[occ <= 0.5].min())
        energy = float(result.get("energy")) * Hartree
        return ValidationDocument(
            level="xtb",
            properties={"energy": energy, "homo": homo, "lumo": lumo, "gap": lumo - homo},
            units={"energy": "eV", "homo": "eV", "lumo": "eV", "gap": "eV"},
            code=f"tblite {self.method}",
            code_version=code_version,
        )


@dataclass
class SinglePointsMaker(Maker):
    """Many single points of one level as one job, one model load for all of them: what a
    screening level over a whole pool runs in chunks (:class:`ChgnetStaticMaker`,
    :class:`XtbMaker`). The output lists each structure's document, or why it failed.

    Args:
        name: Job name.
        single_point: The Maker of one structure's single point.
    """

    name: str = "single points"
    single_point: ChgnetStaticMaker | XtbMaker = field(default_factory=XtbMaker)

    @job
    def make(self, structures: list[Structure | Molecule | str]) -> list[ValidationDocument | str]:
        """Run the single points; a structure that fails does not stop the others. Each structure
        is a pymatgen object or its JSON text (``as_dict``), which jobflow passes on as it is,
        without serialising every site of a chunk again when it builds and runs the job."""
        items = [loads(s) if isinstance(s, str) else s for s in structures]
        return self.single_point.documents(items)  # type: ignore[arg-type]


def _one(documents: list[ValidationDocument | str]) -> ValidationDocument:
    """The document of a single structure; its failure raised."""
    if isinstance(documents[0], str):
        raise RuntimeError(documents[0])
    return documents[0]
