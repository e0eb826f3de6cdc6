"""What a planner and the report see of a running campaign: a :class:`Session` protocol.

Planners depend on this protocol, never on the campaign runner (:mod:`matloop.agent.campaign`),
which implements it and wires the concrete pieces together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matloop.agent.guardrails import Guardrails
    from matloop.agent.spec import CampaignSpec
    from matloop.agent.state import CampaignState
    from matloop.agent.tool_runner import Toolbox
    from matloop.workspace import Workspace


class Session(Protocol):
    """A running campaign as a planner sees it: its spec, workspace and state (read), the tools
    behind guardrails (call), the round (started explicitly) and the planner's name (written with
    every decision), and when to stop."""

    spec: CampaignSpec
    ws: Workspace
    state: CampaignState
    guardrails: Guardrails
    planner: str

    @property
    def toolbox(self) -> Toolbox:
        """The tools behind the guardrails and the decision log."""
        ...

    @property
    def round(self) -> int:
        """The current round (written with every decision)."""
        ...

    def start_round(self, number: int) -> None:
        """Begin round ``number`` (the campaign's own work for a new round runs here)."""
        ...

    def step(self, key: str, tool: str, args: dict[str, Any], rationale: str) -> Any:
        """Run one keyed tool call, or rebuild its stored result when it already finished; the
        result is the tool's typed result model."""
        ...

    def note(self, message: str, **extra: Any) -> None:
        """A non-tool entry in the decision log."""
        ...

    def strategy(self) -> str:
        """The acquisition strategy of the campaign."""
        ...

    def goal_args(self) -> dict[str, Any]:
        """The acquisition arguments of the campaign's goal (window or direction)."""
        ...

    def used_ids(self) -> list[str]:
        """Items already labelled, sent to a calculation, refused by a guardrail or in the audit set."""
        ...

    def own_labels(self) -> list[dict[str, Any]]:
        """The campaign's labels of its target at its level, audit items excluded."""
        ...

    def found(self) -> list[dict[str, Any]]:
        """Labelled items inside the target window."""
        ...

    def stop_reason(self, model_id: str | None) -> str | None:
        """Why the campaign should stop now, or ``None``."""
        ...


class Planner(Protocol):
    """Drives a campaign to its end through a :class:`Session`; returns why it stopped."""

    name: str

    def run(self, session: Session) -> str: ...
