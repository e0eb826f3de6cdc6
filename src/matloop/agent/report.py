"""A self-contained HTML report of a campaign (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from matloop.agent.audit_set import AuditSummary
from matloop.agent.hull import campaign_hull
from matloop.agent.session import Session
from matloop.audit_stats import N_BOOTSTRAP, in_window
from matloop.stability import NEAR_STABLE, chemical_system

if TYPE_CHECKING:
    from matloop.agent.audit_set import Audit
    from matloop.agent.decisions import DecisionLog


class Reported(Session, Protocol):
    """What the report reads: a session, its decision log and its audit set."""

    log: DecisionLog
    audit: Audit


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


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _audit_curve(summary: AuditSummary, unit: str) -> str:
    if not summary.rounds:
        return "<p>No model has been tested on the audit set yet (it needs two labelled audit items).</p>"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, colour in (("mae", "C0"), ("rmse", "C1")):
        est = [getattr(r.metrics, name) for r in summary.rounds]
        x = [r.labels for r in summary.rounds]
        y = [e.value for e in est]
        ax.errorbar(
            x,
            y,
            yerr=[
                [v - e.low for v, e in zip(y, est, strict=True)],
                [e.high - v for v, e in zip(y, est, strict=True)],
            ],
            fmt="o-",
            color=colour,
            capsize=3,
            label=f"{name.upper()} on {summary.labelled} audit items (95 % bootstrap)",
        )
    ax.set_xlabel("campaign labels the model was trained with")
    ax.set_ylabel(f"error ({unit})")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _calibration(summary: AuditSummary) -> str:
    if not summary.calibration:
        return "<p>No calibration yet.</p>"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    nominal, observed = zip(*summary.calibration, strict=True)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    ax.plot(nominal, observed, "o-", label=f"final model, {summary.labelled} audit items")
    ax.set_xlabel("nominal coverage of μ ± zσ")
    ax.set_ylabel("observed share of audit labels inside")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _found_vs_random(campaign: Reported, summary: AuditSummary, unit: str) -> str:
    own = campaign.own_labels()
    t = campaign.spec.target
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    n = np.arange(1, len(own) + 1)
    if summary.informativeness is not None:
        picked: dict[int, list[float]] = defaultdict(list)
        for p in prospective_pairs(campaign):
            picked[p["round"]].append(abs(p["mean"] - p["label"]))
        rounds = [r for r in summary.rounds if r.round in picked]
        x = np.array([r.round for r in rounds], dtype=float)
        mae = [r.metrics.mae for r in rounds]
        ax.bar(
            x - 0.2, [np.mean(picked[r.round]) for r in rounds], 0.4, label="picks (μ when picked vs label)"
        )
        ax.bar(
            x + 0.2,
            [m.value for m in mae],
            0.4,
            yerr=[[m.value - m.low for m in mae], [m.high - m.value for m in mae]],
            capsize=3,
            color="grey",
            label="random picks: audit items, same model (95 %)",
        )
        ax.set_xticks(x)
        ax.set_xlabel("round")
        ax.set_ylabel(f"mean |error| ({unit})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _png(fig)
    if (e := summary.enrichment) is not None and t.window is not None:
        hits = np.cumsum([in_window(lb["value"], t.window) for lb in own])
        ax.step(n, hits, where="post", label="campaign: hits found")
        rate = e.hit_rate
        ax.plot(n, n * rate.value, "k--", lw=1, label=f"random: n × {rate.value:.2g} (audit hit rate)")
        ax.fill_between(
            n, n * rate.low, n * rate.high, color="grey", alpha=0.25, label="random: 95 % interval"
        )
        ax.set_ylabel("hits")
    else:
        values = np.array([lb["value"] for lb in own])
        best = np.minimum.accumulate(values) if t.goal == "minimize" else np.maximum.accumulate(values)
        ax.step(n, best, where="post", label="campaign: best so far")
        for k, value in enumerate(_audit_values(campaign).values()):
            ax.axhline(
                value, color="grey", lw=0.6, alpha=0.6, label="audit items (random)" if k == 0 else None
            )
        ax.set_ylabel(f"{t.property} ({unit})")
    ax.set_xlabel("campaign calculations (audit excluded)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _stability_section(campaign: Reported) -> str:
    """Goal ``stable``: the stable and near-stable candidates with their decomposition, a hull plot
    per chemical system with hits, and how complete each system's reference set is."""
    if campaign.spec.target.goal != "stable":
        return ""
    hull, scores = campaign_hull(campaign)
    near = sorted((s for s in scores if s.e_above_hull <= NEAR_STABLE[-1]), key=lambda s: s.e_above_hull)
    rows, systems = [], {}
    for s in near:
        system = chemical_system(s.formula)
        systems.setdefault(system, hull.completeness(system.split("-")))
        label = (
            "stable"
            if s.stable
            else f"≤ {next(t for t in NEAR_STABLE if s.e_above_hull <= t) * 1000:.0f} meV"
        )
        decomposition = " + ".join(f"{x:.2f} {name}" for name, x in s.decomposition.items()) or "—"
        rows.append([s.item_id, s.formula, label, s.e_above_hull, s.e_above_references, decomposition])
    n_stable = sum(s.stable for s in scores)
    warnings = [
        f"<p><b>Warning:</b> chemical system {html.escape(system)} has only elemental reference phases: "
        "its stable candidates may be artefacts of the missing known phases.</p>"
        for system, count in systems.items()
        if count == 0
    ]
    complete = _table([[k, v] for k, v in systems.items()], ["chemical system", "reference phases"])
    plots = []
    for system in [k for k in systems if 2 <= len(k.split("-")) <= 3][:4]:
        from pymatgen.analysis.phase_diagram import PDPlotter

        _plt()
        ax = PDPlotter(hull.diagram(system.split("-")), backend="matplotlib").get_plot()
        ax.set_title(f"{system} at level {campaign.spec.level}")
        plots.append(_png(ax.figure))
    return (
        f"<h2>Stable crystals (convex hull at level {campaign.spec.level})</h2>"
        f"<p>{len(hull.references)} reference phases and {len(hull.candidates)} labelled candidates make the "
        f"hull; {n_stable} candidates are on it. Energy above hull (eV/atom) against the current hull; "
        "against the references: below zero means the candidate breaks the known hull. An earlier hit "
        "that a later candidate pushed off the hull is listed with its new distance.</p>"
        + "".join(warnings)
        + _table(rows, ["item", "formula", "class", "e above hull", "e above references", "decomposes to"])
        + "<h3>Reference phases per chemical system</h3>"
        + complete
        + "".join(plots)
    )


def _audit_values(campaign: Reported) -> dict[str, float]:
    ids = set(campaign.audit.ids())
    labels = campaign.state.labels(campaign.spec.target.property, campaign.spec.level)
    return {lb["item_id"]: lb["value"] for lb in labels if lb["item_id"] in ids}


def _parity(campaign: Reported, pairs: list[dict[str, Any]]) -> str:
    plt = _plt()
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


def _audit_section(campaign: Reported, summary: AuditSummary) -> str:
    """The report's lead: headline numbers, learning curve and calibration on the audit set, and
    found vs random."""
    unit = _unit(campaign)
    head = "<h2>What the random audit set says</h2>" + _table(summary.headline(unit), ["", "value"])
    if not summary.enabled:
        return head + (
            "<p>This campaign ran without an audit set (<code>audit: off</code>): no unbiased test of its"
            " models and no comparison with random selection.</p>"
        )
    m = summary.labelled
    how = (
        f"<p>{summary.size} items ({', '.join(map(str, summary.schedule))} per round) were drawn"
        f" uniformly at random, with the campaign seed, from the {summary.eligible} pool items that passed"
        " the same element, sanity and duplicate filters as candidates, computed at level"
        f" <code>{campaign.spec.level}</code> like every label, charged to the budget, and never used"
        " for training — the final model is <b>not</b>"
        " retrained with them, so the numbers below stay an unbiased test. Intervals are 95 %.</p>"
    )
    curve = (
        "<h3>Learning curve on the audit set</h3>"
        + _audit_curve(summary, unit)
        + f"<p><i>How:</i> every round's model predicts the same {m} labelled audit items; the points are"
        f" its MAE and RMSE, the bars their percentile-bootstrap interval ({N_BOOTSTRAP} resamples of the"
        " audit items).</p>"
    )
    calibration = (
        "<h3>Calibration on the audit set</h3>"
        + _calibration(summary)
        + "<p><i>How:</i> for each nominal level q, the share of audit labels inside the final model's"
        " central Gaussian interval μ ± z<sub>q</sub>σ; on the diagonal σ is honest, below it σ is too"
        " small.</p>"
    )
    found = ""
    if summary.informativeness is not None:
        what = (
            "per round, the mean |error| of the items the model picked (its μ when it picked them vs the"
            " label) against its mean |error| on the audit items — what random picks would have had —"
            " with its bootstrap interval; the table's ratio pools the rounds (joint bootstrap)"
        )
    elif summary.enrichment is not None:
        what = (
            "cumulative hits among the campaign's own calculations in the order they were made, against"
            " n × the pool hit rate estimated from the audit items, shaded by its Clopper–Pearson interval"
        )
    else:
        what = (
            "the campaign's best value so far against the audit items' values (a random sample of the"
            " pool); the table gives the chance that as many random picks would have reached the best"
        )
    if summary.informativeness is not None or summary.enrichment is not None or summary.best is not None:
        found = (
            "<h3>Found vs expected under random selection</h3>"
            + _found_vs_random(campaign, summary, unit)
            + f"<p><i>How:</i> {what}. Assumes the audit items are a uniform sample of the same filtered"
            " pool the campaign picks from.</p>"
        )
    return head + how + curve + calibration + found


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
    ] + [["—", item_id, "refused by a guardrail", reason] for item_id, reason in state.refused().items()]
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
    audit = _audit_values(campaign)
    audit_table = _table([[i, v] for i, v in audit.items()], ["item", "label"]) if audit else "<p>None.</p>"
    own = len(labels) - len(audit)
    summary = (
        f"{own} campaign labels and {len(audit)} audit labels at level {spec.level}; "
        f"{campaign.log.steps()} planner steps logged"
        + (f"; prospective MAE over all rounds {np.mean(mae):.4g} {_unit(campaign)}" if mae else "")
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
{_audit_section(campaign, campaign.audit.summary())}
<h2>Parity (prediction when selected vs computed label)</h2>{_parity(campaign, pairs)}
<p><i>How:</i> every candidate the campaign picked, its μ ± σ from the model that picked it against the
label computed afterwards (picked items, not a random sample: the audit set above is the unbiased test).</p>
{found}
{_stability_section(campaign)}
<h2>Candidates per round and why</h2>
{_table(cands, ["round", "item", "strategy", "μ", "σ", "score", "label", "reason"])}
<h2>Audit items (random, never trained on)</h2>{audit_table}
<h2>Models</h2>
<p>MAE, R² and coverage here are on each model's own small held-out split of the campaign's labels
(noisy); the audit set above is the unbiased test.</p>
{_table(models, ["round", "model", "kind", "parent", "n_train", "MAE", "R²", "coverage 95%"])}
<h2>Failed, rejected or refused calculations</h2>{fail_table}
<h2>Budget</h2>{_table(budget, ["kind", "used", "limit"])}
<h2>Decisions by planner</h2>{decisions}
<p>Each decision with its planner: <code>decisions.jsonl</code> (<code>matloop campaign log</code>).</p>
</body></html>"""


def write_report(campaign: Reported, path: str | Path | None = None) -> Path:
    """Write ``report.html`` in the campaign directory (or ``path``)."""
    out = Path(path) if path else campaign.ws.root / "report.html"
    out.write_text(render_report(campaign), encoding="utf-8")
    return out
