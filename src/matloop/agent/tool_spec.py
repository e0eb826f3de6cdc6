"""A tool's registration: the function and everything the agent does around it.

A :class:`ToolSpec` holds what a reader needs to know about one tool: its function (whose
signature and docstring are the schema the LLM sees, and whose return annotation is the result
model), the line of guidance the planner's prompt gives, what it costs, whether it polls or only
reads, which guardrail checks apply, and how its result updates the campaign state. The agent
keeps no list of tool names anywhere else.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from matloop.agent.state import CampaignState
    from matloop.workspace import Workspace

#: Guardrail checks a tool may ask for (see :class:`matloop.agent.guardrails.Guardrails`):
#: ``forbidden_elements`` adds the campaign's forbidden elements to ``elements_none`` and its
#: required ones to ``elements_all``; ``pool``
#: keeps a candidate pool inside the spec's families, elements and size; ``validation`` checks
#: level, approval, ids, elements, structure sanity and the calculation budget.
GuardrailCheck = Literal["forbidden_elements", "pool", "validation"]


@dataclass(frozen=True)
class ToolCall:
    """What a tool's state hook sees of the call that produced a result."""

    state: CampaignState
    workspace: Workspace
    round: int
    key: str


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the agent uses it.

    Attributes:
        func: The tool; keyword-only parameters (``workspace``, ``state`` ...) are injected, never
            in the schema.
        guidance: One line for the planner's prompt: when to use the tool.
        calculations: Validation calculations a call costs, charged before it runs (``None``: none).
        compute: It uses CPU time: refused once the CPU-hour budget is spent.
        polls: It reads a state that changes by itself; repeating it is not a loop.
        reads_only: It changes nothing; calling it is not progress.
        ends_round: Its result closes a round (new labels arrived).
        checks: Guardrail checks that apply to its arguments, in order.
        record: Brings the campaign state in step with its result.
    """

    func: Callable[..., BaseModel]
    guidance: str = ""
    calculations: Callable[[dict[str, Any]], float] | None = None
    compute: bool = False
    polls: bool = False
    reads_only: bool = False
    ends_round: bool = False
    checks: tuple[GuardrailCheck, ...] = ()
    record: Callable[[ToolCall, dict[str, Any], Any], None] | None = None

    @property
    def name(self) -> str:
        return self.func.__name__

    @cached_property
    def result_model(self) -> type[BaseModel]:
        """The result type, from the function's return annotation."""
        result = typing.get_type_hints(self.func)["return"]
        if not (isinstance(result, type) and issubclass(result, BaseModel)):
            raise TypeError(f"expected tool {self.name} to return a pydantic model, got {result!r}")
        return typing.cast(type[BaseModel], result)

    @cached_property
    def hidden(self) -> tuple[str, ...]:
        """Parameters the toolbox injects (keyword-only), never shown to the LLM."""
        params = inspect.signature(self.func).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)

    @cached_property
    def schema(self) -> type[BaseModel]:
        """The argument model the LLM sees: visible parameters with their docstring descriptions."""
        from langchain_core.tools.base import create_schema_from_function  # LangChain: only for a schema

        schema = create_schema_from_function(
            self.name, self.func, filter_args=list(self.hidden), parse_docstring=True
        )
        return typing.cast(type[BaseModel], schema)

    @property
    def description(self) -> str:
        """The first paragraph of the docstring."""
        return (inspect.getdoc(self.func) or "").split("\n\n")[0].strip()

    def rebuild(self, stored: Any) -> BaseModel:
        """The typed result again, from its stored JSON."""
        return self.result_model.model_validate(stored)


def tool_guide(specs: typing.Iterable[ToolSpec]) -> str:
    """The prompt's tool guidance, one line per tool that has some."""
    lines = [f"- {s.name}: {s.guidance}" for s in specs if s.guidance]
    return "Tool guidance:\n" + "\n".join(lines)
