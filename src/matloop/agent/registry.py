"""The tool registry and the one boundary every planner call goes through.

Each tool is a plain function from :mod:`matloop.tools` (or :mod:`matloop.agent.tools`); its
LLM schema is generated from its own signature and docstring. Keyword-only parameters
(``workspace``, ``state``, ``train_ids`` ...) are never in the schema: the toolbox injects the
ones it knows. :meth:`Toolbox.call` validates the arguments, runs the guardrails, writes the
decision (fsynced) before running the tool, charges the budget, runs it, and logs the outcome.
Errors the caller can fix come back as a message, never as a crash.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import StructuredTool
from langchain_core.tools.base import create_schema_from_function
from pydantic import BaseModel, ValidationError

from matloop.agent.decisions import Decision, DecisionLog
from matloop.agent.guardrails import Guardrails, GuardrailViolation, verdicts_json
from matloop.agent.state import CampaignState
from matloop.errors import ToolInputError, invalid_choice
from matloop.workspace import Workspace

#: Tools in the order of the standard loop; those whose module has not been installed are skipped.
TOOL_NAMES = (
    "query_dataset",
    "build_candidate_pool",
    "featurize",
    "train_uq_gnn",
    "fine_tune",
    "predict",
    "select_candidates",
    "queue_validation",
    "validation_status",
    "collect_validation",
    "training_set",
    "campaign_status",
)
MAX_RESULT_CHARS = 4000


def available_tools() -> dict[str, Callable[..., Any]]:
    """Tool functions by name, from :mod:`matloop.tools` and :mod:`matloop.agent.tools`."""
    import matloop.agent.tools as agent_tools
    import matloop.tools as tools

    found = {}
    for name in TOOL_NAMES:
        func = getattr(tools, name, None) or getattr(agent_tools, name, None)
        if func is not None:
            found[name] = func
    return found


def _hidden_args(func: Callable[..., Any]) -> list[str]:
    return [p.name for p in inspect.signature(func).parameters.values() if p.kind is p.KEYWORD_ONLY]


def tool_schema(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    """The argument model the LLM sees: visible parameters with their docstring descriptions."""
    return create_schema_from_function(name, func, filter_args=_hidden_args(func), parse_docstring=True)


def tool_description(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.split("\n\n")[0].strip()


def to_jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return json.loads(json.dumps(result, default=str))


def summarize(value: Any, max_items: int = 12) -> Any:
    """A short copy for the log: long lists are cut with a count of what was left out."""
    if isinstance(value, dict):
        return {k: summarize(v, max_items) for k, v in value.items()}
    if isinstance(value, list):
        head = [summarize(v, max_items) for v in value[:max_items]]
        return head + ([f"... {len(value) - max_items} more"] if len(value) > max_items else [])
    return value


def _inert(text: str) -> str:
    """Text with no tags: ``<`` and ``>`` become JSON escapes, so data cannot close or open a tag."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def wrap_for_llm(tool: str, payload: Any) -> str:
    """Tool output as inert data for the model: JSON inside a tag it cannot close."""
    text = _inert(json.dumps(summarize(payload), default=str))
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [{len(text) - MAX_RESULT_CHARS} chars cut]"
    return f'<tool_result tool="{tool}">{text}</tool_result>'


@dataclass
class Outcome:
    """What a call produced: the result (JSON-able) or an error message for the planner."""

    ok: bool
    tool: str
    result: Any = None
    message: str = ""
    step: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def for_llm(self) -> str:
        if self.ok:
            return wrap_for_llm(self.tool, self.result)
        return f'<tool_error tool="{self.tool}">{_inert(self.message)}</tool_error>'


@dataclass
class Context:
    """Who is calling: campaign name, round and planner, written with every decision."""

    campaign: str
    planner: str = "rules"
    round: int = 0


class Toolbox:
    """The tools of one workspace, behind guardrails and the decision log."""

    def __init__(
        self,
        workspace: Workspace,
        state: CampaignState,
        guardrails: Guardrails,
        log: DecisionLog,
        context: Context,
        *,
        tools: dict[str, Callable[..., Any]] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.ws, self.state, self.guardrails, self.log, self.context = (
            workspace,
            state,
            guardrails,
            log,
            context,
        )
        self.functions = tools if tools is not None else available_tools()
        self.schemas = {name: tool_schema(name, f) for name, f in self.functions.items()}
        self.progress = progress or (lambda _msg: None)
        self._injectable = {"workspace": workspace, "state": state, "guardrails": guardrails}

    def cost(self) -> dict[str, float]:
        return {k: round(self.state.spent(k), 4) for k in ("calculations", "cpu_hours", "llm_tokens")}

    def _decision(self, step: int, phase: str, tool: str, args: dict, **kw: Any) -> Decision:
        c = self.context
        return Decision(step, phase, c.campaign, c.round, c.planner, tool, args, cost=self.cost(), **kw)  # type: ignore[arg-type]

    def validate(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Check a call's name and arguments against the schema; raise a fixable error if wrong."""
        if name not in self.functions:
            raise invalid_choice("a tool name", name, self.functions)
        schema = self.schemas[name]
        fields = set(schema.model_fields)
        if unknown := sorted(set(args) - fields):
            raise ToolInputError(
                f"expected arguments of {name} among {sorted(fields)}, got unknown {unknown}"
            )
        try:
            parsed = schema(**args)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ToolInputError(f"invalid arguments for {name}: {problems}") from None
        return {k: getattr(parsed, k) for k in args}

    def call(
        self, name: str, args: dict[str, Any], *, rationale: str = "", key: str | None = None
    ) -> Outcome:
        """Validate, guard, log, run one tool call; fixable problems come back as ``ok=False``."""
        step = self.log.next_step()
        try:
            args = self.validate(name, dict(args))
            args, verdicts = self.guardrails.check(name, args)
        except GuardrailViolation as exc:
            rec = self._decision(step, "rejected", name, args, rationale=rationale, result=str(exc))
            rec.verdicts = verdicts_json(exc.verdicts)
            self.log.write(rec)
            return Outcome(False, name, message=str(exc), step=step, verdicts=rec.verdicts)
        except ToolInputError as exc:
            self.log.write(self._decision(step, "rejected", name, args, rationale=rationale, result=str(exc)))
            return Outcome(False, name, message=str(exc), step=step)
        vj = verdicts_json(verdicts)
        self.log.write(self._decision(step, "planned", name, args, rationale=rationale, verdicts=vj))
        key = key or f"step-{step}"
        if name == "queue_validation":
            self.state.charge(f"calc:{key}", "calculations", len(args["item_ids"]), f"{name} {key}")
        func = self.functions[name]
        hidden = _hidden_args(func)
        injected = {k: v for k, v in self._injectable.items() if k in hidden}
        self.progress(f"{name}({_short(args)})")
        t0 = time.process_time()
        try:
            result = to_jsonable(func(**args, **injected))
        except (ToolInputError, ValidationError) as exc:
            self.log.write(self._decision(step, "error", name, args, result=str(exc), verdicts=vj))
            return Outcome(False, name, message=f"{type(exc).__name__}: {exc}", step=step, verdicts=vj)
        finally:
            self.state.charge(f"cpu:{key}", "cpu_hours", (time.process_time() - t0) / 3600, name)
        self._record(name, args, result, key)
        self.log.write(self._decision(step, "done", name, args, result=summarize(result), verdicts=vj))
        return Outcome(True, name, result=result, step=step, verdicts=vj)

    def _record(self, name: str, args: dict[str, Any], result: dict[str, Any], key: str) -> None:
        """Keep the campaign state in step with what the tools did, whichever planner called them."""
        rnd = self.context.round
        if name == "queue_validation":
            statuses = result.get("statuses", [])
            self.state.add_calcs(result["batch_id"], rnd, result.get("level", ""), statuses)
            # rejected structures never run; duplicates stay charged (after a resume they are the
            # calculations queued before the crash, so refunding them would under-count)
            rejected = [s for s in statuses if s.get("status") == "rejected"]
            if rejected:
                self.state.charge(f"refund:{key}", "calculations", -len(rejected), "rejected, not run")
        elif name == "collect_validation":
            self.state.add_labels(rnd, result["batch_id"], result.get("labels", []))
            hours = _calc_seconds(self.ws, result["batch_id"]) / 3600
            prefix = f"calc-cpu:{result['batch_id']}"
            delta = hours - self.state.charged(prefix)
            if delta > 0:
                self.state.charge(f"{prefix}:{hours:.6f}", "cpu_hours", delta, "validation")
        elif name == "select_candidates":
            self.state.add_candidates(rnd, result["selection_id"], result["strategy"], result["candidates"])
        elif name in ("train_uq_gnn", "fine_tune"):
            metrics = result.get("metrics") or result.get("metrics_after") or {}
            n_train = result.get("n_train") or 0
            self.state.add_model(
                result["model_id"], rnd, name, result.get("parent_model_id"), n_train, metrics
            )

    def langchain_tools(self) -> list[StructuredTool]:
        """The tools as LangChain ``StructuredTool``s (schemas without the injected handles)."""
        out = []
        for name, func in self.functions.items():

            def run(_name: str = name, **kwargs: Any) -> str:
                return self.call(_name, kwargs).for_llm()

            out.append(
                StructuredTool.from_function(
                    func=run, name=name, description=tool_description(func), args_schema=self.schemas[name]
                )
            )
        return out


def _calc_seconds(workspace: Workspace, batch_id: str) -> float:
    """Seconds the calculations of a batch ran (duplicates cost nothing)."""
    from matloop.validation.store import ValidationStore

    return sum(j.calc_seconds or 0.0 for j in ValidationStore(workspace).jobs(batch_id=batch_id))


def _short(args: dict[str, Any]) -> str:
    parts = []
    for k, v in args.items():
        if v is None:
            continue
        text = f"[{len(v)} items]" if isinstance(v, list) and len(v) > 4 else repr(v)
        parts.append(f"{k}={text}")
    return ", ".join(parts)
