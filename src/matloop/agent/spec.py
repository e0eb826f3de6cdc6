"""The campaign spec: what a campaign computes, on which pool, with which model, within which
limits. Read from YAML (``campaign.yaml``); every field is checked, unknown keys are refused."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pymatgen.core import Element

from matloop.agent.guardrails import Budget
from matloop.agent.request import TARGET_NEEDED, parse_request
from matloop.data.prototypes import Family
from matloop.data.sources import source_names
from matloop.errors import ToolInputError, validation_problems
from matloop.models.options import FINE_TUNABLE_BLOCKS, VECTOR_HEADS, TrainableBlocks, check_trainable_blocks
from matloop.names import BackboneName, ConvName, ExecutorName, Goal, GoalName, LevelName, Strategy, UQMethod
from matloop.settings import SlurmSettings, TrainSettings
from matloop.stability import HULL_PROPERTY
from matloop.validation.levels import LEVELS

PlannerName = Literal["auto", "llm", "rules"]

#: The acquisition strategy of a campaign whose spec says ``strategy: auto``, per goal. In the
#: active-learning suite, ``greedy`` found more of the best 5 % than ``ei`` on every surrogate and
#: task tried (formation energy minimum, refractive index maximum).
DEFAULT_STRATEGIES: dict[GoalName, Strategy] = {
    "learn": "batch_entropy",
    "window": "in_window",
    "minimize": "greedy",
    "maximize": "greedy",
    "stable": "greedy",
}


def default_strategy(goal: GoalName) -> Strategy:
    """The strategy ``auto`` stands for when the campaign's goal is ``goal``."""
    return DEFAULT_STRATEGIES[goal]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@cache
def _element_names() -> dict[str, str]:
    return {el.long_name.lower(): el.symbol for el in Element}


def _symbols(values: list[str]) -> list[str]:
    """Element symbols as written, or their English names ("oxygen" → "O"); anything else refused."""
    out = []
    for value in values:
        name = _element_names().get(str(value).strip().lower())
        if Element.is_valid_symbol(str(value)):
            out.append(str(value))
        elif name is not None:
            out.append(name)
        else:
            raise ValueError(f"expected element symbols such as 'O', 'Pb' or 'Li', got {value!r}")
    return out


Symbols = Annotated[list[str], AfterValidator(_symbols)]


class PoolSpec(_Strict):
    """Where candidates come from: a prototype pool, a dataset queried with ``query``, or a slice
    already stored in the campaign's workspace (made with the tools from Python)."""

    source: str = Field("prototypes", description="'prototypes' or a query_dataset source name.")
    slice_id: str | None = Field(None, description="An existing slice of the workspace (overrides source).")
    families: list[Family] | None = None
    elements: Symbols | None = None
    max_items: int | None = Field(None, gt=0)
    templates: str = Field(
        "mp_formation_energy", description="source 'substitution': the structures substituted."
    )
    threshold: float = Field(
        1e-3, description="source 'substitution': smallest substitution probability kept."
    )
    query: dict[str, Any] = Field(default_factory=dict, description="Extra query_dataset arguments.")

    @model_validator(mode="after")
    def _source_exists(self) -> PoolSpec:
        valid = ["prototypes", *source_names()]
        if self.source not in valid:
            raise ValueError(f"source: expected one of {valid}, got {self.source!r}")
        path = self.query.get("path")
        if path is not None and not Path(path).expanduser().exists():
            raise ValueError(f"query.path: expected an existing file or folder, got {str(path)!r}")
        return self


class TargetSpec(_Strict):
    property: str = Field("formation_energy_per_atom", description="Property computed by the level.")
    goal: Goal = "learn"
    window: tuple[float | None, float | None] | None = Field(
        None, description="Hits: the property's range; for goal 'stable' the distance to the hull (eV/atom)."
    )
    references: dict[str, Any] = Field(
        default_factory=lambda: {"source": "mp_formation_energy"},
        description="Goal 'stable': query_dataset arguments of the known phases whose energies at the "
        "campaign's level make the hull with the labelled candidates (charged to the budget).",
    )

    @model_validator(mode="after")
    def _window_given(self) -> TargetSpec:
        if self.goal == "window" and self.window is None:
            raise ValueError("goal 'window' needs window: [low, high] (null for an open end)")
        if self.goal == "stable":
            if self.property != HULL_PROPERTY:
                raise ValueError(f"goal 'stable' needs property: {HULL_PROPERTY}, got {self.property!r}")
            if self.window is None:
                self.window = (None, 0.0)
        if self.window is not None:
            lo, hi = self.window
            if any(v is not None and not math.isfinite(v) for v in self.window):
                raise ValueError(f"window: expected finite numbers or null, got {list(self.window)}")
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"window: expected [low, high] with low < high, got {list(self.window)}")
        return self


class PretrainSpec(_Strict):
    """A reference dataset the GNN is pretrained on; an initialisation only, never mixed into labels."""

    source: str = "mp_formation_energy"
    property: str = "formation_energy_per_atom"
    limit: int | None = Field(600, gt=0)
    epochs: int | None = Field(None, gt=0)


class ModelSpec(_Strict):
    """The surrogate of every round; unset fields keep the workspace's training settings."""

    method: UQMethod = "ensemble"
    backbone: Literal["auto"] | BackboneName = Field(
        "auto",
        description="'gnn' (trained graph network), a featurizer under a small head (pretrained ones frozen "
        "unless trainable_blocks says otherwise), or 'auto' (chgnet+magpie for crystals, gnn for molecules "
        "(magpie with a cheap level) and whenever the spec needs a graph network).",
    )
    trainable_blocks: TrainableBlocks = Field(
        0,
        description="With backbone 'chgnet' or 'sevennet_0': 0 keeps it frozen; N fine-tunes its last N "
        "interaction blocks and read-out under the method's head (ensemble, mc_dropout or gp); 'all' every "
        "pretrained parameter.",
    )
    epochs: int | None = Field(None, gt=0, description="Epochs per (fine-)training round.")
    warm_start: bool = Field(False, description="Fine-tune the previous round's model instead of retraining.")
    finetune_epochs: int | None = Field(None, gt=0, description="Epochs of a warm-start fine-tune.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Labels kept for early stopping and σ scale.")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Labels held out for the reported metrics.")
    patience: int | None = Field(None, gt=0, description="Early-stopping patience in epochs.")
    ensemble_size: int | None = Field(None, gt=0, description="Members of a deep ensemble.")
    hidden: int | None = Field(None, gt=0, description="Width of the graph network.")
    conv: ConvName | None = Field(None, description="Graph convolution of the backbone.")
    bootstrap: bool | None = Field(None, description="Train each ensemble member on a bootstrap resample.")
    cheap_level: Literal["auto", "none"] | LevelName = Field(
        "auto",
        description="A cheap validation level run on the whole pool first (charged to the budget) whose "
        "results feed the surrogate (multi-fidelity); 'auto': the pool kind's screening level (chgnet_static "
        "for crystals, xtb for molecules) where it computes the target too and the surrogate is a vector "
        "head, else none.",
    )

    @property
    def needs_graph_network(self) -> bool:
        """Whether ``auto`` means the graph network: evidential or dropout heads (the pretrained
        backbones take dropout only when named), warm starts unless a pretrained network is fine-tuned."""
        return (self.warm_start and self.trainable_blocks == 0) or self.method not in ("ensemble", "gp")

    @model_validator(mode="after")
    def _backbone_fits(self) -> ModelSpec:
        if self.backbone == "gnn" and self.cheap_level not in ("auto", "none"):
            raise ValueError(
                f"cheap_level {self.cheap_level!r} feeds a vector head; backbone 'gnn' reads graphs only"
            )
        explicit_level = self.cheap_level not in ("auto", "none")
        heads = f"method one of {list(VECTOR_HEADS)}"
        if self.trainable_blocks != 0 and (
            self.backbone not in FINE_TUNABLE_BLOCKS or self.method not in VECTOR_HEADS or explicit_level
        ):
            raise ValueError(
                f"trainable_blocks fine-tunes a pretrained network under a UQ head: it needs "
                f"backbone {' or '.join(map(repr, FINE_TUNABLE_BLOCKS))}, {heads} and no cheap_level, "
                f"got backbone {self.backbone!r}, method {self.method!r}, cheap_level {self.cheap_level!r}"
            )
        if self.backbone in FINE_TUNABLE_BLOCKS:
            check_trainable_blocks(self.trainable_blocks, FINE_TUNABLE_BLOCKS[self.backbone])
        frozen_warm_start = self.warm_start and self.trainable_blocks == 0
        if self.backbone not in ("auto", "gnn") and (self.method not in VECTOR_HEADS or frozen_warm_start):
            raise ValueError(
                f"backbone {self.backbone!r} takes {heads} and no warm_start unless trainable_blocks "
                f"fine-tunes it (its head retrains in seconds), got method {self.method!r}, warm_start "
                f"{self.warm_start}"
            )
        return self

    def train_settings(self, base: TrainSettings) -> TrainSettings:
        """``base`` with this spec's overrides."""
        keys = ("patience", "ensemble_size", "hidden", "conv", "bootstrap")
        return base.model_copy(update={k: getattr(self, k) for k in keys if getattr(self, k) is not None})


class AuditSpec(_Strict):
    """The random audit set: a share of the calculation budget spent on pool items drawn uniformly
    at random, at the campaign's level, never trained on — an unbiased test of every round's model
    and of the campaign against random selection. ``audit: off`` in YAML turns it off."""

    enabled: bool = True
    fraction: float = Field(0.15, gt=0, lt=1, description="Share of the calculation budget.")
    min_items: int = Field(8, ge=0, description="At least this many items (at most half the budget).")

    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if value in (False, "off", "no"):  # YAML reads a bare `off` as False
            return {"enabled": False}
        if value in (True, "on", "yes", None):
            return {}
        return value


class StopSpec(_Strict):
    target_mae: float | None = Field(None, gt=0, description="Stop when the model's test MAE is below this.")
    found: int | None = Field(None, gt=0, description="Stop when this many labelled items are in the window.")
    max_hours: float | None = Field(None, gt=0, description="Wall-clock limit of the campaign.")


class ElementsSpec(_Strict):
    allowed: Symbols = Field(default_factory=list, description="Items contain only these (empty: any).")
    forbidden: Symbols = Field(default_factory=list, description="No item contains any of these.")
    required: Symbols = Field(default_factory=list, description="Every item contains all of these.")


class CampaignSpec(_Strict):
    """Everything a campaign needs; read from YAML."""

    name: str = "campaign"
    description: str = ""
    pool: PoolSpec = Field(default_factory=PoolSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    level: LevelName = "chgnet"
    executor: ExecutorName = "local"
    slurm: SlurmSettings | None = Field(
        None, description="Worker-job resources for executor slurm (replaces settings.validation.slurm)."
    )
    pretrained: PretrainSpec | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    strategy: Literal["auto"] | Strategy = "auto"
    cheap_arm: Literal["auto"] | bool = Field(
        "auto",
        description="Split each batch between the surrogate's ranking and its cheap level's own by their hit "
        "rates so far (Thompson sampling); needs a target window and a cheap level computing the target. "
        "auto: on for goal stable.",
    )
    seed_size: int = Field(8, gt=0)
    batch_size: int = Field(6, gt=0)
    rounds: int = Field(4, ge=1)
    budget: Budget = Field(default_factory=Budget)
    audit: AuditSpec = Field(default_factory=AuditSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    elements: ElementsSpec = Field(default_factory=ElementsSpec)
    planner: PlannerName = "auto"
    request: str | None = Field(None, description="Natural-language goal given to the LLM planner.")
    approve_expensive: bool = Field(False, description="Allow cp2k/vasp without an interactive prompt.")
    max_steps: int = Field(200, gt=0, description="Tool calls allowed in one run of the planner.")
    seed: int = 0

    @model_validator(mode="after")
    def _pretrained_needs_gnn(self) -> CampaignSpec:
        if self.pretrained is not None and self.model.backbone not in ("auto", "gnn"):
            raise ValueError(
                f"pretrained: initialises the graph network; backbone {self.model.backbone!r} is "
                "already pretrained — drop one of them"
            )
        return self

    @model_validator(mode="after")
    def _level_computes_target(self) -> CampaignSpec:
        level = LEVELS[self.level]
        computes = level.properties + level.optional_properties
        if computes and self.target.property not in computes:
            raise ValueError(
                f"target.property: expected a property level {self.level!r} computes, one of "
                f"{list(computes)}, got {self.target.property!r}"
            )
        return self

    @model_validator(mode="after")
    def _cheap_arm_needs_hits(self) -> CampaignSpec:
        if self.cheap_arm is True and self.target.window is None:
            raise ValueError(
                "cheap_arm: expected a target window (the arms are compared by their hits), got none"
            )
        return self

    @classmethod
    def from_dict(cls, data: Any, where: str = "spec") -> CampaignSpec:
        """A spec from parsed YAML/JSON; every problem comes back in one :class:`ToolInputError`,
        one ``field: expected X, got Y`` line each."""
        if not isinstance(data, dict):
            kind = "an empty file" if data is None else f"a {type(data).__name__}"
            raise ToolInputError(
                f"{where}: expected a mapping of campaign fields (name, pool, target, level, budget, ...), "
                f"got {kind}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            lines = validation_problems(exc, cls)
            raise ToolInputError("\n".join(f"{where}: {line}" for line in lines)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignSpec:
        """Read and check a spec file (see :meth:`from_dict`)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ToolInputError(f"{path}: expected a readable YAML file, got {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ToolInputError(f"{path}: expected valid YAML, got {problem}{at}") from None
        return cls.from_dict(data, str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def cheap_levels(spec: CampaignSpec) -> list[str]:
    """Levels besides its own that a campaign may run: the spec's cheap level, or with ``auto``
    every screening level (charged a fraction of a calculation per structure)."""
    level = spec.model.cheap_level
    if level == "none":
        return []
    if level != "auto":
        return [level]
    return [lv.name for lv in LEVELS.values() if lv.charge < 1 and lv.name != spec.level]


def hard_limits(spec: CampaignSpec) -> tuple[Budget, ElementsSpec]:
    """The spec's budget and element limits, tightened by those its request states in words
    ("at most 5 calculations", "excluding oxygen", "Li-containing"), so every planner, the
    language model included, gets them as guardrails before it plans anything. A request the
    parser cannot read unambiguously (an element neither wanted nor unwanted ...) is refused."""
    budget, el = spec.budget, spec.elements
    if not spec.request:
        return budget, el
    req = parse_request(spec.request)
    if questions := [q for q in req.needs if q != TARGET_NEEDED]:  # the spec's target may stand
        raise ToolInputError(
            f"request: expected limits that can be read one way, unclear: {'; '.join(questions)}"
        )
    if req.budget is not None and req.budget < budget.calculations:
        budget = budget.model_copy(update={"calculations": req.budget})
    if req.cpu_hours is not None and req.cpu_hours < budget.cpu_hours:
        budget = budget.model_copy(update={"cpu_hours": req.cpu_hours})
    allowed = set(el.allowed or req.elements_allowed)
    if el.allowed and req.elements_allowed:
        allowed &= set(req.elements_allowed)
    return budget, ElementsSpec(
        allowed=sorted(allowed),
        forbidden=sorted({*el.forbidden, *req.elements_exclude}),
        required=sorted({*el.required, *req.elements_include}),
    )
