"""Guardrails, checked in code before every tool call, whatever the planner says.

The limits live here and in the campaign spec only: no tool takes a budget argument, so neither
a model that loops or lies nor text inside a dataset can raise them. A call that would break a
rule is either amended (trimmed to the remaining budget, forbidden elements added to a query,
unsound structures dropped) with a message, or rejected with a :class:`GuardrailViolation`
whose message goes back to the planner.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from matloop.agent.state import CampaignState
from matloop.agent.tool_spec import GuardrailCheck, ToolSpec
from matloop.data.slices import load_slice
from matloop.errors import CampaignStop, ToolInputError
from matloop.validation.levels import get_level
from matloop.validation.sanity import check_structures, site_elements
from matloop.workspace import Workspace

Approver = Callable[[str, int], bool]


class Budget(BaseModel):
    """Hard limits of a campaign (or of one request)."""

    model_config = ConfigDict(extra="forbid")

    calculations: int = Field(40, ge=0, description="Validation calculations, counted when queued.")
    cpu_hours: float = Field(2.0, ge=0, description="CPU-hours of training and validation.")
    llm_tokens: int = Field(200_000, ge=0, description="Prompt + completion tokens of the LLM planner.")


@dataclass
class PoolLimits:
    """What a candidate pool may hold (from the campaign spec); ``None`` means no limit."""

    families: list[str] | None = None
    elements: list[str] | None = None
    max_items: int | None = None

    def describe(self) -> str:
        parts = [f"families {self.families}" if self.families else ""]
        parts.append(f"elements {self.elements}" if self.elements else "")
        parts.append(f"at most {self.max_items} items" if self.max_items else "")
        return ", ".join(p for p in parts if p)


@dataclass
class Verdict:
    """The outcome of one check on one call."""

    check: str
    ok: bool
    message: str = ""
    amended: bool = False  # the check changed the call's arguments (items left out, a limit added)


class GuardrailViolation(ToolInputError):
    """A call the guardrails refused; the message tells the planner why and what is allowed."""

    def __init__(self, message: str, verdicts: list[Verdict]) -> None:
        super().__init__(message)
        self.verdicts = verdicts


class StepCapReached(CampaignStop):
    """The planner used all the steps allowed for one request."""


class TokenBudgetExhausted(CampaignStop):
    """The LLM token budget cannot pay for another model call."""


class Guardrails:
    """The checks for one campaign workspace."""

    def __init__(
        self,
        workspace: Workspace,
        state: CampaignState,
        budget: Budget,
        *,
        allowed_elements: list[str] | None = None,
        forbidden_elements: list[str] | None = None,
        required_elements: list[str] | None = None,
        allowed_levels: list[str] | None = None,
        approve_expensive: bool = False,
        approver: Approver | None = None,
        max_steps: int = 60,
        max_repeats: int = 2,
        pool: PoolLimits | None = None,
    ) -> None:
        self.ws, self.state, self.budget = workspace, state, budget
        self.allowed = set(allowed_elements or [])
        self.forbidden = set(forbidden_elements or [])
        self.required = set(required_elements or [])
        self.allowed_levels = list(allowed_levels or ["chgnet"])
        self.approve_expensive = approve_expensive
        self.approver = approver
        self.max_steps = max_steps
        self.max_repeats = max_repeats
        self.pool = pool or PoolLimits()
        self._approved: set[str] = set()
        #: items no planner may have calculated (the campaign's audit set until it releases them)
        self.reserved: Callable[[], set[str]] = set
        self.new_request()

    def new_request(self) -> None:
        """Reset the per-request counters (step cap, repeat detection)."""
        self.steps = 0
        self._calls: Counter[str] = Counter()

    def remaining(self) -> dict[str, float]:
        """Budget left, per kind: the budget less the spending of the state's scope (a campaign,
        or one request)."""
        return {
            "calculations": self.budget.calculations - self.state.spent("calculations"),
            "cpu_hours": round(self.budget.cpu_hours - self.state.spent("cpu_hours"), 4),
            "llm_tokens": self.budget.llm_tokens - self.state.spent("llm_tokens"),
        }

    def limits(self) -> str:
        """The hard limits besides the budget, in words (for the planner's prompt)."""
        parts = [f"forbidden elements {sorted(self.forbidden)}" if self.forbidden else ""]
        parts.append(f"required elements (in every item) {sorted(self.required)}" if self.required else "")
        parts.append(f"allowed elements {sorted(self.allowed)}" if self.allowed else "")
        parts.append(f"validation levels {self.allowed_levels}")
        parts.append(f"candidate pool: {self.pool.describe()}" if self.pool.describe() else "")
        parts.append(f"{self.max_steps} tool calls per request")
        return "; ".join(p for p in parts if p)

    def check_tokens(self, prompt: int, completion: int) -> None:
        """Stop before an LLM call whose request bound plus ``completion`` tokens could pass the limit."""
        left = self.remaining()["llm_tokens"]
        if prompt + completion > left:
            raise TokenBudgetExhausted(
                f"LLM token budget exhausted: {left:.0f} of {self.budget.llm_tokens} left, the next call "
                f"needs up to {prompt} prompt + {completion} completion tokens"
            )

    def check(self, spec: ToolSpec, args: dict[str, Any]) -> tuple[dict[str, Any], list[Verdict]]:
        """Amend or refuse one call of the tool ``spec`` registers; returns the arguments to run
        with and the verdicts."""
        tool = spec.name
        verdicts: list[Verdict] = []
        self.steps += 1
        if self.steps > self.max_steps:
            raise StepCapReached(f"step cap reached: {self.max_steps} tool calls allowed per request")
        verdicts.append(Verdict("step_cap", True, f"step {self.steps}/{self.max_steps}"))

        # the same call while nothing has changed (no new label, calculation or model) is a loop
        world = (*self.state.store.version(), len(self.state.models()))
        signature = tool + json.dumps([args, world], sort_keys=True, default=str)
        self._calls[signature] += 1
        if self._calls[signature] > self.max_repeats and not spec.polls:
            self._reject(
                verdicts,
                "repeat",
                f"this exact {tool} call was already made {self._calls[signature] - 1} times in this "
                "request; use its earlier result, change the arguments, or finish with an answer",
            )
        verdicts.append(Verdict("repeat", True))

        left = self.remaining()
        if spec.compute and left["cpu_hours"] <= 0:
            self._reject(
                verdicts, "budget_cpu_hours", f"CPU-hour budget of {self.budget.cpu_hours} is used up"
            )
        args = dict(args)
        for check in spec.checks:
            args = self._checks[check](args, verdicts)
        return args, verdicts

    @property
    def _checks(self) -> dict[GuardrailCheck, Callable[[dict[str, Any], list[Verdict]], dict[str, Any]]]:
        return {
            "forbidden_elements": self._check_forbidden,
            "pool": self._check_pool,
            "validation": self._check_validation,
        }

    def _reject(self, verdicts: list[Verdict], check: str, message: str) -> None:
        verdicts.append(Verdict(check, False, message))
        raise GuardrailViolation(f"refused by guardrail '{check}': {message}", verdicts)

    def element_problem(self, elements: set[str]) -> str | None:
        """Why an item made of ``elements`` may not be calculated, or ``None``."""
        if bad := elements & self.forbidden:
            return f"forbidden elements {sorted(bad)}"
        if self.allowed and (bad := elements - self.allowed):
            return f"elements {sorted(bad)} not allowed"
        if missing := self.required - elements:
            return f"required elements {sorted(missing)} missing"
        return None

    def _check_forbidden(self, args: dict[str, Any], verdicts: list[Verdict]) -> dict[str, Any]:
        """Add the forbidden elements to a query's ``elements_none`` and the required ones to its
        ``elements_all``."""
        for key, limit, what in (
            ("elements_none", self.forbidden, "forbidden"),
            ("elements_all", self.required, "required"),
        ):
            given = sorted(args.get(key) or [])
            if limit and (merged := sorted(set(given) | limit)) != given:
                verdicts.append(Verdict("elements", True, f"added {what} elements {sorted(limit)}", True))
                args = {**args, key: merged}
        return args

    def _check_pool(self, args: dict[str, Any], verdicts: list[Verdict]) -> dict[str, Any]:
        """Keep a pool inside the spec's families, elements and size."""
        notes = []
        for name in ("families", "elements"):
            limit = getattr(self.pool, name)
            if not limit:
                continue
            asked = args.get(name)
            inside = [v for v in asked or limit if v in limit]
            if not inside:
                self._reject(verdicts, "pool", f"expected {name} among {limit}, got {asked}")
            if asked != inside:
                notes.append(f"{name} {asked or 'all'} → {inside}")
            args[name] = inside
        if self.pool.max_items and (args.get("max_items") or 10**9) > self.pool.max_items:
            notes.append(f"max_items {args.get('max_items')} → {self.pool.max_items}")
            args["max_items"] = self.pool.max_items
        verdicts.append(Verdict("pool", True, "; ".join(notes), bool(notes)))
        return args

    def _check_validation(self, args: dict[str, Any], verdicts: list[Verdict]) -> dict[str, Any]:
        level = args["level"]
        if level not in self.allowed_levels:
            self._reject(verdicts, "level", f"expected a level among {self.allowed_levels}, got {level!r}")
        if get_level(level).needs_approval and level not in self._approved:
            n = len(args.get("item_ids") or [])
            if self.approve_expensive or (self.approver is not None and self.approver(level, n)):
                self._approved.add(level)
                verdicts.append(Verdict("approval", True, f"{level} approved"))
            else:
                self._reject(
                    verdicts,
                    "approval",
                    f"level {level!r} costs {get_level(level).cost:g}× CHGNet per structure and needs "
                    "approval (interactive confirmation, or approve_expensive: true in the campaign spec)",
                )
        ids = list(dict.fromkeys(args.get("item_ids") or []))
        if level == self.allowed_levels[0] and (held := self.reserved() & set(ids)):
            ids = [i for i in ids if i not in held]
            verdicts.append(
                Verdict(
                    "audit", True, f"left out {sorted(held)[:5]}: reserved for the random audit set", True
                )
            )
            if not ids:
                self._reject(verdicts, "audit", "every item asked for is reserved for the random audit set")
        sub = load_slice(self.ws, args["slice_id"], ids)
        if len(sub) < len(ids):
            known = set(sub.ids)
            unknown = [i for i in ids if i not in known]
            self._reject(
                verdicts, "ids", f"expected ids of slice {args['slice_id']}, got unknown {unknown[:5]}"
            )
        keep, refused = [], {}
        cfg = self.ws.settings.validation
        unsound = check_structures(sub.structures, cfg)
        for item_id, symbols, why in zip(sub.ids, site_elements(sub.structures), unsound, strict=True):
            if problem := self.element_problem(symbols) or why:
                refused[item_id] = problem
            else:
                keep.append(item_id)
        self.state.refuse(refused)
        dropped = [f"{item_id}: {reason}" for item_id, reason in refused.items()]
        verdicts.append(Verdict("elements+sanity", not dropped, "; ".join(dropped[:10]), bool(dropped)))
        left = self.remaining()["calculations"]
        charge = get_level(level).charge
        if left < charge:
            self._reject(
                verdicts,
                "budget_calculations",
                f"calculation budget of {self.budget.calculations} is used up",
            )
        if not keep:
            self._reject(verdicts, "elements+sanity", "no candidate passed: " + "; ".join(dropped[:10]))
        fits = int(left / charge + 1e-9)
        if len(keep) > fits:
            verdicts.append(
                Verdict(
                    "budget_calculations",
                    True,
                    f"trimmed {len(keep)} → {fits} calculations at {level} (budget left)",
                    True,
                )
            )
            keep = keep[:fits]
        else:
            verdicts.append(
                Verdict("budget_calculations", True, f"{len(keep) * charge:g} of {left:g} left ({level})")
            )
        return {**args, "item_ids": keep}


def verdicts_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]
