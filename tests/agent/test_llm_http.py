"""The LLM client against an OpenAI-protocol HTTP server on 127.0.0.1 that ignores every cap:
the token budget, the request fields, and what happens when the server errs or is slow."""

from __future__ import annotations

import pytest
from tests.agent.fake_openai import Sleep, Status, Text, ToolCall

from matloop.agent.chat_model import LLMUnavailable, make_chat_model
from matloop.agent.conversation import Conversation
from matloop.agent.guardrails import TokenBudgetExhausted
from matloop.settings import LLMSettings


def _conv(campaign, server, **settings) -> Conversation:
    s = LLMSettings(base_url=server.url, model="fake", **settings)
    return Conversation(
        make_chat_model(s),
        campaign.toolbox,
        campaign.guardrails,
        settings=s,
        backoff_s=0.0,
        note=campaign.note,
    )


def test_a_server_that_ignores_every_cap_never_takes_the_budget_past_its_limit(campaign, fake_openai):
    left: list[float] = []

    def script(body, n):
        left.append(campaign.guardrails.remaining()["llm_tokens"])
        return Text(tokens=100_000)  # never stops on its own

    server = fake_openai(script)
    limit = 8_300  # the third call can afford only part of the 1,024-token cap
    campaign.guardrails.budget = campaign.guardrails.budget.model_copy(update={"llm_tokens": limit})
    conv = _conv(campaign, server, max_idle_turns=100)
    conv.unfinished = lambda: "0 of 2 rounds done"  # text never ends the run: it keeps asking
    with pytest.raises(TokenBudgetExhausted, match="LLM token budget exhausted"):
        conv.run("system", "go")
    spent = campaign.state.spent("llm_tokens")
    assert 0.6 * limit < spent <= limit
    caps = [body["max_tokens"] for body in server.requests]
    assert len(caps) >= 3
    assert all(b["max_completion_tokens"] == b["max_tokens"] for b in server.requests)  # both fields
    assert caps[0] == 1024 and caps[-1] < 1024  # clamped to what the budget had left
    assert all(cap < budget_left for cap, budget_left in zip(caps, left, strict=True))
    assert all(n < 100_000 for n in server.sent)  # every reply was cut by the client
    notes = [r for r in campaign.log.records() if r["phase"] == "note"]
    assert len(notes) == len(caps) and all(r["result"]["cut"] for r in notes)


def test_cap_fields_tool_choice_and_no_null_content(campaign, fake_openai):
    def script(body, n):
        if n == 1:
            return ToolCall("next_step", {"tool": "campaign_status", "arguments": {}})
        return ToolCall("next_step", {"tool": "finish", "answer": "5 calculations left"})

    server = fake_openai(script)
    assert _conv(campaign, server).run("system", "status?") == "5 calculations left"
    first, second = server.requests
    assert first["tool_choice"] == {"type": "function", "function": {"name": "next_step"}}
    assert [t["function"]["name"] for t in first["tools"]] == ["next_step"]
    assistant = [m for m in second["messages"] if m["role"] == "assistant"]
    assert assistant and all(m["content"] for m in assistant)  # never `content: null`
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}

    native = fake_openai(lambda body, n: Text(tokens=3))
    _conv(campaign, native, tool_calling="native").run("system", "hi")
    body = native.requests[0]
    assert body["tool_choice"] == "auto" and len(body["tools"]) == len(campaign.toolbox.specs)

    openai = LLMSettings(base_url=None)  # OpenAI itself refuses both fields at once
    from matloop.agent.chat_model import cap_request

    assert cap_request(openai, 100) == {"max_tokens": 100}  # LangChain sends it as max_completion_tokens
    assert cap_request(LLMSettings(base_url="http://x/v1", cap_parameter="max_tokens"), 7) == {
        "extra_body": {"max_tokens": 7}
    }


def test_a_deterministic_server_error_is_not_retried_again_and_again(campaign, fake_openai):
    server = fake_openai(lambda body, n: Status(500, "1 validation error: content must be a string"))
    with pytest.raises(LLMUnavailable, match=r"HTTP 500.*validation error"):
        _conv(campaign, server).run("system", "hi")
    assert len(server.requests) == 2  # one retry: the same error twice is not transient


def test_a_request_too_long_for_the_context_is_not_retried_and_says_what_to_check(campaign, fake_openai):
    server = fake_openai(lambda body, n: Status(400, "Requested tokens (3000) exceed context window of 2048"))
    with pytest.raises(LLMUnavailable, match=r"context window.*--n_ctx"):
        _conv(campaign, server).run("system", "hi")
    assert len(server.requests) == 1


def test_a_slow_server_times_out_once_with_a_hint(campaign, fake_openai):
    server = fake_openai(lambda body, n: Sleep(3.0))
    with pytest.raises(LLMUnavailable, match="MATLOOP_LLM__TIMEOUT_S"):
        _conv(campaign, server, timeout_s=0.5).run("system", "hi")
    assert len(server.requests) == 1


def test_an_unreachable_server_is_retried_then_named(campaign, fake_openai):
    server = fake_openai(lambda body, n: Text(tokens=1))
    url = server.url
    server.close()  # nothing listens there any more
    s = LLMSettings(base_url=url, model="fake", max_retries=2)
    conv = Conversation(make_chat_model(s), campaign.toolbox, campaign.guardrails, settings=s, backoff_s=0.0)
    with pytest.raises(LLMUnavailable, match=r"cannot reach http://127\.0\.0\.1.*MATLOOP_LLM__BASE_URL"):
        conv.run("system", "hi")
