"""The chat-model client: an OpenAI-compatible server (OpenAI by default, ``OPENAI_API_KEY``; vLLM,
Ollama or a llama.cpp server through ``MATLOOP_LLM__BASE_URL``), streamed replies, the
completion cap sent in the request field(s) the server reads, and what a failed call means.

Unreachable or overloaded servers are retried with exponential backoff; requests the server
refuses (HTTP 4xx, an HTTP 500 that repeats, a timeout) and replies the client cannot read are
not. Either way :class:`LLMUnavailable` says what to check.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages

from matloop.errors import MatloopError
from matloop.settings import LLMSettings

#: smallest completion worth asking for; a call that cannot afford it is not made
MIN_COMPLETION_TOKENS = 32
#: tokens allowed for the text a server's chat template adds around the messages and tool schemas
#: (llama-cpp-python's ``chatml-function-calling``: about 150)
CHAT_TEMPLATE_TOKENS = 256
Retry = Literal["no", "once", "yes"]


class LLMUnavailable(MatloopError, RuntimeError):
    """The model could not be reached or refused the request; the message says what to check."""


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


def failure_advice(exc: Exception, settings: LLMSettings, *, mid_reply: bool = False) -> tuple[Retry, str]:
    """Whether to retry a failed model call and what to tell the user. A connection lost once the
    reply has started (``mid_reply``), and anything the client raises that is not a refusal, a
    timeout or an unreachable server (a garbage stream line, a body of the wrong shape, an empty
    stream), is a reply it could not read: not retried."""
    where = settings.base_url or "the OpenAI API"
    unread = f"{where} sent a reply that could not be read ({type(exc).__name__}: {one_line(str(exc), 200)})"
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
            return ("no", unread + "; the connection broke mid-reply") if mid_reply else ("yes", unreachable)
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
    if isinstance(exc, ConnectionError) and not mid_reply:
        return "yes", unreachable
    return "no", unread


def request_bound(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> int:
    """Tokens the server can read in a request, counted high: one per UTF-8 byte of the whole
    request serialised as JSON (every message, re-sent replies and tool calls included, and the
    tool schemas), plus :data:`CHAT_TEMPLATE_TOKENS` for the server's chat template. A byte-level
    BPE token covers at least one byte of the text it encodes, and JSON escapes only add bytes."""
    body = {"messages": convert_to_openai_messages(messages), "tools": tools}
    return len(json.dumps(body, ensure_ascii=False, default=str).encode()) + CHAT_TEMPLATE_TOKENS


def chunk_bound(chunk: BaseMessage) -> int:
    """Tokens a streamed chunk can hold, counted high: one per UTF-8 byte of its text, tool name
    and arguments, plus one (a token that prints nothing, such as the end of the reply)."""
    text = str(chunk.content) + "".join(
        (c.get("name") or "") + (c.get("args") or "") for c in getattr(chunk, "tool_call_chunks", [])
    )
    if not getattr(chunk, "tool_call_chunks", None) and getattr(chunk, "tool_calls", None):
        text += json.dumps(chunk.tool_calls, default=str)  # type: ignore[attr-defined]  # a whole message
    return len(text.encode()) + 1


def complete_calls(message: BaseMessage) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(calls, invalid calls) of a merged reply: a streamed call whose arguments are not one
    complete JSON object is invalid (LangChain completes cut-off JSON; a call cut short is never
    run). A whole message (a model that does not stream) keeps the calls it parsed."""
    chunks = getattr(message, "tool_call_chunks", None)
    if not chunks:
        return list(getattr(message, "tool_calls", [])), list(getattr(message, "invalid_tool_calls", []))
    calls, invalid = [], []
    for n, c in enumerate(chunks):
        raw, call_id = c.get("args") or "", c.get("id") or f"call-{c.get('index', n)}"
        try:
            args = json.loads(raw or "{}")
            error = "" if isinstance(args, dict) else f"expected a JSON object, got {type(args).__name__}"
        except json.JSONDecodeError as exc:
            error = f"the arguments are not complete JSON ({exc.msg} at character {exc.pos})"
        if error:
            invalid.append({"name": c.get("name"), "args": raw, "id": call_id, "error": error})
        else:
            calls.append({"name": c.get("name") or "", "args": args, "id": call_id, "type": "tool_call"})
    return calls, invalid


def drop_repeats(chunk: Any, seen: dict[tuple[Any, str], Any]) -> Any:
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
    tokens: int  # charged: the larger of the server's usage and the bound on what was sent and read
    cut: bool  # the reply reached the completion cap
