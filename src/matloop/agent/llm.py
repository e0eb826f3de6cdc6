"""The LLM planner: a chat model plans the campaign through the toolbox.

When the model cannot be reached, refuses the request, sends a reply that cannot be read, makes
no valid progress or spends the token budget, the planner logs why and hands over to the fallback
planner it was given (the campaign runner gives it the rules planner). Its final answer goes out
with the facts from the records and any claim they contradict flagged (:mod:`matloop.agent.facts`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from matloop.agent.chat_model import LLMUnavailable, make_chat_model, one_line
from matloop.agent.conversation import Conversation, NoProgress
from matloop.agent.facts import Facts
from matloop.agent.guardrails import TokenBudgetExhausted
from matloop.agent.tool_runner import to_json
from matloop.agent.tool_spec import tool_guide
from matloop.errors import CampaignStop
from matloop.prompts import load_prompt

if TYPE_CHECKING:
    from matloop.agent.session import Planner, Session


def campaign_goal(campaign: Session) -> str:
    spec = campaign.spec
    t = spec.target
    goal = {
        "learn": f"learn {t.property} accurately",
        "window": f"find items with {t.property} in {t.window}",
        "minimize": f"find the lowest {t.property}",
        "maximize": f"find the highest {t.property}",
        "stable": f"find new thermodynamically stable crystals: distance to the convex hull of "
        f"{t.property}@{spec.level} in {t.window} eV/atom",
    }[t.goal]
    pool = f"pool: {spec.pool.source}" + (
        f" (max {spec.pool.max_items} items)" if spec.pool.max_items else ""
    )
    return (spec.request or goal) + f"; {pool}; batch size {spec.batch_size}; up to {spec.rounds} rounds"


def campaign_unfinished(campaign: Session) -> str | None:
    """What is left of a campaign (rounds with budget to spend them), or ``None`` when it is done."""
    if campaign.stop_reason(None) is not None:
        return None
    done = max(campaign.round - 1, 0)  # the first collected batch is the seed set
    if done >= campaign.spec.rounds:
        return None
    left = campaign.guardrails.remaining()["calculations"]
    return f"{done} of {campaign.spec.rounds} rounds done, {left:.0f} calculations left"


class LLMPlanner:
    """Planner driven by a chat model; hands over to ``fallback`` when the model fails (without
    one, the campaign stops there).

    It runs the campaign to its end, or, given a ``question``, answers that one request: done
    once a tool has given the model data and it answers; its answer is the planner's result.
    """

    name = "llm"

    def __init__(
        self,
        model: BaseChatModel | None = None,
        *,
        fallback: Planner | None = None,
        question: str | None = None,
        backoff_s: float = 1.0,
    ) -> None:
        self.model = model
        self.fallback = fallback
        self.question = question
        self.backoff_s = backoff_s
        #: why the model's work went to the fallback planner, if it did
        self.handed_over = ""

    def system_prompt(self, campaign: Session, goal: str | None = None) -> str:
        spec = campaign.spec
        return (
            load_prompt(
                "system",
                campaign=spec.name,
                goal=goal or campaign_goal(campaign),
                level=spec.level,
                budget=campaign.guardrails.remaining(),
                limits=campaign.guardrails.limits(),
            )
            + "\n\n"
            + tool_guide(campaign.toolbox.specs.values())
        )

    def _conversation(self, campaign: Session, **hooks: Any) -> Conversation:
        settings = campaign.ws.settings.llm
        model = self.model or make_chat_model(settings)
        return Conversation(
            model,
            campaign.toolbox,
            campaign.guardrails,
            settings=settings,
            backoff_s=self.backoff_s,
            note=campaign.note,
            **hooks,
        )

    def run(self, campaign: Session) -> str:
        if self.question is not None:
            return self._answer(campaign, self.question)
        try:
            conv = self._conversation(
                campaign,
                on_round_end=lambda: campaign.start_round(campaign.round + 1),
                unfinished=lambda: campaign_unfinished(campaign),
            )
            status = campaign.toolbox.call("campaign_status", {}, rationale="state at start").result
            request = campaign_goal(campaign) + f"\nCampaign status: {json.dumps(to_json(status))}"
            answer = conv.run(self.system_prompt(campaign), request)
        except (LLMUnavailable, NoProgress, TokenBudgetExhausted) as exc:
            return self.hand_over(campaign, f"LLM planner: {exc}")
        if (left := campaign_unfinished(campaign)) is not None:
            return self.hand_over(campaign, f"the LLM planner stopped with {left} ({one_line(answer, 120)})")
        answer = Facts.read(campaign.toolbox.log, campaign.ws).checked(answer)
        campaign.state.set_meta("answer", answer)
        return f"LLM planner finished: {one_line(answer)}"

    def _answer(self, campaign: Session, question: str) -> str:
        """The model's answer to one request, checked against the request's records (a spent token
        budget stops it, as a campaign stop)."""
        system = self.system_prompt(campaign, goal=f"answer the request: {question}")
        first = campaign.toolbox.log.next_step()
        try:
            conv = self._conversation(campaign)
            conv.unfinished = lambda: None if conv.progressed else "no tool has given you data yet"
            answer = conv.run(system, question)
        except (LLMUnavailable, NoProgress) as exc:
            return self.hand_over(campaign, f"LLM planner: {exc}")
        return Facts.read(campaign.toolbox.log, campaign.ws, first).checked(answer)

    def hand_over(self, campaign: Session, why: str) -> str:
        """Log why the LLM planner stops, then let the fallback planner finish the campaign."""
        self.handed_over = why
        if self.fallback is None:
            raise CampaignStop(f"{why}; no fallback planner")
        campaign.note(f"{why}; falling back to the {self.fallback.name} planner")
        campaign.planner = f"{self.fallback.name} (fallback)"
        campaign.guardrails.new_request()
        return self.fallback.run(campaign)
