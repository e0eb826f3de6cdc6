"""The names matloop's choices go by, each list written once: validation levels, executors,
UQ methods, surrogate backbones, acquisition strategies, campaign goals, job statuses and dataset sources.

Each ``Literal`` here is the type of every field and argument that takes such a name; the
registry that implements the choices (``LEVELS`` in :mod:`matloop.validation.levels`,
``METHODS`` in :mod:`matloop.models.uq`, ...) is keyed by exactly these names, which the tests
check.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator

LevelName = Literal["chgnet", "sevenn", "cp2k", "chgnet_static", "xtb", "vasp", "lookup"]
ExecutorName = Literal["local", "dask", "jobflow-remote", "slurm"]
UQMethod = Literal["ensemble", "mc_dropout", "evidential", "gp"]
Strategy = Literal[
    "entropy", "batch_entropy", "bald", "random", "max_std", "ucb", "greedy", "ei", "in_window"
]
#: The graph convolution of the trained graph network.
ConvName = Literal["cgcnn", "schnet"]
#: The input side of a surrogate: the trained graph network or a frozen featurizer.
BackboneName = Literal["gnn", "chgnet", "sevennet_0", "magpie", "chgnet+magpie"]
#: The direction of an optimisation (acquisition's ``goal``).
Direction = Literal["minimize", "maximize"]
#: What a campaign is for: learn the property, find items in a window, optimise it, or find
#: thermodynamically stable crystals (distance to the convex hull of formation energies in a window).
GoalName = Literal["learn", "window", "minimize", "maximize", "stable"]
JobStatus = Literal["queued", "running", "done", "failed", "rejected", "duplicate"]
SourceName = Literal[
    "qm9",
    "mp_formation_energy",
    "mp_dielectric",
    "mp_elastic",
    "mp_piezo",
    "matbench",
    "table",
    "cif_folder",
    "ase_db",
    "materials_project",
    "substitution",
]

LEVEL_NAMES: tuple[str, ...] = get_args(LevelName)
EXECUTOR_NAMES: tuple[str, ...] = get_args(ExecutorName)
UQ_METHODS: tuple[str, ...] = get_args(UQMethod)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
BACKBONES: tuple[str, ...] = get_args(BackboneName)
CONVS: tuple[str, ...] = get_args(ConvName)
DIRECTIONS: tuple[str, ...] = get_args(Direction)
GOALS: tuple[str, ...] = get_args(GoalName)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: A job in one of these states will not change any more.
FINISHED_STATUSES: frozenset[str] = frozenset({"done", "failed", "rejected", "duplicate"})
#: A job in one of these states holds its item: it is not queued again.
TAKEN_STATUSES: frozenset[str] = frozenset({"queued", "running", "done", "duplicate"})
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)

#: Other spellings accepted on input (YAML, CLI), mapped to the one name used everywhere.
_GOAL_ALIASES = {"minimise": "minimize", "maximise": "maximize"}


def normalise_goal(value: object) -> object:
    """The goal's name in the one spelling matloop uses (``minimise`` → ``minimize``)."""
    return _GOAL_ALIASES.get(value, value) if isinstance(value, str) else value


#: A campaign goal that also accepts the British spellings ``minimise``/``maximise``.
Goal = Annotated[GoalName, BeforeValidator(normalise_goal)]
