"""A self-contained HTML report of a campaign (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from matloop.agent.session import Session

if TYPE_CHECKING:
    from matloop.agent.decisions import DecisionLog


class Reported(Session, Protocol):
    """What the report reads: a session and its decision log."""

    log: DecisionLog


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def prospective_pairs(campaign: Reported) -> list[dict[str, Any]]:
    """Selected candidates whose label came back: the prediction made when they were picked vs the label."""
    spec = campaign.spec
    labels = {lb["item_id"]: lb for lb in campaign.state.labels(spec.target.property, spec.level)}
    return [
        {**c, "label": labels[c["item_id"]]["value"]}
        for c in campaign.state.candidates()
        if c["round"] > 0 and c["item_id"] in labels and c["mean"] is not None
    ]


def _learning_curve(campaign: Reported, pairs: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in campaign.state.models() if m["round"] > 0 and m["metrics"].get("mae") is not None]
    by_round: dict[int, list[float]] = defaultdict(list)
    for p in pairs:
        by_round[p["round"]].append(abs(p["mean"] - p["label"]))
    labels_before = defaultdict(int)
    for lb in campaign.state.labels(campaign.spec.target.property, campaign.spec.level):
        for r in range(lb["round"] + 1, campaign.spec.rounds + 2):
            labels_before[r] += 1
    if not models and not by_round:
        return "<p>No trained model yet.</p>"
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if models:
        ax.plot(
            [labels_before[m["round"]] for m in models],
            [m["metrics"]["mae"] for m in models],
            "o-",
            label="model MAE on its held-out split (few items: noisy)",
        )
    if by_round:
        rounds = sorted(by_round)
        ax.plot(
            [labels_before[r] for r in rounds],
            [float(np.mean(by_round[r])) for r in rounds],
            "s--",
            label="MAE on the next batch (before its labels)",
        )
    ax.set_xlabel("labels")
    ax.set_ylabel(f"MAE ({_unit(campaign)})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _parity(campaign: Reported, pairs: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        return "<p>No prediction/label pairs yet.</p>"
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for rnd in sorted({p["round"] for p in pairs}):
        sel = [p for p in pairs if p["round"] == rnd]
        ax.errorbar(
            [p["label"] for p in sel],
            [p["mean"] for p in sel],
            yerr=[p["std"] for p in sel],
            fmt="o",
            capsize=2,
            label=f"round {rnd}",
        )
    vals = [p["label"] for p in pairs] + [p["mean"] for p in pairs]
    lo, hi = min(vals), max(vals)
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set_xlabel(f"computed ({campaign.spec.level}) [{_unit(campaign)}]")
    ax.set_ylabel("predicted μ ± σ")
    ax.legend(fontsize=7)
    return _png(fig)


def _unit(campaign: Reported) -> str:
    labels = campaign.state.labels(campaign.spec.target.property, campaign.spec.level)
    return labels[0]["unit"] if labels else ""


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_report(campaign: Reported) -> str:
    spec, state = campaign.spec, campaign.state
    pairs = prospective_pairs(campaign)
    labels = {lb["item_id"]: lb["value"] for lb in state.labels(spec.target.property, spec.level)}
    cands = [
        [
            c["round"],
            c["item_id"],
            c["strategy"],
            c["mean"],
            c["std"],
            c["score"],
            labels.get(c["item_id"]),
            c["reason"],
        ]
        for c in state.candidates()
    ]
    remaining = campaign.guardrails.remaining()
    budget = [[k, getattr(spec.budget, k) - remaining[k], getattr(spec.budget, k)] for k in remaining]
    models = [
        [
            m["round"],
            m["model_id"],
            m["kind"],
            m["parent"],
            m["n_train"],
            m["metrics"].get("mae"),
            m["metrics"].get("r2"),
            m["metrics"].get("coverage_95"),
        ]
        for m in state.models()
    ]
    failures = [
        [c["round"], c["item_id"], c["status"], c["reason"]]
        for c in state.calcs()
        if c["status"] not in ("queued", "done", "running")
    ]
    pretrain = ""
    if spec.pretrained:
        pretrain = (
            f"<p><b>Initialisation:</b> the GNN was first trained on the bundled <code>"
            f"{html.escape(spec.pretrained.source)}</code> data ({html.escape(spec.pretrained.property)},"
            f" Materials Project DFT) and then fine-tuned on the <code>{spec.level}</code> labels computed in"
            " this campaign. The two levels are never mixed in one label column: the reference data only"
            " initialise the model.</p>"
        )
    mae = [abs(p["mean"] - p["label"]) for p in pairs]
    summary = f"{len(labels)} labels at level {spec.level}; {campaign.log.steps()} planner steps logged" + (
        f"; prospective MAE over all rounds {np.mean(mae):.4g} {_unit(campaign)}" if mae else ""
    )
    found = ""
    if spec.target.window is not None:
        hits = campaign.found()
        found = "<h2>Items in the target window</h2>" + _table(
            [[h["item_id"], h["value"], h["round"]] for h in hits], ["item", "value", "round"]
        )
    by_planner: dict[str, dict[str, int]] = defaultdict(lambda: {"planned": 0, "rejected": 0, "note": 0})
    for r in campaign.log.records():
        if r["phase"] in ("planned", "rejected", "note"):
            by_planner[r["planner"]][r["phase"]] += 1
    decisions = _table(
        [[name, n["planned"], n["rejected"], n["note"]] for name, n in by_planner.items()],
        ["planner", "tool calls run", "refused", "notes (hand-overs, stops, text replies)"],
    )
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{margin:4px}"
    )
    title = html.escape(spec.name)
    status = html.escape(str(state.meta("status", "?")))
    reason = html.escape(str(state.meta("reason", "")))
    fail_table = _table(failures, ["round", "item", "status", "reason"]) if failures else "<p>None.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>matloop: {title}</title>
<style>{style}</style></head><body>
<h1>Campaign {html.escape(spec.name)}</h1>
<p>Status: <b>{status}</b> — {reason}</p>
<p>Planner: {html.escape(campaign.planner)}; target: {html.escape(spec.target.property)}
({spec.target.goal}{" " + html.escape(str(spec.target.window)) if spec.target.window else ""});
level: {spec.level}; executor: {spec.executor}; selection: {campaign.strategy()}. {html.escape(summary)}.</p>
{pretrain}
<h2>Learning curve</h2>{_learning_curve(campaign, pairs)}
<p>Random-sampling reference: not available — labels exist only for the candidates this campaign computed
(the active-learning benchmark compares strategies against random sampling on fully labelled data).</p>
<h2>Parity (prediction when selected vs computed label)</h2>{_parity(campaign, pairs)}
{found}
<h2>Candidates per round and why</h2>
{_table(cands, ["round", "item", "strategy", "μ", "σ", "score", "label", "reason"])}
<h2>Models</h2>{_table(models, ["round", "model", "kind", "parent", "n_train", "MAE", "R²", "coverage 95%"])}
<h2>Failed or rejected calculations</h2>{fail_table}
<h2>Budget</h2>{_table(budget, ["kind", "used", "limit"])}
<h2>Decisions by planner</h2>{decisions}
<p>Each decision with its planner: <code>decisions.jsonl</code> (<code>matloop campaign log</code>).</p>
</body></html>"""


def write_report(campaign: Reported, path: str | Path | None = None) -> Path:
    """Write ``report.html`` in the campaign directory (or ``path``)."""
    out = Path(path) if path else campaign.ws.root / "report.html"
    out.write_text(render_report(campaign), encoding="utf-8")
    return out
