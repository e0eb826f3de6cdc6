"""``matloop campaign plan|run|resume|status|report|log`` and ``matloop ask``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

campaign_app = typer.Typer(help="Closed-loop campaigns: run, resume, inspect.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)
Dir = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Campaign directory.")]
Yes = Annotated[
    bool, typer.Option("--yes", "-y", help="Approve expensive levels (cp2k, vasp) without asking.")
]
_debug = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"matloop {version('matloop')}", highlight=False)
        raise typer.Exit()


def set_debug(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Autonomous, uncertainty-driven materials-discovery campaigns."""
    _debug["on"] = debug


#: Exit codes of ``campaign run`` / ``resume`` (and of every command for errors).
EXIT_ERROR = 1
EXIT_STOPPED = 3


@contextmanager
def _errors() -> Iterator[None]:
    """Errors as one line (one per problem for a spec), unless --debug: matloop's own errors
    say what was expected and what arrived; anything else is reported as an internal error."""
    from matloop.errors import MatloopError

    try:
        yield
    except (MatloopError, typer.BadParameter, OSError, RuntimeError, ValueError, TypeError) as exc:
        if _debug["on"]:
            raise
        internal = "" if isinstance(exc, MatloopError | typer.BadParameter) else f"{type(exc).__name__}: "
        for line in str(exc).splitlines() or [""]:
            console.print(f"[red]error:[/red] {escape(internal + line)}", highlight=False, soft_wrap=True)
        console.print("[dim](run with matloop --debug … for the traceback)[/dim]")
        raise typer.Exit(EXIT_ERROR) from None


def _one_line(text: Any, limit: int = 100) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def log_counts(records: list[dict[str, Any]]) -> str:
    """Steps of a decision log by outcome: the same line on the terminal and in ``campaign log``."""
    phases: dict[int, set[str]] = {}
    for r in records:
        phases.setdefault(r["step"], set()).add(r["phase"])
    ran = sum("planned" in p for p in phases.values())
    failed = sum("error" in p for p in phases.values())
    refused = sum("rejected" in p for p in phases.values())
    notes = sum(p == {"note"} for p in phases.values())
    return (
        f"{len(phases)} steps: {ran} tool calls run ({failed} failed), {refused} refused, {notes} notes"
        f" ({len(records)} records)"
    )


def _progress(out: Console = console):
    start = time.monotonic()

    def say(message: str) -> None:
        elapsed = time.monotonic() - start
        out.print(
            f"[dim]{int(elapsed // 60):02d}:{int(elapsed % 60):02d}[/dim] {escape(message)}",
            highlight=False,
            soft_wrap=True,
        )

    return say


def _print_plan(request: str) -> None:
    """``ask --plan``: the campaign.yaml on stdout, notes and questions on stderr."""
    from matloop.agent.ask import plan_notes, plan_yaml, spec_from_request
    from matloop.agent.request import parse_request

    req = parse_request(request)
    for note in plan_notes(req):
        err_console.print(f"note: {note}", markup=False, highlight=False)
    if req.needs:
        for question in req.needs:
            err_console.print(f"needs: {question}", markup=False, highlight=False)
        err_console.print("error: re-phrase the request as suggested; no plan written", markup=False)
        raise typer.Exit(1)
    sys.stdout.write(plan_yaml(spec_from_request(req, request)))


def _confirm(req, spec) -> bool:
    """Show what the request was read as and ask before the first calculation."""
    from matloop.agent.ask import plan_notes, plan_yaml

    console.print("I read the request as:", style="bold")
    console.print(
        plan_yaml(spec) if spec is not None else req.understood(),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for note in plan_notes(req):
        console.print(f"note: {note}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    return typer.confirm("Run it?", default=True)


def _interactive() -> bool:
    """Whether a person can answer questions (a terminal on stdin)."""
    return sys.stdin.isatty()


def _approver(assume_yes: bool):
    """Interactive approval of expensive levels when a terminal is attached."""
    if assume_yes:
        return lambda level, n: True
    if not _interactive():
        return None
    return lambda level, n: typer.confirm(f"Run {n} {level} calculations (expensive)?", default=False)


def _open(directory: Path):
    """The campaign in ``directory`` for reading (no lock); its state is checked first."""
    spec_file = directory / "campaign.yaml"
    if not spec_file.exists():
        raise typer.BadParameter(f"{directory} is not a campaign directory (no campaign.yaml)")
    from matloop.agent.campaign import Campaign
    from matloop.agent.integrity import check_state
    from matloop.agent.spec import CampaignSpec

    check_state(directory)
    return Campaign(directory, CampaignSpec.from_yaml(spec_file))


@campaign_app.command("run")
def run(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Campaign YAML file.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", "-d", help="Campaign directory (default ./campaigns/NAME).")
    ] = None,
    yes: Yes = False,
) -> None:
    """Create a campaign directory from SPEC and run it to the end (writes report.html).

    Exit codes: 0 finished, 1 error (bad spec, damaged state, campaign busy or failed), 3 stopped
    before the end (a failed step, SIGTERM or Ctrl-C: resume to continue)."""
    from matloop.agent.campaign import run_campaign
    from matloop.agent.spec import CampaignSpec

    start = time.monotonic()
    with _errors():
        parsed = CampaignSpec.from_yaml(spec)
        directory = directory or Path("campaigns") / parsed.name
        console.print(f"campaign [bold]{escape(parsed.name)}[/bold] → {escape(str(directory))}")
        campaign = run_campaign(parsed, directory, approver=_approver(yes), progress=_progress())
    _finish(campaign, time.monotonic() - start)


@campaign_app.command("plan")
def plan(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Campaign YAML file.")],
) -> None:
    """Print what SPEC will spend before its labels, computing nothing and writing no campaign
    directory: the pool, its screening calculations, the reference phases of the hull, and what the
    budget leaves for labels. Exit code 1 when that is less than the audit, seed set and one batch."""
    from matloop.agent.campaign import plan_spec
    from matloop.agent.spec import CampaignSpec

    with _errors():
        result = plan_spec(CampaignSpec.from_yaml(spec))
    for line in result.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not result.fits:
        console.print(f"[red]error:[/red] {escape(result.refusal())}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR)


@campaign_app.command("resume")
def resume(
    directory: Dir,
    yes: Yes = False,
) -> None:
    """Continue a campaign after a crash or stop: finished steps are not redone (exit codes as
    for run)."""
    from matloop.agent.campaign import run_campaign

    start = time.monotonic()
    with _errors():
        campaign = run_campaign(
            None,
            directory,
            resume=True,
            approver=_approver(yes),
            progress=_progress(),  # type: ignore[arg-type]
        )
    _finish(campaign, time.monotonic() - start)


def _audit_table(campaign, unit: str) -> Table:
    """The audit set's headline numbers (the report's first table)."""
    table = Table(title="random audit set (95 % intervals)")
    table.add_column("")
    table.add_column("value")
    for name, value in campaign.audit.summary().headline(unit):
        table.add_row(name, escape(value))
    return table


def _finish(campaign, seconds: float) -> None:
    """The closing summary; a campaign that stopped before its end exits with EXIT_STOPPED."""
    st = campaign.state
    labels = st.labels(campaign.spec.target.property, campaign.spec.level)
    console.print(_audit_table(campaign, labels[0]["unit"] if labels else ""))
    text = (
        f"{_one_line(st.meta('reason'), 200)} — {len(labels)} labels, {log_counts(campaign.log.records())}, "
        f"{seconds / 60:.1f} min; report: {campaign.ws.root / 'report.html'}"
    )
    console.print(f"[bold]{st.meta('status')}[/bold]: {escape(text)}", highlight=False, soft_wrap=True)
    if st.meta("status") != "finished":
        raise typer.Exit(EXIT_STOPPED)


def _status_line(c) -> str:
    """The stored status, told apart from a process that is gone mid-run."""
    from matloop.agent.integrity import running

    status = c.state.meta("status", "not started")
    if status == "running" and not running(c.ws.root):
        return "stopped mid-round (no process is running it; resume to continue)"
    return status


def _picks(c, limit: int, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The campaign's picks by name, best label first for an optimisation (latest first otherwise):
    id, formula, round, μ and σ when picked, and the label once it is known."""
    from matloop.data.slices import load_slice

    value = {lb["item_id"]: lb["value"] for lb in labels}
    picks = c.state.candidates()[::-1]
    sign = {"minimize": 1, "maximize": -1}.get(c.spec.target.goal)
    if sign is not None:
        picks.sort(key=lambda p: (p["item_id"] not in value, sign * value.get(p["item_id"], 0.0)))
    first: dict[str, dict[str, Any]] = {}
    for p in picks:
        first.setdefault(p["item_id"], p)
    picks = list(first.values())[:limit]
    ids = [p["item_id"] for p in picks]
    formulas = c.state.store.formulas(ids)  # from the calculations: no pool to read
    unqueued = [i for i in ids if i not in formulas]
    if unqueued and c.audit.plan:
        pool = load_slice(c.ws, c.audit.plan["pool_slice"]).subset(unqueued)
        formulas |= dict(zip(unqueued, pool.formulas(), strict=True))
    return [
        {
            "id": p["item_id"],
            "formula": formulas.get(p["item_id"]),
            "round": p["round"],
            "mean": p["mean"],
            "std": p["std"],
            "label": value.get(p["item_id"]),
        }
        for p in picks
    ]


def _picks_table(picks: list[dict[str, Any]], unit: str) -> Table:
    table = Table(title=f"picks ({unit})" if unit else "picks")
    for col in ("id", "formula", "round", "μ ± σ when picked", "label"):
        table.add_column(col)
    for p in picks:
        predicted = f"{p['mean']:.4g} ± {p['std']:.2g}" if p["mean"] is not None else "-"
        label = f"{p['label']:.4g}" if p["label"] is not None else "not yet"
        table.add_row(escape(p["id"]), escape(p["formula"] or "?"), str(p["round"]), predicted, label)
    return table


@campaign_app.command("status")
def status(
    directory: Dir,
    top: Annotated[int, typer.Option(min=0, help="Picks listed by name.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the tables.")] = False,
) -> None:
    """Status, budget, labels, audit and the best picks of a campaign."""
    with _errors():
        c = _open(directory)
    from matloop.validation.store import ValidationStore

    target = f"{c.spec.target.property}@{c.spec.level}"
    labels = c.state.labels(c.spec.target.property, c.spec.level)
    unit = labels[0]["unit"] if labels else ""
    states = dict(sorted(ValidationStore(c.ws).status_counts().items()))
    budget = c.guardrails.remaining()
    picks = _picks(c, top, labels)
    if as_json:
        doc = {
            "campaign": c.spec.name,
            "status": _status_line(c),
            "reason": c.state.meta("reason", ""),
            "target": target,
            "unit": unit,
            "labels": len(labels),
            "calculations": sum(states.values()),
            "calculation_states": states,
            "models": len(c.state.models()),
            "decisions": log_counts(c.log.records()),
            "budget_left": budget,
            "audit": dict(c.audit.summary().headline(unit)),
            "picks": picks,
        }
        print(json.dumps(doc, default=str))
        return
    table = Table(title=f"campaign {escape(c.spec.name)}")
    table.add_column("item")
    table.add_column("value")
    rows = {
        "status": _status_line(c),
        "reason": _one_line(c.state.meta("reason", "")),
        "labels": f"{len(labels)} {target}",
        "calculations": str(sum(states.values())),
        f"calculation states ({c.spec.executor})": ", ".join(f"{n} {state}" for state, n in states.items())
        or "none yet",
        "models": str(len(c.state.models())),
        "decisions": log_counts(c.log.records()),
        **{f"budget left: {k}": f"{v:.6g}" for k, v in budget.items()},
    }
    for k, v in rows.items():
        table.add_row(escape(k), escape(v))
    console.print(table)
    console.print(_audit_table(c, unit))
    if picks:
        console.print(_picks_table(picks, unit))


@campaign_app.command("report")
def report(
    directory: Dir,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Write the self-contained HTML report (learning curve, parity, candidates, budget)."""
    from matloop.agent.report import write_report

    with _errors():
        path = write_report(_open(directory), output)
    console.print(f"report: {escape(str(path))}")


@campaign_app.command("log")
def log(
    directory: Dir,
    raw: Annotated[bool, typer.Option("--json", help="The records as JSON, one per line.")] = False,
) -> None:
    """Pretty-print the decision log."""
    from matloop.agent.decisions import DecisionLog

    records = DecisionLog(directory / "decisions.jsonl").records()
    if raw:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
        return
    colour = {"planned": "cyan", "done": "green", "error": "red", "rejected": "red", "note": "yellow"}
    for r in records:
        payload = r["arguments"] if r["phase"] == "planned" else r["result"]
        text = json.dumps(payload, default=str, ensure_ascii=False)
        text = text[:240] + ("…" if len(text) > 240 else "")
        head = f"[bold]{r['step']:>4}[/bold] {r['time'][11:19]} r{r['round']} {r['planner']:<6}"
        phase = f"[{colour.get(r['phase'], 'white')}]{r['phase']:<8}[/]"
        console.print(f"{head} {phase} {r['tool'] or '-'} ", end="", highlight=False)
        console.print(text if r["phase"] != "note" else r["rationale"], markup=False, highlight=False)
        if r["phase"] == "planned" and r["rationale"]:
            console.print(f"       why: {r['rationale']}", markup=False, highlight=False, style="dim")
        for v in r.get("verdicts", []) if r["phase"] in ("planned", "rejected") else []:
            if not v["ok"] or (v.get("message") and v["check"] != "step_cap"):
                mark = "ok" if v["ok"] else "REFUSED"
                console.print(f"       {v['check']} {mark}: {v['message']}", markup=False, highlight=False)
    console.print(log_counts(records))


def ask_command(
    request: Annotated[str, typer.Argument(help="What you want, in words.")],
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w")] = None,
    planner: Annotated[str, typer.Option(help="auto, llm or rules.")] = "auto",
    plan: Annotated[
        bool,
        typer.Option("--plan", help="Print the campaign.yaml the request stands for and exit; nothing runs."),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run without confirming the plan; approve expensive levels.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="The answer as one JSON document on stdout (progress on stderr).")
    ] = False,
) -> None:
    """Answer a request by planning and calling tools; prints the answer with numbers and ids.

    The plan (what the request was read as) is shown first and, in a terminal, confirmed before
    anything runs; a request the parser cannot read unambiguously is asked about, never guessed.
    """
    from matloop.agent.ask import ask

    if planner not in ("auto", "llm", "rules"):
        raise typer.BadParameter(f"expected auto, llm or rules, got {planner!r}")
    if plan:
        _print_plan(request)
        return
    interactive = _interactive() and not as_json  # a JSON reader is a program: nothing is asked
    while True:
        with _errors():
            result = ask(
                request,
                workspace=workspace,
                planner=planner,  # type: ignore[arg-type]
                approver=_approver(yes),
                progress=_progress(err_console if as_json else console),
                confirm=None if yes or not interactive else _confirm,
            )
        if not result.needs:
            break
        if as_json:
            print(result.model_dump_json())
            raise typer.Exit(1)
        questions = "\n".join(f"  - {q}" for q in result.needs)
        if not interactive:
            err_console.print(f"error: the request is not clear enough to run:\n{questions}", markup=False)
            err_console.print("Re-phrase the request as suggested and run it again.", markup=False)
            raise typer.Exit(1)
        console.print(
            f"Before anything runs, I need:\n{questions}", markup=False, highlight=False, soft_wrap=True
        )
        request = typer.prompt("Re-phrase the request (empty to stop)", default="", show_default=False)
        if not request.strip():
            raise typer.Exit(1)
    if as_json:
        print(result.model_dump_json())
        return
    console.print(result.answer, style="bold", markup=False, highlight=False, soft_wrap=True)
    tokens = f"; {result.tokens} LLM tokens" if result.tokens else ""
    console.print(
        f"planner {result.planner}; {result.steps} steps{tokens}; workspace {result.workspace}; "
        f"ids {', '.join(result.ids)}",
        style="dim",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
