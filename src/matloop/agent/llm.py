"""The LLM planner: a LangChain tool-calling loop over the toolbox.

OpenAI by default (``OPENAI_API_KEY``), or any OpenAI-compatible server through
``MATLOOP_LLM__BASE_URL`` (vLLM, Ollama, llama.cpp server).

The token budget holds whatever the server does: replies are streamed; the completion cap is
sent in the request field(s) the server reads, clamped to what the budget has left, and the
reply is cut client-side at the cap, so a server that ignores it cannot run past it. The usage
the server reports is charged (a conservative estimate when it reports none), and a call whose
prompt and cap could cross the limit is not made.

Unreachable or overloaded servers are retried with exponential backoff; requests the server
refuses (HTTP 4xx, an HTTP 500 that repeats, a timeout) are not. Either way
:class:`LLMUnavailable` says what to check, and a campaign continues with the rules planner
(logged), as it does when the model makes no valid progress for ``max_idle_turns`` turns.

With ``tool_calling: forced`` the model must call one ``next_step`` tool (a tool name from a
fixed list and its arguments, or ``finish`` with the answer); servers that constrain output to
the tool's JSON schema (llama.cpp, vLLM) then always return a well-formed call.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from pydantic import Field, create_model

from matloop.agent.guardrails import Guardrails, StepCapReached, TokenBudgetExhausted
from matloop.agent.toolbox import Toolbox, to_json
from matloop.agent.toolspec import tool_guide
from matloop.errors import CampaignStop, MatloopError
from matloop.prompts import load_prompt
from matloop.settings import LLMSettings

if TYPE_CHECKING:
    from matloop.agent.session import Planner, Session

#: smallest completion worth asking for; a call that cannot afford it is not made
MIN_COMPLETION_TOKENS = 32
#: prompt characters per token assumed before the server reports usage (conservative)
CHARS_PER_TOKEN = 2.5
NEXT_STEP = "next_step"
Retry = Literal["no", "once", "yes"]


class LLMUnavailable(MatloopError, RuntimeError):
    """The model could not be reached or refused the request; the message says what to check."""


class NoProgress(MatloopError):
    """The model made no valid progress for several turns in a row."""


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def tool_calling_mode(settings: LLMSettings) -> Literal["native", "forced"]:
    if settings.tool_calling == "auto":
        return "forced" if settings.base_url else "native"
    return settings.tool_calling


def make_chat_model(s: LLMSettings) -> BaseChatModel:
    """A streaming ``ChatOpenAI`` client from the settings (the key is passed, never logged)."""
    from langchain_openai import ChatOpenAI

    key = s.api_key or os.environ.get("OPENAI_API_KEY") or ("not-needed" if s.base_url else None)
    if key is None:
        raise LLMUnavailable(
            "no language model configured: set OPENAI_API_KEY, or MATLOOP_LLM__BASE_URL for a local server"
        )
    return ChatOpenAI(
        model=s.model,
        base_url=s.base_url,
        api_key=key,
        temperature=s.temperature,
        timeout=s.timeout_s,
        max_retries=0,
        stream_usage=True,
    )


def cap_request(settings: LLMSettings, cap: int) -> dict[str, Any]:
    """Call arguments that carry the completion cap in the request field(s) the server reads."""
    field = settings.cap_parameter
    if field == "auto":
        field = "both" if settings.base_url else "max_completion_tokens"
    out: dict[str, Any] = {}
    if field in ("max_completion_tokens", "both"):
        out["max_tokens"] = cap  # LangChain sends it as max_completion_tokens
    if field in ("max_tokens", "both"):
        out["extra_body"] = {"max_tokens": cap}
    return out


def _failure(exc: Exception, settings: LLMSettings) -> tuple[Retry, str] | None:
    """Whether to retry a failed model call and what to tell the user; ``None``: not a model failure."""
    where = settings.base_url or "the OpenAI API"
    timeout = (
        f"{where} sent nothing for {settings.timeout_s:g} s; for a slow model raise MATLOOP_LLM__TIMEOUT_S"
    )
    unreachable = f"cannot reach {where} ({exc}); check MATLOOP_LLM__BASE_URL and that the server is running"
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on it
        openai = None  # type: ignore[assignment]
    if openai is not None:
        if isinstance(exc, openai.APITimeoutError):
            return "no", timeout
        if isinstance(exc, openai.APIConnectionError):
            return "yes", unreachable
        if isinstance(exc, openai.APIStatusError):
            code, body = exc.status_code, one_line(exc.message, 300)
            if code in (429, 502, 503, 504):
                return "yes", f"{where} is overloaded (HTTP {code}: {body})"
            hint = {
                400: "the usual cause is a prompt longer than the model's context window "
                "(llama.cpp server: --n_ctx 8192)",
                401: "check OPENAI_API_KEY or MATLOOP_LLM__API_KEY",
                403: "check OPENAI_API_KEY or MATLOOP_LLM__API_KEY",
                404: f"check MATLOOP_LLM__MODEL ({settings.model!r}) and MATLOOP_LLM__BASE_URL "
                "(it usually ends in /v1)",
                500: "the same request failed twice; see the server's log",
            }.get(code, "see the server's log")
            return (
                "once" if code == 500 else "no"
            ), f"{where} refused the request (HTTP {code}: {body}); {hint}"
    if isinstance(exc, TimeoutError):
        return "no", timeout
    if isinstance(exc, ConnectionError):
        return "yes", unreachable
    return None


def _chars(messages: list[BaseMessage]) -> int:
    return sum(
        len(str(m.content)) + len(json.dumps(getattr(m, "tool_calls", []), default=str)) for m in messages
    )


def _chunk_tokens(chunk: BaseMessage) -> int:
    """Tokens in one streamed chunk, counted high: at least one per non-empty chunk, 3 characters each."""
    text = str(chunk.content) + "".join(
        (c.get("name") or "") + (c.get("args") or "") for c in getattr(chunk, "tool_call_chunks", [])
    )
    if not text and getattr(chunk, "tool_calls", None):  # a whole message (models that do not stream)
        text = json.dumps(chunk.tool_calls, default=str)  # type: ignore[attr-defined]
    return math.ceil(len(text) / 3) if text else 0


def _drop_repeats(chunk: Any, seen: dict[tuple[Any, str], Any]) -> Any:
    """A chunk without the tool name and id it repeats (llama.cpp's server sends them in every chunk,
    and merged chunks would concatenate them into a name no tool has)."""
    parts = getattr(chunk, "tool_call_chunks", None)
    if not parts:
        return chunk
    fixed = []
    for part in parts:
        part = dict(part)
        for key in ("name", "id"):
            if part.get(key) and seen.get((part.get("index"), key)) == part[key]:
                part[key] = None
            elif part.get(key):
                seen[(part.get("index"), key)] = part[key]
        fixed.append(part)
    return chunk.model_copy(update={"tool_call_chunks": fixed})


@dataclass
class Reply:
    """One model reply and what it cost."""

    message: AIMessage
    tokens: int  # charged: the server's usage, else a conservative estimate
    cut: bool  # the reply reached the completion cap


def next_step_tool(toolbox: Toolbox) -> StructuredTool:
    """The one tool a model gets in forced mode: a tool name from a fixed list and its arguments."""
    choice = Literal[(*toolbox.specs, "finish")]  # type: ignore[valid-type]
    schema = create_model(
        NEXT_STEP,
        tool=(choice, Field(description="The tool to call next, or 'finish' to give the final answer.")),
        arguments=(dict[str, Any], Field(default_factory=dict, description="The tool's arguments.")),
        answer=(str, Field("", description="With 'finish': the answer, with numbers and ids.")),
    )
    return StructuredTool.from_function(
        func=lambda **_: "",
        name=NEXT_STEP,
        description="Take the next step: call one tool with its arguments, or finish with the answer.",
        args_schema=schema,
    )


def forced_guide(toolbox: Toolbox) -> str:
    """The tool list a forced-mode model reads in its prompt (it sees only ``next_step``'s schema)."""
    lines = [
        f"Answer every turn with one call of {NEXT_STEP}: 'tool' is one of the tools below and "
        "'arguments' its arguments; when you are done, tool 'finish' with your answer in 'answer'."
    ]
    for name, spec in toolbox.specs.items():
        fields = spec.schema.model_fields
        args = ", ".join(k + ("" if f.is_required() else "?") for k, f in fields.items())
        lines.append(f"- {name}({args}): {spec.description}")
    return "\n".join(lines)


class Conversation:
    """One request answered by a tool-calling model through a toolbox."""

    def __init__(
        self,
        model: BaseChatModel,
        toolbox: Toolbox,
        guardrails: Guardrails,
        *,
        settings: LLMSettings | None = None,
        backoff_s: float = 1.0,
        on_round_end: Callable[[], None] | None = None,
        unfinished: Callable[[], str | None] | None = None,
        note: Callable[..., None] | None = None,
    ) -> None:
        self.toolbox, self.guardrails = toolbox, guardrails
        self.settings = settings or toolbox.ws.settings.llm
        self.forced = tool_calling_mode(self.settings) == "forced"
        tools = [next_step_tool(toolbox)] if self.forced else toolbox.langchain_tools()
        self.bound = model.bind_tools(tools, tool_choice=NEXT_STEP if self.forced else "auto")
        self.backoff_s = backoff_s
        self.on_round_end = on_round_end
        self.unfinished = unfinished or (lambda: None)
        self.note = note or (lambda *_a, **_k: None)
        self._schema_chars = len(json.dumps([t.args for t in tools], default=str))
        self._tokens_per_char = 1 / CHARS_PER_TOKEN
        self.progressed = False  # a tool call other than reading the state has run

    # -- one model call --------------------------------------------------------------------
    def _invoke(self, messages: list[BaseMessage]) -> Reply:
        """One streamed model call within the token budget (never made if it could cross it)."""
        chars = _chars(messages) + self._schema_chars
        prompt = math.ceil(chars * self._tokens_per_char)
        left = self.guardrails.remaining()["llm_tokens"]
        cap = int(min(self.settings.max_completion_tokens, left - prompt))
        self.guardrails.check_tokens(prompt, max(cap, MIN_COMPLETION_TOKENS))
        attempt, retries = 0, {"no": 0, "once": min(1, self.settings.max_retries)}
        while True:
            try:
                reply = self._stream(messages, cap, prompt)
                break
            except Exception as exc:
                failure = _failure(exc, self.settings)
                if failure is None:
                    raise
                retry, message = failure
                if attempt >= retries.get(retry, self.settings.max_retries):
                    raise LLMUnavailable(message) from exc
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1
        usage: dict[str, Any] = dict(reply.message.usage_metadata or {})
        if usage.get("input_tokens"):  # calibrate the prompt estimate on the server's own count
            self._tokens_per_char = 1.15 * usage["input_tokens"] / chars
        self.toolbox.state.charge(
            f"{self.guardrails.token_scope}{uuid.uuid4().hex}", "llm_tokens", reply.tokens, "LLM call"
        )
        return reply

    def _stream(self, messages: list[BaseMessage], cap: int, prompt: int) -> Reply:
        """Read the reply chunk by chunk and stop reading at the completion cap."""
        total: Any = None
        received, cut = 0, False
        seen: dict[tuple[Any, str], Any] = {}
        stream = self.bound.stream(messages, **cap_request(self.settings, cap))
        try:
            for chunk in stream:
                chunk = _drop_repeats(chunk, seen)
                total = chunk if total is None else total + chunk
                received += _chunk_tokens(chunk)
                if received >= cap:
                    cut = True
                    break
        finally:
            stream.close()  # type: ignore[attr-defined]
        if total is None:
            total = AIMessage(content="")
        finish = (total.response_metadata or {}).get("finish_reason")
        cut = cut or finish == "length"
        calls, invalid = list(total.tool_calls), list(total.invalid_tool_calls)
        if cut:  # a call cut short has arguments the model never finished: never run it
            invalid += [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "error": "cut at the cap"}
                for c in calls
            ]
            calls = []
        message = AIMessage(
            content=total.content,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=total.usage_metadata,
            response_metadata=total.response_metadata,
        )
        usage = total.usage_metadata or {}
        if usage.get("total_tokens"):
            return Reply(message, int(usage["total_tokens"]), cut)
        # no usage (a reply cut short never gets it): the estimate, in which the chunk that reached
        # the cap counts up to it (a streamed chunk is about one token, the estimate rounds it up)
        return Reply(message, prompt + min(received, cap), cut)

    # -- the loop ----------------------------------------------------------------------------
    def _calls(self, ai: AIMessage) -> tuple[list[Any], list[Any], str | None]:
        """(tool calls, invalid calls, final answer or ``None``) of one reply."""
        if not ai.tool_calls and not ai.invalid_tool_calls:
            return [], [], str(ai.content)
        if not self.forced:
            return list(ai.tool_calls), list(ai.invalid_tool_calls), None
        calls: list[Any] = []
        invalid: list[Any] = list(ai.invalid_tool_calls)
        for c in ai.tool_calls:
            tool, arguments = c["args"].get("tool"), c["args"].get("arguments") or {}
            if c["name"] == NEXT_STEP and tool == "finish":
                return [], [], str(c["args"].get("answer") or ai.content)
            if c["name"] != NEXT_STEP or not isinstance(tool, str) or not isinstance(arguments, dict):
                error = f"expected {NEXT_STEP} with 'tool' (a name) and 'arguments' (an object), got {c}"
                invalid.append({"name": c["name"], "id": c["id"], "error": error})
            else:
                calls.append({"name": tool, "args": arguments, "id": c["id"]})
        return calls, invalid, None

    def run(self, system: str, request: str) -> str:
        """Loop until the model answers (and nothing is left undone), or a guardrail stops it."""
        self.guardrails.new_request()
        if self.forced:
            system += "\n\n" + forced_guide(self.toolbox)
        messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(request)]
        idle: list[str] = []
        while True:
            reply = self._invoke(messages)
            ai = reply.message
            calls, invalid, answer = self._calls(ai)
            if not ai.content and (ai.tool_calls or ai.invalid_tool_calls):  # no `content: null` sent back
                names = [c.get("name") for c in [*ai.tool_calls, *ai.invalid_tool_calls]]
                ai = ai.model_copy(update={"content": f"Calling {', '.join(map(str, names))}."})
            messages.append(ai)
            if answer is not None:
                cut = f", cut at the {self.settings.max_completion_tokens}-token cap" if reply.cut else ""
                self.note(
                    f"model answered in text ({reply.tokens} tokens{cut})",
                    text=one_line(answer, 300),
                    tokens=reply.tokens,
                    cut=reply.cut,
                )
                answer += " [answer cut at the length limit]" if reply.cut else ""
                left = self.unfinished() if answer.strip() else "the answer was empty"
                if left is None:
                    return answer
                idle.append(f"text only: {left}")
                messages.append(HumanMessage(f"Not done yet: {left}. Continue by calling a tool."))
            else:
                try:
                    progress = self._run_calls(messages, calls, invalid, one_line(str(ai.content), 500))
                except StepCapReached as exc:
                    return f"stopped: {exc}"
                if progress:
                    idle, self.progressed = [], True
                else:
                    what = "calls refused or failed" if calls else "invalid call"
                    idle.append(what + (" (reply cut at the cap)" if reply.cut else ""))
            if len(idle) >= self.settings.max_idle_turns:
                raise NoProgress(f"no valid progress in {len(idle)} model turns ({'; '.join(idle)})")

    def _run_calls(
        self, messages: list[BaseMessage], calls: list[dict], invalid: list[dict], rationale: str
    ) -> bool:
        """Run the calls of one reply; ``True`` when one of them made progress."""
        progress = False
        for bad in invalid:
            error = f"could not use the call of {bad.get('name')}: {bad.get('error')}; send a JSON object"
            self.note(f"invalid call: {one_line(error)}", arguments=one_line(str(bad.get("args")), 300))
            messages.append(
                ToolMessage(f"<tool_error>{error}</tool_error>", tool_call_id=bad.get("id") or "invalid")
            )
        for call in calls:
            try:
                out = self.toolbox.call(call["name"], call["args"], rationale=rationale)
            except CampaignStop:
                raise
            except Exception as exc:  # a tool crashed: tell the model, keep the loop alive
                self.toolbox.progress(f"{call['name']} failed: {one_line(str(exc))}")
                messages.append(
                    ToolMessage(
                        f"<tool_error>{type(exc).__name__}: {exc}</tool_error>", tool_call_id=call["id"]
                    )
                )
                continue
            if not out.ok:
                self.toolbox.progress(f"refused {call['name']}: {one_line(out.message)}")
            spec = self.toolbox.specs[call["name"]] if out.ok else None
            progress |= spec is not None and not spec.reads_only
            if spec is not None and spec.ends_round and self.on_round_end:
                self.on_round_end()
            messages.append(ToolMessage(out.for_llm(), tool_call_id=call["id"]))
        return progress


def campaign_goal(campaign: Session) -> str:
    spec = campaign.spec
    t = spec.target
    goal = {
        "learn": f"learn {t.property} accurately",
        "window": f"find items with {t.property} in {t.window}",
        "minimize": f"find the lowest {t.property}",
        "maximize": f"find the highest {t.property}",
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

    def run(self, campaign: Session) -> str:
        if self.question is not None:
            return self._answer(campaign, self.question)
        settings = campaign.ws.settings.llm
        try:
            conv = Conversation(
                self.model or make_chat_model(settings),
                campaign.toolbox,
                campaign.guardrails,
                settings=settings,
                backoff_s=self.backoff_s,
                on_round_end=lambda: setattr(campaign, "round", campaign.round + 1),
                unfinished=lambda: campaign_unfinished(campaign),
                note=campaign.note,
            )
            status = campaign.toolbox.call("campaign_status", {}, rationale="state at start").result
            request = campaign_goal(campaign) + f"\nCampaign status: {json.dumps(to_json(status))}"
            answer = conv.run(self.system_prompt(campaign), request)
        except (LLMUnavailable, NoProgress, TokenBudgetExhausted) as exc:
            return self.hand_over(campaign, f"LLM planner: {exc}")
        if (left := campaign_unfinished(campaign)) is not None:
            return self.hand_over(campaign, f"the LLM planner stopped with {left} ({one_line(answer, 120)})")
        campaign.state.set_meta("answer", answer)
        return f"LLM planner finished: {one_line(answer)}"

    def _answer(self, campaign: Session, question: str) -> str:
        """The model's answer to one request (a spent token budget stops it, as a campaign stop)."""
        settings = campaign.ws.settings.llm
        system = self.system_prompt(campaign, goal=f"answer the request: {question}")
        try:
            conv = Conversation(
                self.model or make_chat_model(settings),
                campaign.toolbox,
                campaign.guardrails,
                settings=settings,
                backoff_s=self.backoff_s,
                note=campaign.note,
            )
            conv.unfinished = lambda: None if conv.progressed else "no tool has given you data yet"
            return conv.run(system, question)
        except (LLMUnavailable, NoProgress) as exc:
            return self.hand_over(campaign, f"LLM planner: {exc}")

    def hand_over(self, campaign: Session, why: str) -> str:
        """Log why the LLM planner stops, then let the fallback planner finish the campaign."""
        self.handed_over = why
        if self.fallback is None:
            raise CampaignStop(f"{why}; no fallback planner")
        campaign.note(f"{why}; falling back to the {self.fallback.name} planner")
        campaign.context.planner = f"{self.fallback.name} (fallback)"
        campaign.guardrails.new_request()
        return self.fallback.run(campaign)
