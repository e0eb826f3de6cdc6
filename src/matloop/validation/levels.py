"""Registry of validation levels: what each computes, for which structures, and its jobflow Flow.

Labels from different levels are never mixed: each level writes columns ``<property>@<level>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pymatgen.core import Molecule, Structure

from matloop.data.references import bundled_references
from matloop.errors import invalid_choice
from matloop.names import LevelName
from matloop.settings import Settings

if TYPE_CHECKING:
    from jobflow import Flow, Job, Maker

#: Levels costing more than this per structure (relative to CHGNet) run only when approved.
APPROVAL_COST = 10.0
#: Budget charge of one single point of a screening level: GFN2-xTB takes about 6 ms on one core for
#: a QM9 molecule and CHGNet about 40 ms for a 12-site crystal, against CPU-hours for the DFT label
#: they help predict (< 1e-4 of one); charged 1e-3, conservatively.
SCREENING_CHARGE = 1e-3
#: What the crystal levels built on a force field compute.
PER_ATOM_ENERGIES = ("energy_per_atom", "formation_energy_per_atom")


@dataclass(frozen=True)
class LevelContext:
    """What a level needs to build a Flow: settings and known elemental references (eV/atom)."""

    settings: Settings
    references: dict[str, float]

    @classmethod
    def known(cls, settings: Settings, level: str, stored: dict[str, float]) -> LevelContext:
        """The context of ``level`` with the shipped references (see
        :func:`~matloop.data.references.bundled_references`) and the workspace's ``stored`` ones."""
        return cls(settings, {**bundled_references(level), **stored})


FlowBuilder = Callable[[Structure | Molecule, LevelContext], "Flow | Job"]
SinglePoint = Callable[[LevelContext], "Maker"]


@dataclass(frozen=True)
class Level:
    """One validation level.

    Attributes:
        name: Registry name.
        kind: Structures it accepts ("crystal", "molecule") or None for any.
        description: One line for humans and the planner.
        build: Makes the jobflow Flow of one structure (None for ``lookup``).
        runs_locally: False for codes that only run on clusters (VASP).
        cost: Relative cost per structure (CHGNet relaxation = 1), for approval gates.
        charge: Calculations charged per structure against a campaign's calculation budget: 1,
            or a fraction for a screening level cheap enough to run on a whole pool.
        package: For a deterministic single point, the package whose version (with the level and
            the structure) keys its results in the cross-workspace calculation cache; None: no cache.
        relaxes: Whether it relaxes the structure; a level that computes it as given counts only
            the same geometry as a duplicate, not the same crystal at another volume.
        properties: What it computes for every structure.
        optional_properties: What it computes when the code reports it (CP2K's band gap).
        single_point: For a single-point level, its Maker (with ``documents(structures)``); then
            ``build`` runs it on one structure and :meth:`build_batch` on many in one job.
    """

    name: LevelName
    kind: Literal["crystal", "molecule"] | None
    description: str
    build: FlowBuilder | None
    runs_locally: bool = True
    cost: float = 1.0
    charge: float = 1.0
    package: str | None = None
    relaxes: bool = True
    properties: tuple[str, ...] = ()
    optional_properties: tuple[str, ...] = ()
    single_point: SinglePoint | None = None

    def build_batch(self, structures: list[Structure | Molecule | str], ctx: LevelContext) -> Job:
        """One job computing the single points of all ``structures`` (one model load); each a
        pymatgen object or its JSON text."""
        from matloop.validation.makers import SinglePointsMaker

        assert self.single_point is not None, f"level {self.name!r} has no batch single points"
        return SinglePointsMaker(single_point=self.single_point(ctx)).make(structures)

    @property
    def needs_approval(self) -> bool:
        """Whether a campaign may run this level only after approval (its cost is above
        :data:`APPROVAL_COST`)."""
        return self.cost > APPROVAL_COST


def _force_field(level: LevelName, force_field: str) -> FlowBuilder:
    def build(structure: Structure | Molecule, ctx: LevelContext) -> Flow:
        from atomate2.forcefields.jobs import ForceFieldRelaxMaker

        from matloop.validation.makers import FormationEnergyMaker

        relax = ForceFieldRelaxMaker(force_field_name=force_field, steps=300)
        return FormationEnergyMaker(level=level, relax_maker=relax, references=ctx.references).make(structure)

    return build


def _cp2k(structure: Structure | Molecule, ctx: LevelContext) -> Flow:
    from matloop.validation.cp2k import Cp2kLabelMaker, configure_cp2k

    data_dir = configure_cp2k(ctx.settings)
    return Cp2kLabelMaker(data_dir=data_dir, walltime_s=int(ctx.settings.validation.walltime_s)).make(
        structure
    )


def _single(single_point: SinglePoint) -> FlowBuilder:
    """The one-structure job of a single-point level."""
    return lambda structure, ctx: single_point(ctx).make(structure)


def _chgnet_static(ctx: LevelContext) -> Maker:
    from matloop.validation.makers import ChgnetStaticMaker

    return ChgnetStaticMaker(cache_dir=str(ctx.settings.cache_dir))


def _xtb(ctx: LevelContext) -> Maker:
    from matloop.validation.makers import XtbMaker

    return XtbMaker()


def _vasp(structure: Structure | Molecule, ctx: LevelContext) -> Flow:
    from matloop.validation.vasp import VaspLabelMaker

    return VaspLabelMaker().make(structure)


LEVELS: dict[LevelName, Level] = {
    level.name: level
    for level in (
        Level(
            "chgnet",
            "crystal",
            "CHGNet relaxation; energy and formation energy per atom (eV/atom)",
            _force_field("chgnet", "CHGNet"),
            properties=PER_ATOM_ENERGIES,
        ),
        Level(
            "sevenn",
            "crystal",
            "SevenNet-0 relaxation; energy and formation energy per atom (eV/atom)",
            _force_field("sevenn", "SevenNet"),
            properties=PER_ATOM_ENERGIES,
        ),
        Level(
            "cp2k",
            "crystal",
            "CP2K PBE static; total energy (eV), band gap when available",
            _cp2k,
            cost=20.0,
            relaxes=False,
            properties=("energy", "energy_per_atom"),
            optional_properties=("band_gap",),
        ),
        Level(
            "chgnet_static",
            "crystal",
            "CHGNet single point of the structure as given; energy and formation energy per atom (eV/atom)",
            _single(_chgnet_static),
            cost=0.01,
            charge=SCREENING_CHARGE,
            package="chgnet",
            relaxes=False,
            properties=PER_ATOM_ENERGIES,
            single_point=_chgnet_static,
        ),
        Level(
            "xtb",
            "molecule",
            "GFN2-xTB single point; energy, HOMO, LUMO, gap (eV)",
            _single(_xtb),
            cost=0.01,
            charge=SCREENING_CHARGE,
            package="tblite",
            relaxes=False,
            properties=("energy", "gap", "homo", "lumo"),
            single_point=_xtb,
        ),
        Level("vasp", "crystal", "VASP PBE relaxation (cluster: slurm, jobflow-remote)", _vasp, False, 100.0),
        Level("lookup", None, "reveal held-out labels of the slice (benchmarks only)", None, cost=0.0),
    )
}


def screening_level(kind: str, target: str) -> Level | None:
    """The level cheap enough to run on a whole pool of ``kind`` items (charged a fraction of a
    calculation each) that computes the ``target`` property (``<property>[@<level>]``) too, so
    that a surrogate can learn the difference; None when there is none. (As mere extra inputs,
    CHGNet's static energies did not pay on the band gap or n: ``benchmarks/surrogates.py``.)"""
    prop = target.split("@")[0]
    return next(
        (lv for lv in LEVELS.values() if lv.kind == kind and lv.charge < 1 and prop in lv.properties), None
    )


def get_level(name: str) -> Level:
    """The level called ``name``; unknown names raise a ToolInputError listing valid ones."""
    if name not in LEVELS:
        raise invalid_choice("a validation level", name, LEVELS)
    return LEVELS[name]
