"""The one boundary every planner call goes through.

:meth:`Toolbox.call` validates the arguments against the tool's schema, runs the guardrails,
writes the decision (fsynced) before running the tool, charges the budget, runs it, lets its spec
update the campaign state, and logs the outcome. What each tool is and does lives on its
:class:`~matloop.agent.tool_spec.ToolSpec` (:data:`matloop.agent.registry.TOOLS`). Results stay
typed until they become JSON for the LLM and the log. Errors the caller can fix come back as a
message, never as a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from matloop.agent.decisions import Decision, DecisionLog
from matloop.agent.guardrails import Guardrails, GuardrailViolation, verdicts_json
from matloop.agent.state import CampaignState
from matloop.agent.tool_spec import ToolCall, ToolSpec
from matloop.errors import ToolInputError, invalid_choice, validation_problems
from matloop.workspace import Workspace

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

MAX_RESULT_CHARS = 4000


def to_json(result: Any) -> Any:
    """A tool result as JSON data (for the LLM, the log and the stored steps)."""
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
    """What a call produced: the typed result or an error message for the planner."""

    ok: bool
    tool: str
    result: Any = None
    message: str = ""
    step: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def for_llm(self) -> str:
        if self.ok:
            return wrap_for_llm(self.tool, to_json(self.result))
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
        tools: Sequence[ToolSpec],
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.ws, self.state, self.guardrails, self.log, self.context = (
            workspace,
            state,
            guardrails,
            log,
            context,
        )
        self.specs = {spec.name: spec for spec in tools}
        self.progress = progress or (lambda _msg: None)
        self._injectable = {"workspace": workspace, "state": state, "guardrails": guardrails}

    def cost(self) -> dict[str, float]:
        return {k: round(self.state.spent(k), 4) for k in ("calculations", "cpu_hours", "llm_tokens")}

    def _decision(self, step: int, phase: str, tool: str, args: dict, **kw: Any) -> Decision:
        c = self.context
        return Decision(step, phase, c.campaign, c.round, c.planner, tool, args, cost=self.cost(), **kw)  # type: ignore[arg-type]

    def validate(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Check a call's name and arguments against the schema; raise a fixable error if wrong.
        Returns every argument of the schema, defaults filled in (guardrails, charges and the
        log read them here, never restate them)."""
        if name not in self.specs:
            raise invalid_choice("a tool name", name, self.specs)
        schema = self.specs[name].schema
        fields = set(schema.model_fields)
        if unknown := sorted(set(args) - fields):
            raise ToolInputError(
                f"expected arguments of {name} among {sorted(fields)}, got unknown {unknown}"
            )
        try:
            parsed = schema(**args)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, schema))
            raise ToolInputError(f"invalid arguments for {name}: {problems}") from None
        return {k: getattr(parsed, k) for k in fields}

    def call(
        self, name: str, args: dict[str, Any], *, rationale: str = "", key: str | None = None
    ) -> Outcome:
        """Validate, guard, log, run one tool call; fixable problems come back as ``ok=False``."""
        step = self.log.next_step()
        try:
            args = self.validate(name, dict(args))
            spec = self.specs[name]
            args, verdicts = self.guardrails.check(spec, args)
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
        if spec.calculations is not None:
            self.state.charge(f"calc:{key}", "calculations", spec.calculations(args), f"{name} {key}")
        injected = {k: v for k, v in self._injectable.items() if k in spec.hidden}
        self.progress(f"{name}({_short(args)})")
        t0 = time.process_time()
        try:
            result = spec.func(**args, **injected)
        except (ToolInputError, ValidationError) as exc:
            self.log.write(self._decision(step, "error", name, args, result=str(exc), verdicts=vj))
            return Outcome(False, name, message=f"{type(exc).__name__}: {exc}", step=step, verdicts=vj)
        finally:
            self.state.charge(f"cpu:{key}", "cpu_hours", (time.process_time() - t0) / 3600, name)
        if spec.record is not None:
            spec.record(ToolCall(self.state, self.ws, self.context.round, key), args, result)
        summary = summarize(to_json(result))
        self.log.write(self._decision(step, "done", name, args, result=summary, verdicts=vj))
        return Outcome(True, name, result=result, step=step, verdicts=vj)

    def langchain_tools(self) -> list[StructuredTool]:
        """The tools as LangChain ``StructuredTool``s (schemas without the injected handles)."""
        from langchain_core.tools import StructuredTool

        out = []
        for name, spec in self.specs.items():

            def run(_name: str = name, **kwargs: Any) -> str:
                return self.call(_name, kwargs).for_llm()

            out.append(
                StructuredTool.from_function(
                    func=run, name=name, description=spec.description, args_schema=spec.schema
                )
            )
        return out


def _short(args: dict[str, Any]) -> str:
    parts = []
    for k, v in args.items():
        if v is None:
            continue
        text = f"[{len(v)} items]" if isinstance(v, list) and len(v) > 4 else repr(v)
        parts.append(f"{k}={text}")
    return ", ".join(parts)
