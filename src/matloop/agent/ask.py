"""``matloop.agent.ask``: answer a natural-language request by planning and calling tools.

With an LLM configured (or a chat model passed in) the LLM planner answers; otherwise (and when
the model fails) :class:`QuestionRulesPlanner` does. Either way the request is parsed first: what
it cannot tell (an element neither wanted nor unwanted, a budget it cannot read) is asked before
anything runs, and the limits it states are the campaign's guardrails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field

from matloop.agent.campaign import Campaign, llm_configured, run_campaign
from matloop.agent.guardrails import Approver, Budget
from matloop.agent.request import TARGET_NEEDED, ParsedRequest, parse_request
from matloop.agent.session import Planner, Session
from matloop.agent.spec import CampaignSpec
from matloop.errors import CampaignStop
from matloop.settings import get_settings
from matloop.workspace import Workspace

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

COMPUTED = {"formation_energy_per_atom"}


class AskResult(BaseModel):
    answer: str = Field(description="The answer, with numbers and ids.")
    planner: str = Field(description="Planner that answered.")
    workspace: str = Field(description="Workspace directory holding the artefacts and the decision log.")
    ids: list[str] = Field(description="Ids of the slices, feature sets, models and batches used.")
    steps: int = Field(description="Planner steps logged.")
    tokens: int = Field(0, description="LLM tokens charged for this request.")
    notice: str = Field("", description="Why the answer did not come from the planner asked for, if so.")
    needs: list[str] = Field(default_factory=list, description="Questions to answer before anything runs.")


def _ids(campaign: Campaign, first_step: int) -> list[str]:
    found: dict[str, None] = {}
    for rec in campaign.log.records():
        if rec["step"] >= first_step and rec["phase"] == "done" and isinstance(rec["result"], dict):
            for key, value in rec["result"].items():
                if key.endswith("_id") and isinstance(value, str):
                    found[value] = None
    return list(found)


def computed(req: ParsedRequest) -> bool:
    """Whether the request asks for a property the validation levels compute on a generated pool
    (prototypes, or substitution candidates for stable crystals; otherwise a dataset holding it
    answers)."""
    return req.target in COMPUTED and req.dataset in (None, "prototypes", "substitution")


def spec_from_request(req: ParsedRequest, text: str, *, pool_items: int = 150) -> CampaignSpec:
    """The campaign spec a parsed request stands for: a small campaign on a prototype pool (at most
    ``pool_items`` candidates) for a property the level computes, else on the dataset holding it."""
    pool: dict[str, Any] = {"source": "prototypes", "max_items": pool_items}
    if req.goal == "stable":  # new crystals of the named elements, by data-mined substitution
        elements = sorted({*req.elements_include, *req.elements_allowed})
        pool = {"source": "substitution", "elements": elements, "max_items": pool_items}
    elif not computed(req):
        pool = {"source": req.dataset or "mp_formation_energy"}
        if req.n_elements is not None:
            pool["query"] = {"n_elements": req.n_elements}
    else:
        if req.elements_allowed:
            pool["elements"] = req.elements_allowed
        if req.families:
            pool["families"] = req.families
    spec: dict[str, Any] = {
        "name": "ask",
        "request": text,
        "target": {"property": req.target, "goal": req.goal or "learn", "window": req.window},
        "pool": pool,
        "elements": {
            "forbidden": req.elements_exclude,
            "required": req.elements_include,
            "allowed": req.elements_allowed,
        },
        "rounds": 2,
        "seed_size": 6,
        "batch_size": 4,
        "planner": "rules",
    }
    if req.level:
        spec["level"] = req.level
    if not computed(req):  # no level computes it: the dataset's own labels are revealed
        spec["level"] = "lookup"
    if req.budget is not None or req.cpu_hours is not None:
        limits = {"calculations": req.budget, "cpu_hours": req.cpu_hours}
        spec["budget"] = {k: v for k, v in limits.items() if v is not None}
    return CampaignSpec.model_validate(spec)


#: the fields of a spec a request sets (the rest keep their defaults): what ``ask --plan`` prints
PLAN_FIELDS = {
    "name",
    "request",
    "target",
    "pool",
    "level",
    "budget",
    "elements",
    "rounds",
    "seed_size",
    "batch_size",
    "planner",
}


def plan_yaml(spec: CampaignSpec) -> str:
    """A request's campaign spec as a short ``campaign.yaml`` (it loads with ``CampaignSpec.from_yaml``)."""
    return yaml.safe_dump(
        spec.model_dump(mode="json", include=PLAN_FIELDS), sort_keys=False, allow_unicode=True
    )


def plan_notes(req: ParsedRequest) -> list[str]:
    """What the parse reports back, and what a campaign spec of it leaves out."""
    notes = list(req.notes)
    if req.n_elements is not None and computed(req):
        notes.append(
            f"{req.n_elements} elements per item: not a limit of the {req.dataset or 'prototypes'} pool"
        )
    if req.target and not computed(req):
        notes.append(
            f"{req.target} is read from the dataset {req.dataset or 'mp_formation_energy'}: `matloop ask` "
            "answers from it; a campaign on it needs a level that computes the property"
        )
    return notes


class QuestionRulesPlanner:
    """The rules answer to one request: a property the validation level computes starts a small
    campaign of its own on a prototype pool; a property held by a dataset is answered by querying
    it (range/search goals) or training a model on it (learn goals); a request it cannot parse is
    answered with what it understood and what it needs."""

    name = "rules"

    def __init__(
        self,
        request: str,
        *,
        budget: Budget | None = None,
        approver: Approver | None = None,
        progress: Callable[[str], None] | None = None,
        pool_items: int = 150,
    ) -> None:
        self.request = request
        self.parsed = parse_request(request)
        self.budget = budget
        self.pool_items = pool_items
        self.approver, self.progress = approver, progress
        #: the campaign started for a computed property, if one was
        self.campaign: Campaign | None = None

    def not_understood(self) -> str | None:
        """The answer to a request this planner cannot act on, or ``None``."""
        req = self.parsed
        if not req.needs:
            return None
        return f"I understood: {req.understood()}. I need: {'; '.join(req.needs)}."

    def run(self, session: Session) -> str:
        req = self.parsed
        if (answer := self.not_understood()) is not None:
            return answer
        if computed(req):
            return self._campaign(session)
        session.guardrails.new_request()
        try:
            return f"Understood: {req.understood()}. " + _answer_from_data(session, req)
        except CampaignStop as exc:
            return f"Understood: {req.understood()}. Could not answer: {exc}"

    def _campaign(self, session: Session) -> str:
        req = self.parsed
        spec = spec_from_request(req, self.request, pool_items=self.pool_items)
        if self.budget is not None:
            spec.budget = self.budget
        directory = session.ws.root / Workspace.new_id("campaign")
        self.campaign = campaign = run_campaign(
            spec, directory, approver=self.approver, progress=self.progress, settings=session.ws.settings
        )
        st = campaign.state
        labels = st.labels(spec.target.property, spec.level)
        best = sorted(labels, key=lambda lb: lb["value"])[:3]
        found = campaign.found()
        return (
            f"Understood: {req.understood()}. Campaign {st.meta('status')} ({st.meta('reason')}): "
            f"{len(labels)} {spec.target.property}@{spec.level} labels; lowest: "
            + ", ".join(f"{b['item_id']} {b['value']:.3f} {b['unit']}" for b in best)
            + (f"; {len(found)} in the window {spec.target.window}" if spec.target.window else "")
            + f". Report: {campaign.ws.root / 'report.html'}"
        )


def _answer_from_data(campaign: Session, req: ParsedRequest) -> str:
    """Query the dataset holding the target; for a learn goal, also train a model on it."""
    dataset = req.dataset or "mp_formation_energy"
    window = req.window
    campaign.guardrails.new_request()
    args: dict[str, Any] = {"source": dataset, "properties": [req.target]}
    if req.elements_include:
        args["elements_all"] = req.elements_include
    if req.elements_exclude:
        args["elements_none"] = req.elements_exclude
    if req.n_elements is not None:
        args["n_elements"] = req.n_elements
    if window and req.goal == "window":
        args["property_ranges"] = {req.target: window}
    q = campaign.toolbox.call("query_dataset", args, rationale=f"rules: {req.understood()}")
    if not q.ok:
        raise CampaignStop(q.message)
    stats = q.result.properties.get(req.target)
    head = f"{q.result.count} items in {dataset} (slice {q.result.slice_id})"
    stat = (
        f"; {req.target}: mean {_num(stats.mean)}, min {_num(stats.min)}, max {_num(stats.max)} {stats.unit}"
        if stats
        else ""
    )
    if req.goal != "learn":
        return head + stat
    fs = campaign.toolbox.call("featurize", {"slice_id": q.result.slice_id}, rationale="rules: graphs")
    if not fs.ok:
        raise CampaignStop(fs.message)
    model = campaign.toolbox.call(
        "train_uq_gnn",
        {"feature_set_id": fs.result.feature_set_id, "target": req.target},
        rationale="rules: learn the target",
    )
    if not model.ok:
        raise CampaignStop(model.message)
    trained, m = model.result, model.result.metrics
    return (
        head + stat + f". Model {trained.model_id} ({trained.method}, "
        f"{trained.n_train} training items): test MAE {m.mae:.3g} {trained.unit}, "
        f"R² {m.r2:.3f}, 95% coverage {m.coverage_95:.2f}"
    )


def _num(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3g}"


def ask(
    request: str,
    *,
    workspace: str | Path | None = None,
    planner: Literal["auto", "llm", "rules"] = "auto",
    model: BaseChatModel | None = None,
    budget: Budget | None = None,
    max_steps: int = 40,
    approver: Approver | None = None,
    progress: Callable[[str], None] | None = None,
    confirm: Callable[[ParsedRequest, CampaignSpec | None], bool] | None = None,
    pool_items: int = 150,
) -> AskResult:
    """Answer ``request`` by planning and calling tools in ``workspace`` (settings default).

    Nothing runs while the request leaves a question open (``needs`` lists them; without a
    language model a missing target is one) or when ``confirm``, shown the parse and the campaign
    spec it stands for (``None`` when the parse names no target), says no. A campaign started for
    the request screens a prototype pool of at most ``pool_items`` candidates.

    The planners are those of campaigns: the LLM planner answering one request, falling back on
    the rules planner for requests. The budget applies to this request alone: its calculations,
    CPU-hours and LLM tokens are counted apart from earlier requests in the same workspace. If the
    model is unreachable, refuses the request, sends a reply that cannot be read or makes no valid
    progress, the rules planner answers and ``notice`` says why.
    """
    settings = get_settings()
    root = Path(workspace or settings.workspace)
    rules = QuestionRulesPlanner(
        request, budget=budget, approver=approver, progress=progress, pool_items=pool_items
    )
    use_llm = model is not None or planner == "llm" or (planner == "auto" and llm_configured(settings.llm))
    req = rules.parsed
    needs = [n for n in req.needs if not (use_llm and n == TARGET_NEEDED)]  # a model may find the target
    if needs:
        answer = f"I understood: {req.understood()}. I need: {'; '.join(needs)}."
        return AskResult(answer=answer, planner=rules.name, workspace=str(root), ids=[], steps=0, needs=needs)
    plan = spec_from_request(req, request, pool_items=pool_items) if req.target else None
    if confirm is not None and not confirm(req, plan):
        return AskResult(
            answer="Not run: not confirmed.", planner=rules.name, workspace=str(root), ids=[], steps=0
        )
    chosen: Planner = rules
    if use_llm:
        from matloop.agent.llm import LLMPlanner  # LangChain: imported only when an LLM plans

        chosen = LLMPlanner(model, fallback=rules, question=request)
    spec = CampaignSpec(
        name="ask",
        request=request,
        budget=budget or Budget(),
        max_steps=max_steps,
        level=req.level or "chgnet",
    )
    campaign = Campaign(root, spec, approver=approver, progress=progress, settings=settings)
    campaign.state.scope = f"{Workspace.new_id('ask')}:"  # this request's own spending
    campaign.planner = chosen.name
    first = campaign.log.next_step()
    try:
        answer = chosen.run(campaign)
    except CampaignStop as exc:
        answer = f"stopped: {exc}"
    tokens = int(campaign.guardrails.budget.llm_tokens - campaign.guardrails.remaining()["llm_tokens"])
    ran, first = (rules.campaign, 0) if rules.campaign is not None else (campaign, first)
    return AskResult(
        answer=answer,
        planner=campaign.planner,
        workspace=str(ran.ws.root),
        ids=_ids(ran, first),
        steps=ran.log.steps(),
        tokens=tokens,
        notice=getattr(chosen, "handed_over", ""),
    )
