"""Campaigns: a YAML spec, a workspace directory, a planner run under guardrails, and resume.

A campaign directory holds ``campaign.yaml`` (the spec as run), ``state.sqlite`` (steps,
candidates, calculations, labels, models, budget ledger), ``decisions.jsonl`` and
``report.html``. ``resume`` re-runs the planner: finished steps are read back from the state,
so after a crash nothing is lost and no calculation runs twice.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from matloop.acquisition import Strategy
from matloop.agent.audit import Audit
from matloop.agent.decisions import Decision, DecisionLog
from matloop.agent.guardrails import Approver, Budget, Guardrails, PoolLimits
from matloop.agent.registry import Context, Toolbox, summarize
from matloop.agent.state import CampaignState
from matloop.audit import in_window
from matloop.data.prototypes import Family
from matloop.errors import CampaignStop, ToolInputError
from matloop.models.inputs import Backbone
from matloop.settings import Settings, SlurmSettings, TrainSettings, get_settings
from matloop.workspace import Workspace

Level = Literal["chgnet", "sevenn", "cp2k", "xtb", "vasp", "lookup"]
Planner = Literal["auto", "llm", "rules"]


Goal = Literal["learn", "window", "minimise", "maximise"]

#: The acquisition strategy of a campaign whose spec says ``strategy: auto``, per goal.
DEFAULT_STRATEGIES: dict[Goal, str] = {
    "learn": "batch_entropy",
    "window": "in_window",
    "minimise": "ei",
    "maximise": "ei",
}


def default_strategy(goal: Goal) -> str:
    """The strategy ``auto`` stands for when the campaign's goal is ``goal``."""
    return DEFAULT_STRATEGIES[goal]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolSpec(_Strict):
    """Where candidates come from: a prototype pool, a dataset queried with ``query``, or a slice
    already stored in the campaign's workspace (made with the tools from Python)."""

    source: str = Field("prototypes", description="'prototypes' or a query_dataset source name.")
    slice_id: str | None = Field(None, description="An existing slice of the workspace (overrides source).")
    families: list[Family] | None = None
    elements: list[str] | None = None
    max_items: int | None = Field(None, gt=0)
    query: dict[str, Any] = Field(default_factory=dict, description="Extra query_dataset arguments.")


class TargetSpec(_Strict):
    property: str = Field("formation_energy_per_atom", description="Property computed by the level.")
    goal: Goal = "learn"
    window: tuple[float | None, float | None] | None = None

    @model_validator(mode="after")
    def _window_given(self) -> TargetSpec:
        if self.goal == "window" and self.window is None:
            raise ValueError("goal 'window' needs window: [low, high] (null for an open end)")
        return self


class PretrainSpec(_Strict):
    """A reference dataset the GNN is pretrained on; an initialisation only, never mixed into labels."""

    source: str = "mp_formation_energy"
    property: str = "formation_energy_per_atom"
    limit: int | None = Field(600, gt=0)
    epochs: int | None = Field(None, gt=0)


class ModelSpec(_Strict):
    """The surrogate of every round; unset fields keep the workspace's training settings."""

    method: Literal["ensemble", "mc_dropout", "evidential", "gp"] = "ensemble"
    backbone: Literal["auto"] | Backbone = Field(
        "auto",
        description="'gnn' (trained graph network), a frozen featurizer under a small head, or 'auto' "
        "(chgnet+magpie for crystals, gnn for molecules; gnn whenever the spec needs a graph network).",
    )
    epochs: int | None = Field(None, gt=0, description="Epochs per (fine-)training round.")
    warm_start: bool = Field(False, description="Fine-tune the previous round's model instead of retraining.")
    finetune_epochs: int | None = Field(None, gt=0, description="Epochs of a warm-start fine-tune.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Labels kept for early stopping and σ scale.")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Labels held out for the reported metrics.")
    patience: int | None = Field(None, gt=0, description="Early-stopping patience in epochs.")
    ensemble_size: int | None = Field(None, gt=0, description="Members of a deep ensemble.")
    hidden: int | None = Field(None, gt=0, description="Width of the graph network.")
    conv: Literal["cgcnn", "schnet"] | None = Field(None, description="Graph convolution of the backbone.")
    bootstrap: bool | None = Field(None, description="Train each ensemble member on a bootstrap resample.")

    @property
    def needs_graph_network(self) -> bool:
        """Whether the spec asks for what only the graph network does (warm starts, dropout or
        evidential heads)."""
        return self.warm_start or self.method not in ("ensemble", "gp")

    @model_validator(mode="after")
    def _backbone_fits(self) -> ModelSpec:
        if self.backbone not in ("auto", "gnn") and self.needs_graph_network:
            raise ValueError(
                f"backbone {self.backbone!r} takes method 'ensemble' or 'gp' and no warm_start "
                f"(its head retrains in seconds), got method {self.method!r}, warm_start {self.warm_start}"
            )
        return self

    def train_settings(self, base: TrainSettings) -> TrainSettings:
        """``base`` with this spec's overrides."""
        keys = ("method", "patience", "ensemble_size", "hidden", "conv", "bootstrap")
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
    allowed: list[str] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)


class CampaignSpec(_Strict):
    """Everything a campaign needs; read from YAML."""

    name: str = "campaign"
    description: str = ""
    pool: PoolSpec = Field(default_factory=PoolSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    level: Level = "chgnet"
    executor: Literal["local", "dask", "jobflow-remote", "slurm"] = "local"
    slurm: SlurmSettings | None = Field(
        None, description="Worker-job resources for executor slurm (replaces settings.validation.slurm)."
    )
    pretrained: PretrainSpec | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    strategy: Literal["auto"] | Strategy = "auto"
    seed_size: int = Field(8, gt=0)
    batch_size: int = Field(6, gt=0)
    rounds: int = Field(4, ge=1)
    budget: Budget = Field(default_factory=Budget)
    audit: AuditSpec = Field(default_factory=AuditSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    elements: ElementsSpec = Field(default_factory=ElementsSpec)
    planner: Planner = "auto"
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

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignSpec:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def hard_limits(spec: CampaignSpec) -> tuple[Budget, list[str]]:
    """The spec's budget and forbidden elements, tightened by the limits its request states in words
    ("at most 5 calculations", "excluding oxygen"), so every planner gets them as guardrails."""
    from matloop.agent.rules import parse_request

    budget, forbidden = spec.budget, set(spec.elements.forbidden)
    if spec.request:
        req = parse_request(spec.request)
        forbidden |= set(req.elements_exclude)
        if req.budget is not None and req.budget < budget.calculations:
            budget = budget.model_copy(update={"calculations": req.budget})
    return budget, sorted(forbidden)


def llm_configured() -> bool:
    import os

    llm = get_settings().llm
    return bool(llm.api_key or llm.base_url or os.environ.get("OPENAI_API_KEY"))


def _settings(spec: CampaignSpec) -> Settings:
    """Settings from the environment, with the spec's training overrides and its Slurm resources
    when it gives them."""
    settings = get_settings()
    update: dict[str, Any] = {"train": spec.model.train_settings(settings.train)}
    if spec.slurm is not None:
        update["validation"] = settings.validation.model_copy(update={"slurm": spec.slurm})
    return settings.model_copy(update=update)


class Campaign:
    """An open campaign: spec, workspace, state, guardrails, decision log and toolbox."""

    def __init__(
        self,
        root: str | Path,
        spec: CampaignSpec,
        *,
        approver: Approver | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.ws = Workspace(root, settings=_settings(spec))
        self.state = CampaignState(self.ws)
        self.log = DecisionLog(self.ws.root / "decisions.jsonl")
        budget, forbidden = hard_limits(spec)
        self.guardrails = Guardrails(
            self.ws,
            self.state,
            budget,
            allowed_elements=spec.elements.allowed,
            forbidden_elements=forbidden,
            allowed_levels=[spec.level],
            approve_expensive=spec.approve_expensive,
            approver=approver,
            max_steps=spec.max_steps,
            pool=PoolLimits(spec.pool.families, spec.pool.elements, spec.pool.max_items)
            if spec.pool.source == "prototypes"
            else None,
        )
        self.context = Context(campaign=spec.name)
        self.say = progress or (lambda _m: None)
        self.toolbox = Toolbox(
            self.ws, self.state, self.guardrails, self.log, self.context, progress=self._progress
        )
        self.audit = Audit(self)
        self.guardrails.reserved = self.audit.reserved
        self.started = time.monotonic()

    @property
    def round(self) -> int:
        return self.context.round

    @round.setter
    def round(self, value: int) -> None:
        """A new round (either planner sets it): the audit set releases this round's batch."""
        self.context.round = value
        self.audit.on_round(value)

    def _progress(self, message: str) -> None:
        self.say(f"[round {self.round}] {message}")

    def note(self, message: str, **extra: Any) -> None:
        """A non-tool entry in the decision log (planner switch, stop reason ...)."""
        self.log.write(
            Decision(
                self.log.next_step(),
                "note",
                self.spec.name,
                self.round,
                self.context.planner,
                "",
                rationale=message,
                result=extra or None,
                cost=self.toolbox.cost(),
            )
        )
        self.say(message)

    def step(self, key: str, tool: str, args: dict[str, Any], rationale: str) -> dict[str, Any]:
        """Run one keyed step through the toolbox, or return its stored result if it already finished."""
        done = self.state.step(key)
        if done is not None and done["status"] == "done":
            return done["result"]
        self.state.begin_step(key, self.round, tool, args)
        with _heartbeat(self.say, f"[round {self.round}]   … {tool} still running"):
            out = self.toolbox.call(tool, args, rationale=rationale, key=key)
        if not out.ok:
            raise CampaignStop(f"{tool} failed: {out.message}")
        self.state.finish_step(key, out.result)
        self.say(f"[round {self.round}]   → {_brief(tool, out.result)}")
        return out.result

    # -- helpers the planners share -----------------------------------------------------
    def strategy(self) -> str:
        if self.spec.strategy != "auto":
            return self.spec.strategy
        return default_strategy(self.spec.target.goal)

    def goal_args(self) -> dict[str, Any]:
        t = self.spec.target
        if t.goal == "window" and t.window is not None:
            lo, hi = t.window
            return {"window": (-math.inf if lo is None else lo, math.inf if hi is None else hi)}
        if t.goal in ("minimise", "maximise"):
            return {"goal": "minimize" if t.goal == "minimise" else "maximize"}
        return {}

    def used_ids(self) -> list[str]:
        """Items already labelled, sent to a calculation or in the audit set (never selected)."""
        return sorted(
            {c["item_id"] for c in self.state.calcs()}
            | {lb["item_id"] for lb in self.state.labels()}
            | set(self.audit.ids())
        )

    def own_labels(self) -> list[dict[str, Any]]:
        """The campaign's labels of its target at its level, audit items excluded."""
        audit = set(self.audit.ids())
        labels = self.state.labels(self.spec.target.property, self.spec.level)
        return [lb for lb in labels if lb["item_id"] not in audit]

    def found(self) -> list[dict[str, Any]]:
        """Labelled items inside the target window (audit items included)."""
        t = self.spec.target
        if t.window is None:
            return []
        return [
            lb for lb in self.state.labels(t.property, self.spec.level) if in_window(lb["value"], t.window)
        ]

    def stop_reason(self, model_id: str | None) -> str | None:
        """Why the campaign should stop now, or ``None``."""
        stop = self.spec.stop
        if stop.max_hours and (time.monotonic() - self.started) / 3600 > stop.max_hours:
            return f"wall-clock limit of {stop.max_hours} h reached"
        if stop.found and len(self.found()) >= stop.found:
            return f"found {len(self.found())} items in the target window"
        if stop.target_mae and model_id:
            mae = next(
                (m["metrics"].get("mae") for m in self.state.models() if m["model_id"] == model_id), None
            )
            if mae is not None and mae <= stop.target_mae:
                return f"model test MAE {mae:.3g} ≤ target {stop.target_mae}"
        if self.guardrails.remaining()["calculations"] <= 0:
            return "calculation budget used up"
        return None


@contextmanager
def _heartbeat(say: Callable[[str], None], message: str, every_s: float = 30.0) -> Iterator[None]:
    """Print ``message`` with the elapsed time every ``every_s`` seconds while a long step runs."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            say(f"{message} ({time.monotonic() - start:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _brief(tool: str, result: dict[str, Any]) -> str:
    keys = (
        "slice_id",
        "feature_set_id",
        "model_id",
        "batch_id",
        "count",
        "n_train",
        "metrics",
        "metrics_after",
    )
    short = {k: result[k] for k in keys if k in result}
    if "metrics" in short or "metrics_after" in short:
        m = short.pop("metrics", None) or short.pop("metrics_after", {})
        short["mae"] = round(m.get("mae", float("nan")), 4)
    if "candidates" in result:
        short["picked"] = [c["item_id"] for c in result["candidates"]]
    if "labels" in result:
        short["labels"] = len(result["labels"])
        short["failures"] = len(result.get("failures", []))
    if "statuses" in result:
        short["queued"] = sum(s["status"] == "queued" for s in result["statuses"])
    return f"{tool}: {summarize(short, 6)}"


def choose_planner(name: Planner):
    """The planner object for a name (``auto``: the LLM when one is configured, else rules)."""
    from matloop.agent.rules import RulesPlanner

    if name == "llm" or (name == "auto" and llm_configured()):
        from matloop.agent.llm import LLMPlanner

        return LLMPlanner()
    return RulesPlanner()


def _failed(campaign: Campaign, exc: BaseException) -> None:
    campaign.state.set_meta("status", "failed")
    campaign.state.set_meta("reason", f"{type(exc).__name__}: {exc}")
    campaign.note(f"campaign failed: {type(exc).__name__}: {exc}")


def run_campaign(
    spec: CampaignSpec | str | Path,
    directory: str | Path,
    *,
    resume: bool = False,
    approver: Approver | None = None,
    progress: Callable[[str], None] | None = None,
    planner: Any = None,
) -> Campaign:
    """Run (or resume) a campaign in ``directory``; writes the report at the end."""
    from matloop.agent.report import write_report

    directory = Path(directory)
    spec_file = directory / "campaign.yaml"
    if resume:
        if not spec_file.exists():
            raise ToolInputError(f"expected a campaign directory with campaign.yaml, got {str(directory)!r}")
        spec = CampaignSpec.from_yaml(spec_file)
    else:
        spec = spec if isinstance(spec, CampaignSpec) else CampaignSpec.from_yaml(spec)
        if spec_file.exists():
            raise ToolInputError(
                f"expected a new directory, got existing campaign {str(directory)!r}; "
                "use `matloop campaign resume` to continue it"
            )
        directory.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(spec.to_yaml())
    campaign = Campaign(directory, spec, approver=approver, progress=progress)
    planner = planner or choose_planner(spec.planner)
    campaign.context.planner = planner.name
    campaign.state.set_meta("status", "running")
    campaign.note(
        f"{'resumed' if resume else 'started'} campaign {spec.name} with the {planner.name} planner"
    )
    try:
        campaign.audit.start()
        reason = planner.run(campaign)
        status = "finished"
    except CampaignStop as exc:
        reason, status = str(exc), "stopped"
    except BaseException as exc:  # a crash or Ctrl-C: never leave the status "running"
        _failed(campaign, exc)
        raise
    try:
        campaign.audit.finish()
    except CampaignStop as exc:
        campaign.note(f"audit set not completed: {exc}")
    except BaseException as exc:
        _failed(campaign, exc)
        raise
    campaign.state.set_meta("status", status)
    campaign.state.set_meta("reason", reason)
    campaign.note(f"campaign {status}: {reason}")
    path = write_report(campaign)
    campaign.say(f"report: {path}")
    return campaign
