"""A scripted chat model at the LangChain boundary, and a small campaign to drive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field
from tests.agent.fake_openai import fake_openai  # noqa: F401 (a fixture)

from matloop.agent.campaign import Campaign, CampaignSpec

Script = Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(BaseChatModel):
    """Replies come from ``script(messages)``; tool calls are real ``AIMessage.tool_calls``."""

    script: Any
    tokens_per_call: int = 100
    calls: int = 0
    bound_tools: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: list[Any], **kwargs: Any) -> ScriptedChatModel:
        self.bound_tools = [t.name for t in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any):
        self.calls += 1
        ai = self.script(messages)
        ai.usage_metadata = {
            "input_tokens": self.tokens_per_call - 10,
            "output_tokens": 10,
            "total_tokens": self.tokens_per_call,
        }
        return ChatResult(generations=[ChatGeneration(message=ai)])


def call(name: str, args: dict[str, Any], content: str = "", n: int = 0) -> AIMessage:
    return AIMessage(content=content, tool_calls=[{"name": name, "args": args, "id": f"call-{name}-{n}"}])


def tool_messages(messages: list[BaseMessage]) -> list[str]:
    return [str(m.content) for m in messages if m.type == "tool"]


@pytest.fixture
def small_spec() -> CampaignSpec:
    return CampaignSpec(
        name="test",
        pool={"source": "prototypes", "families": ["rocksalt"], "max_items": 12},
        budget={"calculations": 5, "cpu_hours": 1.0, "llm_tokens": 1_000_000},
        elements={"forbidden": ["Pb"]},
        max_steps=12,
    )


@pytest.fixture
def campaign(settings, tmp_path, small_spec) -> Campaign:
    return Campaign(tmp_path / "campaign", small_spec)
