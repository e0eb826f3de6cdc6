"""A self-contained HTML report of a campaign: a jinja2 template (``templates/report.html``) filled
with tables and figures inlined as base64 PNG, readable offline."""

from __future__ import annotations

import base64
import io
import math
import platform
from collections import defaultdict
from datetime import datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matloop.agent.audit_set import NOT_YET, AuditedSession, AuditSummary
from matloop.agent.hull import campaign_hull
from matloop.audit_stats import N_BOOTSTRAP, in_window
from matloop.errors import ToolInputError
from matloop.names import FINISHED_STATUSES
from matloop.stability import NEAR_STABLE, chemical_system

if TYPE_CHECKING:
    from jinja2 import Environment
    from matplotlib.figure import Figure


#: Distributions whose versions the provenance block lists (read from their metadata, never imported).
PROVENANCE_PACKAGES = (
    "matloop", "torch", "torch-geometric", "pymatgen", "chgnet", "sevenn", "atomate2", "jobflow",
    "numpy", "scipy", "scikit-learn",
)  # fmt: skip
#: How the report names a surrogate's UQ head, by the method its metadata records.
HEAD_NAMES = {
    "ensemble": "ensemble",
    "mlp_ensemble": "ensemble",
    "mc_dropout": "MC dropout",
    "mlp_dropout": "MC dropout",
    "evidential": "evidential head",
    "gp": "Gaussian process",
}


def prospective_pairs(campaign: AuditedSession) -> list[dict[str, Any]]:
    """Selected candidates whose label came back: the prediction made when they were picked vs the label."""
    spec = campaign.spec
    labels = {lb["item_id"]: lb for lb in campaign.state.labels(spec.target.property, spec.level)}
    return [
        {**c, "label": labels[c["item_id"]]["value"]}
        for c in campaign.state.candidates()
        if c["round"] > 0 and c["item_id"] in labels and c["mean"] is not None
    ]


def model_kind(meta: dict[str, Any]) -> str:
    """What a surrogate is, from its saved metadata: e.g. "MLP ensemble on frozen magpie vectors",
    "GNN ensemble trained on graphs"."""
    method = str(meta.get("method", ""))
    head = HEAD_NAMES.get(method, method)
    backbone = meta.get("backbone", "gnn")
    if backbone == "gnn":
        return f"GNN {head} trained on graphs"
    mlp = "MLP " if method != "gp" else ""
    if meta.get("trainable_blocks") is not None:
        return f"{mlp}{head} on {backbone}, fine-tuned ({meta['trainable_blocks']} blocks)"
    return f"{mlp}{head} on frozen {backbone} vectors"


def _model_meta(campaign: AuditedSession, model_id: str) -> dict[str, Any] | None:
    try:
        return campaign.ws.artifact(model_id, kind="model").meta
    except ToolInputError:  # a model file removed by hand: the log still names it
        return None


# -- figures ---------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure, alt: str) -> dict[str, str]:
    """A figure as the template takes it (a data URI), closed after rendering."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return {"src": f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}", "alt": alt}


def _needs(what: str) -> dict[str, str]:
    """A figure there is not enough data for yet: the template says what it needs."""
    return {"needs": what}


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def learning_curve_figure(summary: AuditSummary, unit: str) -> Figure:
    """Audit MAE and RMSE (bootstrap intervals) of every round's model against the campaign labels
    it was trained with (integer ticks)."""
    fig, ax = _plt().subplots(figsize=(5.5, 3.6))
    for name, colour in (("mae", "C0"), ("rmse", "C1")):
        est = [getattr(r.metrics, name) for r in summary.rounds]
        y = [e.value for e in est]
        ax.errorbar(
            [r.labels for r in summary.rounds],
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
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _calibration_figure(summary: AuditSummary) -> Figure:
    fig, ax = _plt().subplots(figsize=(4.2, 4.0))
    nominal, observed = zip(*summary.calibration, strict=True)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    ax.plot(nominal, observed, "o-", label=f"final model, {summary.labelled} audit items")
    ax.set_xlabel("nominal coverage of μ ± zσ")
    ax.set_ylabel("observed share of audit labels inside")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def parity_figure(pairs: list[dict[str, Any]], *, level: str, unit: str) -> Figure:
    """Prediction when picked (μ ± σ) against the computed label, per round: a square plot whose
    axes share one range (that of the labels and μ; error bars may run past it) with y = x."""
    fig, ax = _plt().subplots(figsize=(4.5, 4.5))
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
    values = [p["label"] for p in pairs] + [p["mean"] for p in pairs]
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"computed ({level}) [{unit}]")
    ax.set_ylabel(f"predicted μ ± σ [{unit}]")
    ax.legend(fontsize=7)
    return fig


def _found_vs_random(
    campaign: AuditedSession, summary: AuditSummary, unit: str
) -> tuple[dict[str, str], str] | None:
    """The figure comparing the campaign with random selection (or what it needs) and how it is
    made; None when the goal has no such comparison."""
    own = campaign.own_labels()
    t = campaign.spec.target
    if (info := summary.informativeness) is not None:
        how = (
            "per round, the mean |error| of the items the model picked (its μ when it picked them vs the"
            " label) against its mean |error| on the audit items — what random picks would have had —"
            " with its bootstrap interval; the table's ratio pools the rounds (joint bootstrap)"
        )
        picked: dict[int, list[float]] = defaultdict(list)
        for p in prospective_pairs(campaign):
            picked[p["round"]].append(abs(p["mean"] - p["label"]))
        rounds = [r for r in summary.rounds if r.round in picked]
        if not info.picks or not rounds:
            return _needs("labels of items a model picked (round 1 on) and a model tested on the audit"), how
        fig, ax = _plt().subplots(figsize=(5.5, 3.6))
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
        return _png(fig, "error of the picks vs random picks per round"), how
    e, best = summary.enrichment, summary.best
    if e is None and best is None:
        return None
    if e is not None and t.window is not None:
        how = (
            "cumulative hits among the campaign's own calculations in the order they were made, against"
            " n × the pool hit rate estimated from the audit items, shaded by its Clopper–Pearson interval"
        )
        audit_n = e.audit_n
    else:
        how = (
            "the campaign's best value so far against the audit items' values (a random sample of the"
            " pool); the table gives the chance that as many random picks would have reached the best"
        )
        audit_n = best.audit_n if best is not None else 0
    if not own or not audit_n:
        return _needs("labels of the campaign's own picks and of at least one audit item"), how
    fig, ax = _plt().subplots(figsize=(5.5, 3.6))
    n = np.arange(1, len(own) + 1)
    if e is not None and t.window is not None:
        hits = np.cumsum([in_window(lb["value"], t.window) for lb in own])
        ax.step(n, hits, where="post", label="campaign: hits found")
        rate = e.hit_rate
        ax.plot(n, n * rate.value, "k--", lw=1, label=f"random: n × {rate.value:.2g} (audit hit rate)")
        ax.fill_between(
            n, n * rate.low, n * rate.high, color="grey", alpha=0.25, label="random: 95 % interval"
        )
        ax.set_ylabel("hits")
        _integer_ticks(ax.yaxis)
    else:
        values = np.array([lb["value"] for lb in own])
        running = np.minimum.accumulate(values) if t.goal == "minimize" else np.maximum.accumulate(values)
        ax.step(n, running, where="post", label="campaign: best so far")
        for k, value in enumerate(_audit_values(campaign).values()):
            ax.axhline(
                value, color="grey", lw=0.6, alpha=0.6, label="audit items (random)" if k == 0 else None
            )
        ax.set_ylabel(f"{t.property} ({unit})")
    ax.set_xlabel("campaign calculations (audit excluded)")
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig, "found vs expected under random selection"), how


# -- tables ----------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, a missing or non-finite number as "n/a"."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return "" if value is None else str(value)


def _table(rows: list[list[Any]], header: list[str]) -> dict[str, Any]:
    return {"header": header, "rows": [[_fmt(c) for c in r] for r in rows]}


def _audit_values(campaign: AuditedSession) -> dict[str, float]:
    ids = set(campaign.audit.ids())
    labels = campaign.state.labels(campaign.spec.target.property, campaign.spec.level)
    return {lb["item_id"]: lb["value"] for lb in labels if lb["item_id"] in ids}


def _unit(campaign: AuditedSession) -> str:
    labels = campaign.state.labels(campaign.spec.target.property, campaign.spec.level)
    return labels[0]["unit"] if labels else ""


def _audit_section(campaign: AuditedSession, summary: AuditSummary, unit: str) -> dict[str, Any]:
    """The report's lead: headline numbers, learning curve and calibration on the audit set, and
    found vs random."""
    out: dict[str, Any] = {
        "enabled": summary.enabled,
        "headline": _table([list(r) for r in summary.headline(unit)], ["", "value"]),
        "size": summary.size,
        "schedule": ", ".join(map(str, summary.schedule)),
        "eligible": summary.eligible,
        "labelled": summary.labelled,
    }
    if not summary.enabled:
        return out
    out["curve"] = (
        _png(learning_curve_figure(summary, unit), "learning curve on the audit set")
        if len(summary.rounds) >= 2
        else _needs(
            "models from at least 2 rounds tested on at least 2 labelled audit items"
            f" (so far {len(summary.rounds)} model(s), {summary.labelled} audit label(s))"
        )
    )
    out["calibration"] = (
        _png(_calibration_figure(summary), "calibration on the audit set")
        if summary.calibration
        else _needs("a model from round 1 on tested on at least 2 labelled audit items")
    )
    found = _found_vs_random(campaign, summary, unit)
    out["found"], out["found_how"] = found if found is not None else (None, "")
    return out


def _stability_section(campaign: AuditedSession) -> dict[str, Any] | None:
    """Goal ``stable``: the stable and near-stable candidates with their decomposition, a hull plot
    per chemical system with hits, and how complete each system's reference set is."""
    if campaign.spec.target.goal != "stable":
        return None
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
    plots = []
    for system in [k for k in systems if 2 <= len(k.split("-")) <= 3][:4]:
        from pymatgen.analysis.phase_diagram import PDPlotter

        _plt()
        ax = PDPlotter(hull.diagram(system.split("-")), backend="matplotlib").get_plot()
        ax.set_title(f"{system} at level {campaign.spec.level}")
        plots.append(_png(ax.figure, f"convex hull of {system}"))
    return {
        "references": len(hull.references),
        "candidates": len(hull.candidates),
        "stable": sum(s.stable for s in scores),
        "elemental_only": [system for system, count in systems.items() if count == 0],
        "near": _table(
            rows, ["item", "formula", "class", "e above hull", "e above references", "decomposes to"]
        ),
        "systems": _table([[k, v] for k, v in systems.items()], ["chemical system", "reference phases"]),
        "plots": plots,
    }


def _window_text(window: tuple[float | None, float | None] | None) -> str:
    """A target window as a reader writes it: "[-∞, -2]", "[1, 2]"."""
    if window is None:
        return ""
    lo, hi = window
    return f"[{'-∞' if lo is None else f'{lo:g}'}, {'∞' if hi is None else f'{hi:g}'}]"


def _date(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def package_versions() -> list[list[str]]:
    """(distribution, version) of :data:`PROVENANCE_PACKAGES`, read from the installed metadata."""
    rows = [["python", platform.python_version()]]
    for name in PROVENANCE_PACKAGES:
        try:
            rows.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            rows.append([name, "not installed"])
    return rows


def _provenance(campaign: AuditedSession, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
    spec = campaign.spec
    facts: list[list[Any]] = [
        ["level", spec.level],
        ["seed", spec.seed],
        ["workspace", str(campaign.ws.root)],
    ]
    if records:
        facts.append(["started", _date(records[0]["time"])])
        ended = "finished" if status in ("finished", "stopped", "failed") else "last step"
        facts.append([ended, _date(records[-1]["time"])])
    facts.append(["report written", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")])
    return {
        "facts": _table(facts, ["", "value"]),
        "versions": {"header": ["package", "version"], "rows": package_versions()},
        "spec_yaml": spec.to_yaml(),
    }


@cache
def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("matloop.agent", "templates"), autoescape=True, undefined=StrictUndefined
    )


def render_report(campaign: AuditedSession) -> str:
    spec, state = campaign.spec, campaign.state
    unit = _unit(campaign)
    pairs = prospective_pairs(campaign)
    picked, refused = state.candidates(), state.refused()
    found = campaign.found() if spec.target.window is not None else []
    audit = _audit_values(campaign)
    formula_of = state.store.formulas([c["item_id"] for c in picked + found] + list(refused) + list(audit))
    labels = {lb["item_id"]: lb["value"] for lb in state.labels(spec.target.property, spec.level)}
    candidates = [
        [
            c["round"],
            c["item_id"],
            formula_of.get(c["item_id"]),
            c["strategy"],
            c["mean"],
            c["std"],
            c["score"],
            labels.get(c["item_id"]),
            c["reason"],
        ]
        for c in picked
    ]
    remaining = campaign.guardrails.remaining()
    budget = [
        [k, round(getattr(spec.budget, k) - remaining[k], 6), getattr(spec.budget, k)] for k in remaining
    ]
    models, kinds = [], []
    for m in state.models():
        meta = _model_meta(campaign, m["model_id"])
        kind = model_kind(meta) if meta is not None else "unknown (model file missing)"
        kinds.append(kind)
        metrics = m["metrics"]
        trained = "fine-tuned" if m["kind"] == "fine_tune" else "trained"
        models.append(
            [m["round"], m["model_id"], kind, trained, m["parent"], m["n_train"]]
            + [metrics.get(k) for k in ("mae", "r2", "coverage_95")]
        )
    failures = [
        [c["round"], c["item_id"], c["formula"], c["status"], c["reason"]]
        for c in state.calcs(statuses=FINISHED_STATUSES - {"done"})
    ] + [
        ["—", item_id, formula_of.get(item_id), "refused by a guardrail", reason]
        for item_id, reason in refused.items()
    ]
    mae = [abs(p["mean"] - p["label"]) for p in pairs]
    records = campaign.log.records()
    summary = (
        f"{len(labels) - len(audit)} campaign labels and {len(audit)} audit labels at level {spec.level}; "
        f"{campaign.log.steps()} planner steps logged"
        + (f"; prospective MAE over all rounds {np.mean(mae):.4g} {unit}" if mae else "")
    )
    hits = None
    if spec.target.window is not None:
        hits = _table(
            [[h["item_id"], formula_of.get(h["item_id"]), h["value"], h["round"]] for h in found],
            ["item", "formula", "value", "round"],
        )
    by_planner: dict[str, dict[str, int]] = defaultdict(lambda: {"planned": 0, "rejected": 0, "note": 0})
    for r in records:
        if r["phase"] in ("planned", "rejected", "note"):
            by_planner[r["planner"]][r["phase"]] += 1
    status = str(state.meta("status", "not started"))
    template = _environment().get_template("report.html")
    return template.render(
        spec=spec,
        window=_window_text(spec.target.window),
        status=status,
        reason=str(state.meta("reason", "") or ""),
        planner=campaign.planner,
        strategy=campaign.strategy(),
        model_kind=kinds[-1] if kinds else "none trained yet",
        summary=summary,
        pretrained=spec.pretrained,
        audit=_audit_section(campaign, campaign.audit.summary(), unit),
        n_bootstrap=N_BOOTSTRAP,
        not_yet=NOT_YET,
        parity=_png(parity_figure(pairs, level=spec.level, unit=unit), "parity")
        if pairs
        else _needs("labels of items a model picked (from round 1 on)"),
        hits=hits,
        stability=_stability_section(campaign),
        candidates=_table(
            candidates, ["round", "item", "formula", "strategy", "μ", "σ", "score", "label", "reason"]
        ),
        audit_items=_table(
            [[i, formula_of.get(i), v] for i, v in audit.items()], ["item", "formula", "label"]
        ),
        models=_table(
            models, ["round", "model", "kind", "how", "parent", "n_train", "MAE", "R²", "coverage 95%"]
        ),
        failures=_table(failures, ["round", "item", "formula", "status", "reason"]),
        budget=_table(budget, ["kind", "used", "limit"]),
        decisions=_table(
            [[name, n["planned"], n["rejected"], n["note"]] for name, n in by_planner.items()],
            ["planner", "tool calls run", "refused", "notes (hand-overs, stops, text replies)"],
        ),
        provenance=_provenance(campaign, records, status),
    )


def write_report(campaign: AuditedSession, path: str | Path | None = None) -> Path:
    """Write ``report.html`` in the campaign directory (or ``path``)."""
    out = Path(path) if path else campaign.ws.root / "report.html"
    out.write_text(render_report(campaign), encoding="utf-8")
    return out
