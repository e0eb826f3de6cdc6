"""Campaigns: a YAML spec, a workspace directory, a planner run under guardrails, and resume.

A campaign directory holds ``campaign.yaml`` (the spec as run), ``state.sqlite`` (the
validation store's calculations and labels; the campaign's step results, candidates, batches,
models, budget ledger), ``decisions.jsonl`` and ``report.html``. A planner step is recorded once,
in ``decisions.jsonl`` (when, round, planner, tool, arguments, verdicts, cost, a summary of the
result); the state adds only the full result of a finished keyed step, under its key and log
step number, which is what ``resume`` reads back: after a crash nothing is lost and no
calculation runs twice.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from matloop.agent.audit_set import Audit
from matloop.agent.decisions import Decision, DecisionLog
from matloop.agent.guardrails import Approver, Guardrails, PoolLimits
from matloop.agent.hull import hits
from matloop.agent.integrity import campaign_lock, check_state, spec_hash
from matloop.agent.plan import CampaignPlan, check_budget, plan_campaign
from matloop.agent.report import write_report
from matloop.agent.rules import RulesPlanner
from matloop.agent.session import Planner
from matloop.agent.spec import CampaignSpec, PlannerName, cheap_levels, default_strategy, hard_limits
from matloop.agent.state import SCHEMA_VERSION, CampaignState
from matloop.agent.tool_runner import Context, Toolbox, summarize, to_json
from matloop.audit_stats import in_window
from matloop.errors import CampaignStop, Interrupted, ToolInputError
from matloop.names import DIRECTIONS
from matloop.settings import LLMSettings, Settings, get_settings
from matloop.validation.levels import get_level
from matloop.workspace import Workspace


def llm_configured(llm: LLMSettings) -> bool:
    """Whether these settings (or ``OPENAI_API_KEY``) name a language model to plan with."""
    return bool(llm.api_key or llm.base_url or os.environ.get("OPENAI_API_KEY"))


def _settings(spec: CampaignSpec, settings: Settings) -> Settings:
    """``settings`` with the spec's training overrides and its Slurm resources when it gives them."""
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
        settings: Settings | None = None,
    ) -> None:
        """Open the campaign in ``root``; ``settings`` default to the environment's."""
        budget, elements = hard_limits(spec)  # first: an unclear request creates nothing
        self.spec = spec
        self.ws = Workspace(root, settings=_settings(spec, settings or get_settings()))
        self.state = CampaignState(self.ws)
        self.log = DecisionLog(self.ws.root / "decisions.jsonl")
        self.guardrails = Guardrails(
            self.ws,
            self.state,
            budget,
            allowed_elements=elements.allowed,
            forbidden_elements=elements.forbidden,
            required_elements=elements.required,
            allowed_levels=[spec.level, *cheap_levels(spec)],
            approve_expensive=spec.approve_expensive,
            approver=approver,
            max_steps=spec.max_steps,
            pool=PoolLimits(spec.pool.families, spec.pool.elements, spec.pool.max_items)
            if spec.pool.source == "prototypes"
            else None,
        )
        self.context = Context(campaign=spec.name)
        self.say = progress or (lambda _m: None)
        self.audit = Audit(self)
        self.guardrails.reserved = self.audit.reserved
        self.started = time.monotonic()

    @cached_property
    def toolbox(self) -> Toolbox:
        """The registered tools behind the guardrails, built on first use: reading a campaign
        (status, log, report) never imports the tools' scientific stack."""
        from matloop.agent.registry import TOOLS

        return Toolbox(
            self.ws, self.state, self.guardrails, self.log, self.context, TOOLS, progress=self._progress
        )

    @property
    def round(self) -> int:
        return self.context.round

    def start_round(self, number: int) -> None:
        """Begin round ``number``: the audit set collects earlier rounds' batches and queues this
        round's (calculations, logged as the audit's steps)."""
        self.context.round = number
        self.audit.on_round(number)

    @property
    def planner(self) -> str:
        return self.context.planner

    @planner.setter
    def planner(self, value: str) -> None:
        self.context.planner = value

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

    def step(self, key: str, tool: str, args: dict[str, Any], rationale: str) -> Any:
        """Run one keyed step through the toolbox, or rebuild its stored result if it already
        finished. The decision log records the step; the state keeps its full result by key."""
        done = self.state.step(key)
        if done is not None:
            return self.toolbox.specs[tool].rebuild(done["result"])
        with _heartbeat(self.say, lambda: f"[round {self.round}]   … {tool}{self._progress_of(tool, args)}"):
            out = self.toolbox.call(tool, args, rationale=rationale, key=key)
        if not out.ok:
            raise CampaignStop(f"{tool} failed: {out.message}")
        self.state.finish_step(key, out.step, to_json(out.result))
        self.say(f"[round {self.round}]   → {_brief(tool, to_json(out.result))}")
        return out.result

    def _progress_of(self, tool: str, args: dict[str, Any]) -> str:
        """How far a long step is: calculations finished of the batch being collected."""
        if tool != "collect_validation":
            return " still running"
        store = self.state.store
        total = store.batch_size(args["batch_id"])
        return f": {total - store.unfinished_count(args['batch_id'])}/{total} calculations done"

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
        if t.goal in DIRECTIONS:
            return {"goal": t.goal}
        if t.goal == "stable" and t.window is not None:  # the window is on the distance to the hull
            lo, hi = t.window
            window = {"window": (-math.inf if lo is None else lo, math.inf if hi is None else hi)}
            return {
                "hull_level": self.spec.level,
                **(window if self.strategy() == "in_window" else {"goal": "minimize"}),
            }
        return {}

    def used_ids(self) -> list[str]:
        """Items already labelled at the campaign's level, sent to a calculation at it (failed
        ones too), refused by a guardrail or in the audit set (never selected again)."""
        return sorted(self.state.used_ids(self.spec.level) | set(self.audit.ids()))

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
        if t.goal == "stable":
            return hits(self, self.state.labels(t.property, self.spec.level))
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
        if self.guardrails.remaining()["calculations"] < get_level(self.spec.level).charge:
            return "calculation budget used up"
        return None


@contextmanager
def _heartbeat(
    say: Callable[[str], None], message: Callable[[], str], every_s: float = 15.0
) -> Iterator[None]:
    """Print ``message()`` with the elapsed time every ``every_s`` seconds while a long step runs."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            say(f"{message()} ({time.monotonic() - start:.0f} s)")

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
        short["labelled items"] = len({lb["item_id"] for lb in result["labels"]})
        short["failures"] = len(result.get("failures", []))
    if "statuses" in result:
        short["queued"] = sum(s["status"] == "queued" for s in result["statuses"])
    return f"{tool}: {summarize(short, 6)}"


def choose_planner(name: PlannerName, llm: LLMSettings) -> Planner:
    """The planner object for a name (``auto``: the LLM when ``llm`` configures one, else rules);
    the LLM planner falls back on the rules planner."""
    if name == "llm" or (name == "auto" and llm_configured(llm)):
        from matloop.agent.llm import LLMPlanner  # LangChain: imported only when an LLM plans

        return LLMPlanner(fallback=RulesPlanner())
    return RulesPlanner()


def _failed(campaign: Campaign, exc: BaseException) -> None:
    campaign.state.set_meta("status", "failed")
    campaign.state.set_meta("reason", f"{type(exc).__name__}: {exc}")
    campaign.note(f"campaign failed: {type(exc).__name__}: {exc}")


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` in the main thread, as Ctrl-C raises KeyboardInterrupt,
    so that a campaign stopped by a scheduler or ``kill`` ends cleanly as ``stopped``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare(spec: CampaignSpec | str | Path | None, directory: Path, resume: bool) -> CampaignSpec:
    """The spec to run; a new campaign's directory and ``campaign.yaml`` are made only once the
    spec has passed every check."""
    spec_file = directory / "campaign.yaml"
    if resume:
        if not spec_file.exists():
            raise ToolInputError(f"expected a campaign directory with campaign.yaml, got {str(directory)!r}")
        return CampaignSpec.from_yaml(spec_file)
    assert spec is not None
    spec = spec if isinstance(spec, CampaignSpec) else CampaignSpec.from_yaml(spec)
    if spec_file.exists():
        raise ToolInputError(
            f"expected a new directory, got existing campaign {str(directory)!r}; "
            "use `matloop campaign resume` to continue it"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return spec


def run_campaign(
    spec: CampaignSpec | str | Path | None,
    directory: str | Path,
    *,
    resume: bool = False,
    approver: Approver | None = None,
    progress: Callable[[str], None] | None = None,
    planner: Planner | None = None,
    settings: Settings | None = None,
) -> Campaign:
    """Run (or resume) a campaign in ``directory``, holding its lock; writes the report at the end.
    Before its first calculation, a budget that cannot pay for the pool's screening, the reference
    phases and a first round of labels is refused (:func:`~matloop.agent.plan.check_budget`).
    ``settings`` default to the environment's. SIGTERM or Ctrl-C stop it cleanly (status
    ``stopped``; resume continues it)."""
    directory = Path(directory)
    spec = _prepare(spec, directory, resume)
    with campaign_lock(directory), _stop_on_sigterm():
        spec_file = directory / "campaign.yaml"
        if resume:
            check_state(directory)
        elif spec_file.exists():
            raise ToolInputError(f"expected a new directory, got existing campaign {str(directory)!r}")
        else:
            spec_file.write_text(spec.to_yaml())
        campaign = Campaign(directory, spec, approver=approver, progress=progress, settings=settings)
        if not resume:
            campaign.state.set_meta("schema_version", SCHEMA_VERSION)
            campaign.state.set_meta("spec_hash", spec_hash(spec_file.read_text()))
        return _run(campaign, planner, resume)


def _run(campaign: Campaign, planner: Planner | None, resume: bool) -> Campaign:
    spec = campaign.spec
    planner = planner or choose_planner(spec.planner, campaign.ws.settings.llm)
    campaign.planner = planner.name
    campaign.state.set_meta("status", "running")
    campaign.state.set_meta("reason", "")  # a resumed run's earlier stop no longer applies
    run = "resumed" if resume else "started"
    campaign.note(f"{run} campaign {spec.name} with the {planner.name} planner", run=run)
    try:
        try:
            if not campaign.state.spent("calculations"):  # before the first calculation
                check_budget(campaign)
            campaign.audit.start()
            reason = planner.run(campaign)
            status = "finished"
        except CampaignStop as exc:
            reason, status = str(exc), "stopped"
        try:
            campaign.audit.finish()
        except CampaignStop as exc:
            campaign.note(f"audit set not completed: {exc}")
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stopped, resumable
        signame = str(exc) if isinstance(exc, Interrupted) else "SIGINT"
        campaign.state.set_meta("status", "stopped")
        campaign.state.set_meta("reason", f"interrupted by {signame}; resume to continue")
        campaign.note(f"campaign stopped: interrupted by {signame}; resume to continue")
        return campaign
    except BaseException as exc:  # a crash: never leave the status "running"
        _failed(campaign, exc)
        raise
    campaign.state.set_meta("status", status)
    campaign.state.set_meta("reason", reason)
    campaign.note(f"campaign {status}: {reason}")
    path = write_report(campaign)
    campaign.say(f"report: {path}")
    return campaign


def plan_spec(
    spec: CampaignSpec, *, settings: Settings | None = None, progress: Callable[[str], None] | None = None
) -> CampaignPlan:
    """The plan of a campaign not created yet (:func:`~matloop.agent.plan.plan_campaign`): its pool
    is built in a temporary workspace, removed afterwards (the calculation cache is the settings'
    own)."""
    with tempfile.TemporaryDirectory(prefix="matloop-plan-") as tmp:
        return plan_campaign(Campaign(Path(tmp), spec, settings=settings, progress=progress))
