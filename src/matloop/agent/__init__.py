"""The agent: planners (LLM, rules), guardrails, decision log, campaigns, reports, ``ask``."""

from __future__ import annotations

from matloop.agent.ask import ask
from matloop.agent.campaign import run_campaign

__all__ = ["ask", "run_campaign"]
