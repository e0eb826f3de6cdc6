"""The LLM planner: a LangChain tool-calling loop over the toolbox.

OpenAI by default (``OPENAI_API_KEY``), or any OpenAI-compatible server through
``MATLOOP_LLM__BASE_URL`` (vLLM, Ollama, llama.cpp server). Transient API errors are retried
with exponential backoff; if the model stays unreachable the campaign falls back to the rules
planner (logged) instead of stopping. Tool errors the model can fix go back to it as tool
messages. Token use is charged to the budget and checked before every model call.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from matloop.agent.guardrails import Guardrails, StepCapReached
from matloop.agent.registry import Toolbox
from matloop.errors import CampaignStop
from matloop.prompts import load_prompt
from matloop.settings import LLMSettings, get_settings

if TYPE_CHECKING:
    from matloop.agent.campaign import Campaign

MAX_OUTPUT_TOKENS = 1024


class LLMUnavailable(RuntimeError):
    """The model could not be reached after all retries."""


def make_chat_model(settings: LLMSettings | None = None) -> BaseChatModel:
    """A ``ChatOpenAI`` client from the settings (the key is passed, never logged)."""
    from langchain_openai import ChatOpenAI

    s = settings or get_settings().llm
    key = s.api_key or os.environ.get("OPENAI_API_KEY") or ("not-needed" if s.base_url else None)
    return ChatOpenAI(
        model=s.model,
        base_url=s.base_url,
        api_key=key,
        temperature=s.temperature,
        timeout=s.timeout_s,
        max_retries=0,
        max_tokens=MAX_OUTPUT_TOKENS,
    )


def _transient() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import openai

        kinds += [
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        ]
    except ImportError:
        pass
    return tuple(kinds)


def _tokens(ai: AIMessage, prompt_chars: int) -> int:
    usage = getattr(ai, "usage_metadata", None) or {}
    if usage.get("total_tokens"):
        return int(usage["total_tokens"])
    return prompt_chars // 4 + len(str(ai.content)) // 4 + 20 * len(ai.tool_calls)


def _chars(messages: list[BaseMessage]) -> int:
    return sum(
        len(str(m.content)) + len(json.dumps(getattr(m, "tool_calls", []), default=str)) for m in messages
    )


class Conversation:
    """One request answered by a tool-calling model through a toolbox."""

    def __init__(
        self,
        model: BaseChatModel,
        toolbox: Toolbox,
        guardrails: Guardrails,
        *,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        on_collect: Any = None,
    ) -> None:
        self.toolbox, self.guardrails = toolbox, guardrails
        self.bound = model.bind_tools(toolbox.langchain_tools())
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.on_collect = on_collect
        self._schema_chars = len(json.dumps([t.args for t in toolbox.langchain_tools()], default=str))
        self._last_tokens = 0

    def _invoke(self, messages: list[BaseMessage]) -> AIMessage:
        """One model call, refused beforehand if it could take the token budget past its limit.

        The prompt only grows, so the next call costs at least the last one; the completion is
        capped at ``MAX_OUTPUT_TOKENS``; text is counted at 3 characters per token (conservative).
        """
        chars = _chars(messages)
        upcoming = max((chars + self._schema_chars) // 3, self._last_tokens) + MAX_OUTPUT_TOKENS
        self.guardrails.check_tokens(upcoming)
        errors = _transient()
        for attempt in range(self.max_retries + 1):
            try:
                ai = self.bound.invoke(messages)
                break
            except errors as exc:
                if attempt == self.max_retries:
                    raise LLMUnavailable(f"{type(exc).__name__}: {exc}") from exc
                time.sleep(self.backoff_s * 2**attempt)
        self._last_tokens = _tokens(ai, chars)
        self.toolbox.state.charge(f"llm:{uuid.uuid4().hex}", "llm_tokens", self._last_tokens, "LLM call")
        return ai  # type: ignore[return-value]

    def run(self, system: str, request: str) -> str:
        """Loop until the model answers without tool calls, or a guardrail stops it."""
        self.guardrails.new_request()
        messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(request)]
        while True:
            ai = self._invoke(messages)
            messages.append(ai)
            if not ai.tool_calls and not ai.invalid_tool_calls:
                return str(ai.content)
            rationale = str(ai.content)[:500]
            for bad in ai.invalid_tool_calls:
                messages.append(
                    ToolMessage(
                        f"<tool_error>could not parse the arguments of {bad.get('name')}: "
                        f"{bad.get('error')}; "
                        "send them as a JSON object</tool_error>",
                        tool_call_id=bad.get("id") or "invalid",
                    )
                )
            for call in ai.tool_calls:
                try:
                    out = self.toolbox.call(call["name"], call["args"], rationale=rationale)
                except StepCapReached as exc:
                    return f"stopped: {exc}"
                except CampaignStop:
                    raise
                except Exception as exc:  # a tool crashed: tell the model, keep the loop alive
                    messages.append(
                        ToolMessage(
                            f"<tool_error>{type(exc).__name__}: {exc}</tool_error>", tool_call_id=call["id"]
                        )
                    )
                    continue
                if out.ok and call["name"] == "collect_validation" and self.on_collect:
                    self.on_collect()
                messages.append(ToolMessage(out.for_llm(), tool_call_id=call["id"]))


def campaign_goal(campaign: Campaign) -> str:
    spec = campaign.spec
    t = spec.target
    goal = {
        "learn": f"learn {t.property} accurately",
        "window": f"find items with {t.property} in {t.window}",
        "minimise": f"find the lowest {t.property}",
        "maximise": f"find the highest {t.property}",
    }[t.goal]
    pool = f"pool: {spec.pool.source}" + (
        f" (max {spec.pool.max_items} items)" if spec.pool.max_items else ""
    )
    return (spec.request or goal) + f"; {pool}; batch size {spec.batch_size}; up to {spec.rounds} rounds"


class LLMPlanner:
    """Planner driven by a chat model; falls back to the rules planner on an outage."""

    name = "llm"

    def __init__(self, model: BaseChatModel | None = None, *, backoff_s: float = 1.0) -> None:
        self.model = model
        self.backoff_s = backoff_s

    def system_prompt(self, campaign: Campaign, goal: str | None = None) -> str:
        spec = campaign.spec
        return (
            load_prompt(
                "system",
                campaign=spec.name,
                goal=goal or campaign_goal(campaign),
                level=spec.level,
                budget=campaign.guardrails.remaining(),
            )
            + "\n\n"
            + load_prompt("tools")
        )

    def run(self, campaign: Campaign) -> str:
        from matloop.agent.rules import RulesPlanner

        settings = get_settings().llm
        try:
            model = self.model or make_chat_model(settings)
            conv = Conversation(
                model,
                campaign.toolbox,
                campaign.guardrails,
                max_retries=settings.max_retries,
                backoff_s=self.backoff_s,
                on_collect=lambda: setattr(campaign, "round", campaign.round + 1),
            )
            status = campaign.toolbox.call("campaign_status", {}, rationale="state at start").result
            request = campaign_goal(campaign) + f"\nCampaign status: {json.dumps(status)}"
            answer = conv.run(self.system_prompt(campaign), request)
        except LLMUnavailable as exc:
            campaign.note(f"LLM unavailable ({exc}); falling back to the rules planner")
            campaign.context.planner = "rules (fallback)"
            return RulesPlanner().run(campaign)
        campaign.state.set_meta("answer", answer)
        return answer
