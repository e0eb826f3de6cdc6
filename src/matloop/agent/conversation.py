"""One request answered by a tool-calling model through a toolbox.

The token budget is counted with a bound that cannot undercount a byte-level tokenizer (one token
per UTF-8 byte of the whole request and of the reply read, :func:`request_bound`,
:func:`chunk_bound`): a call is made only if its request's bound plus the completion cap fits
what the budget has left; the reply is cut client-side at the cap, so a server that ignores it
cannot run past it; the larger of the server's reported usage and the bound is charged, and a
failed call is charged its request's bound. A tool call cut at the cap, or whose arguments are
not one complete JSON object, is never run: it goes back to the model as an error. A model that
makes no valid progress for ``max_idle_turns`` turns raises :class:`NoProgress`.

With ``tool_calling: forced`` the model must call one ``next_step`` tool (a tool name from a
fixed list and its arguments, or ``finish`` with the answer); servers that constrain output to
the tool's JSON schema (llama.cpp, vLLM) then always return a well-formed call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, create_model

from matloop.agent.chat_model import (
    MIN_COMPLETION_TOKENS,
    LLMUnavailable,
    Reply,
    cap_request,
    chunk_bound,
    complete_calls,
    drop_repeats,
    failure_advice,
    one_line,
    request_bound,
    tool_calling_mode,
)
from matloop.agent.guardrails import Guardrails, StepCapReached
from matloop.agent.tool_runner import Toolbox
from matloop.errors import CampaignStop, MatloopError
from matloop.settings import LLMSettings

NEXT_STEP = "next_step"


class NoProgress(MatloopError):
    """The model made no valid progress for several turns in a row."""


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
        self._tools = [convert_to_openai_tool(t) for t in tools]
        self.read = 0  # bound on the tokens read of the current reply
        self.progressed = False  # a tool call other than reading the state has run

    # -- one model call --------------------------------------------------------------------
    def _invoke(self, messages: list[BaseMessage]) -> Reply:
        """One streamed model call, made only if the request's bound plus the completion cap fits
        the budget left. Each attempt is charged: a failed one its request and what was read."""
        prompt = request_bound(messages, self._tools)
        attempt, retries = 0, {"no": 0, "once": min(1, self.settings.max_retries)}
        while True:
            left = self.guardrails.remaining()["llm_tokens"]
            cap = int(min(self.settings.max_completion_tokens, left - prompt))
            self.guardrails.check_tokens(prompt, max(cap, MIN_COMPLETION_TOKENS))
            self.read = 0
            try:
                reply = self._stream(messages, cap, prompt)
            except Exception as exc:
                self._charge(prompt + self.read, "LLM call failed")
                retry, message = failure_advice(exc, self.settings, mid_reply=self.read > 0)
                if attempt >= retries.get(retry, self.settings.max_retries):
                    raise LLMUnavailable(message) from exc
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1
                continue
            self._charge(reply.tokens, "LLM call")
            return reply

    def _charge(self, tokens: int, note: str) -> None:
        self.toolbox.state.charge(f"llm:{uuid.uuid4().hex}", "llm_tokens", tokens, note)

    def _stream(self, messages: list[BaseMessage], cap: int, prompt: int) -> Reply:
        """Read the reply chunk by chunk (``self.read``: the bound on what was read) and stop at
        the completion cap, whatever the server does with it."""
        total: Any = None
        cut = False
        seen: dict[tuple[Any, str], Any] = {}
        stream = self.bound.stream(messages, **cap_request(self.settings, cap))
        try:
            for chunk in stream:
                chunk = drop_repeats(chunk, seen)
                total = chunk if total is None else total + chunk
                self.read += chunk_bound(chunk)
                if self.read >= cap:
                    cut = True
                    break
        finally:
            stream.close()  # type: ignore[attr-defined]
        if total is None:
            raise ValueError("the reply stream ended without a message")
        cut = cut or (total.response_metadata or {}).get("finish_reason") == "length"
        calls, invalid = complete_calls(total)
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
        reported = int((total.usage_metadata or {}).get("total_tokens") or 0)
        return Reply(message, max(reported, prompt + self.read), cut)

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
