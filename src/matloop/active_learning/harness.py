"""Pool-based active-learning simulation that runs the agent's own campaign round.

Each strategy × seed is a real campaign (rules planner, in-process) on a labelled dataset:
``select_candidates`` → ``queue_validation`` at level ``lookup`` (labels revealed from the
dataset) → ``collect_validation`` → ``train_uq_gnn`` / ``fine_tune``, with the same workspace,
state, guardrails and decision log a user's campaign has. There is no second loop. Protocol:

- a fixed, seeded test split (``data_seed``) that is never in the pool (``test_size=0``: the
  whole set is the pool, for discovery tasks);
- the campaign's random seed set (``init`` items, drawn with the seed) is the same for every
  strategy of a seed;
- after the campaign, every round's model is scored on the test split (and, transductively, on
  the pool items not yet labelled when it was trained); a model that reads a cheap level's
  results reads those of the test items from a workspace that computed the level for every item
  once, through the same validation machinery (:func:`level_workspace`).

Campaign directories are resumable, so a rerun continues where it stopped. :func:`summarise`
turns the curves into the headline figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from torch_geometric.data import Data

from matloop.acquisition import check_strategy
from matloop.active_learning.summary import plot_curves, stable_classifier, summarise
from matloop.agent.campaign import run_campaign
from matloop.agent.decisions import DecisionLog
from matloop.agent.rules import RulesPlanner
from matloop.agent.spec import CampaignSpec, ModelSpec
from matloop.agent.state import CampaignState
from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.featurizer import featurize_items
from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import GraphParams
from matloop.data.slices import DatasetSlice, save_slice
from matloop.data.sources import load_source
from matloop.errors import CampaignStop, ToolInputError, invalid_choice, validation_problems
from matloop.models.inputs import Items
from matloop.models.metrics import uq_metrics
from matloop.models.saved import Surrogate, load_model
from matloop.names import GOALS, GoalName, normalise_goal
from matloop.settings import Settings, get_settings
from matloop.tools.featurize import graph_params
from matloop.tools.validate import collect_validation, queue_validation
from matloop.validation.level_values import with_level_values
from matloop.workspace import Workspace

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int, dict[str, Any]], None]
"""Called after each evaluated round with (strategy, seed, round, record)."""

#: Id of the pool slice in every simulated campaign's workspace.
POOL_SLICE = "slice-pool"
#: Id of the slice of every item (pool and test split) in the workspace of a cheap level's results.
ALL_SLICE = "slice-all"


@dataclass
class ALData:
    """Graphs and true targets of a dataset, split into a selectable pool and a hidden test set
    (positions into ``ids``); ``source`` holds the items' structures for the campaigns."""

    ids: list[str]
    graphs: list[Data]
    y: np.ndarray
    pool: np.ndarray
    test: np.ndarray
    unit: str = ""
    name: str = ""
    target: str = ""
    source: DatasetSlice | None = None

    def pool_slice(self) -> DatasetSlice:
        """The pool as a dataset slice holding only the target column."""
        if self.source is None:
            raise ValueError("ALData without a source slice cannot run campaigns")
        pool = self.source.subset([self.ids[i] for i in self.pool])
        pool.properties = pool.properties[[self.target]]
        pool.units = {self.target: self.unit}
        return pool

    def items(self, positions: Sequence[int], cache_dir: Path) -> Items:
        """What a surrogate reads for the items at ``positions`` (structures stay lazy)."""
        ids = [self.ids[i] for i in positions]
        structures = self.source.subset(ids).structures if self.source is not None else None
        return Items([self.graphs[i] for i in positions], structures, cache_dir / EmbeddingCache.FILE)

    def split_hash(self) -> str:
        return hashlib.sha256(
            "|".join(self.ids[i] for i in [*self.pool, -1, *self.test]).encode()
        ).hexdigest()


@dataclass
class ALConfig:
    """Settings of one simulation (stored in every output file); ``model`` holds
    :class:`matloop.agent.spec.ModelSpec` fields."""

    strategies: list[str]
    init: int = 50
    batch: int = 25
    rounds: int = 10
    seeds: int | list[int] = 3
    goal: GoalName = "learn"
    window: tuple[float, float] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    #: Goal ``stable``: query_dataset arguments of the reference phases (labelled at ``lookup``).
    references: dict[str, Any] | None = None
    #: The campaigns' ``cheap_arm`` (:class:`matloop.agent.spec.CampaignSpec`).
    cheap_arm: bool | str = "auto"

    def __post_init__(self) -> None:
        self.goal = normalise_goal(self.goal)  # type: ignore[assignment]

    @property
    def seed_list(self) -> list[int]:
        """The seeds run: ``seeds`` itself when it lists them, else 0 … seeds − 1."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def validate(self, data: ALData) -> None:
        if not self.strategies:
            raise ToolInputError("expected at least one strategy, got none")
        for s in self.strategies:
            check_strategy(s)
        if not self.seed_list or len(set(self.seed_list)) != len(self.seed_list):
            raise ToolInputError(f"expected seeds: a count ≥ 1 or distinct seeds, got {self.seeds}")
        for name in ("init", "batch"):
            if getattr(self, name) < 1:
                raise ToolInputError(f"expected {name} ≥ 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ToolInputError(f"expected rounds ≥ 0, got {self.rounds}")
        need = self.init + self.batch * self.rounds
        if need > len(data.pool):
            raise ToolInputError(f"expected init + batch·rounds ≤ pool size {len(data.pool)}, got {need}")
        if self.goal not in GOALS:
            raise invalid_choice("a goal", self.goal, GOALS)
        if (self.goal == "window" or "in_window" in self.strategies) and self.window is None:
            raise ToolInputError(
                "expected a window lo,hi for goal 'window' or strategy 'in_window', got none"
            )
        try:
            ModelSpec(**self.model)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, ModelSpec))
            raise ToolInputError(f"invalid model settings: {problems}") from None


# --- data ---------------------------------------------------------------------------------------


def build_al_data(
    ids: Sequence[str],
    structures: Sequence[Any],
    y: np.ndarray,
    *,
    pool_size: int | None,
    test_size: int,
    data_seed: int = 0,
    params: GraphParams | None = None,
    cache_path: Path | None = None,
    unit: str = "",
    name: str = "",
) -> ALData:
    """Subsample ``pool_size + test_size`` labelled items (seeded), build their graphs, split.

    Items with a NaN target or that cannot become a graph are skipped. The first
    ``test_size`` usable items of the seeded order are the test set, the rest the pool.
    """
    params = params or GraphParams()
    y = np.asarray(y, dtype=np.float64)
    order = np.random.default_rng(data_seed).permutation(np.flatnonzero(np.isfinite(y)))
    want = test_size + (pool_size if pool_size is not None else len(order))
    graphs: list[Data] = []
    cache = GraphCache(cache_path) if cache_path is not None else None
    try:
        start = 0
        while len(graphs) < want and start < len(order):
            chunk = order[start : start + int((want - len(graphs)) * 1.05) + 16]
            start += len(chunk)
            done = featurize_items(
                [structures[k] for k in chunk], [str(ids[k]) for k in chunk], params, cache=cache
            )
            graphs.extend(done.graphs)
    finally:
        if cache is not None:
            cache.close()
    graphs = graphs[:want]
    if len(graphs) <= test_size:
        raise ToolInputError(f"expected more than test_size={test_size} usable items, got {len(graphs)}")
    target = dict(zip((str(i) for i in ids), y, strict=True))
    idx = np.arange(len(graphs))
    return ALData(
        ids=[g.item_id for g in graphs],
        graphs=graphs,
        y=np.asarray([target[g.item_id] for g in graphs]),
        pool=idx[test_size:],
        test=idx[:test_size],
        unit=unit,
        name=name,
    )


def load_dataset(
    dataset: str,
    target: str,
    *,
    pool_size: int | None = 3000,
    test_size: int = 1000,
    data_seed: int = 0,
    settings: Settings | None = None,
    path: str | Path | None = None,
) -> ALData:
    """A dataset source (``matloop.data.sources.load_source``; ``path`` for a file source) as
    :class:`ALData`; graphs are built
    as the ``featurize`` tool builds them and go through the on-disk graph cache."""

    settings = settings or get_settings()
    data = load_source(dataset, path, settings=settings)
    if target not in data.properties.columns:
        raise invalid_choice(f"a property of {dataset!r}", target, data.properties.columns)
    split = build_al_data(
        data.ids,
        data.structures,
        data.target(target),
        pool_size=pool_size,
        test_size=test_size,
        data_seed=data_seed,
        params=graph_params(settings),
        cache_path=settings.cache_dir / "graphs.sqlite",
        unit=data.units.get(target, ""),
        name=f"{dataset}:{target}",
    )
    return replace(split, target=target, source=data)


# --- one strategy × seed: a campaign ------------------------------------------------------------


def campaign_spec(data: ALData, config: ALConfig, strategy: str, seed: int) -> CampaignSpec:
    """The campaign that simulates ``strategy`` with ``seed`` on the pool of ``data``."""
    acquired = config.init + config.batch * config.rounds
    target: dict[str, Any] = {
        "property": data.target,
        "goal": config.goal,
        "window": _open_ends(config.window),
    }
    if config.goal == "stable" and config.references is not None:
        target["references"] = config.references  # charged: at most every phase of the reference source
        refs = config.references
        acquired += len(load_source(refs["source"], refs.get("path")).ids)
    return CampaignSpec.model_validate(
        {
            "name": f"{data.name} {strategy} seed {seed}",
            "description": "active-learning simulation (labels revealed from the dataset)",
            "pool": {"slice_id": POOL_SLICE},
            "target": target,
            "level": "lookup",
            "model": config.model,
            "strategy": strategy,
            "cheap_arm": config.cheap_arm,
            "seed_size": config.init,
            "batch_size": config.batch,
            "rounds": max(config.rounds, 1),
            "budget": {"calculations": acquired, "cpu_hours": 1e6, "llm_tokens": 0},
            "audit": "off",  # the simulation has its own held-out test split and truth for every item
            "planner": "rules",
            "max_steps": 20 * (config.rounds + 3),
            "seed": seed,
        }
    )


def _open_ends(window: tuple[float, float] | None) -> tuple[float | None, float | None] | None:
    """A window with infinite bounds written as open ends (None), as campaign specs take it."""
    if window is None:
        return None
    lo, hi = window
    return (lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None)


def run_strategy(
    data: ALData,
    config: ALConfig,
    strategy: str,
    seed: int,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the campaign of one strategy × seed; return one record per trained model."""
    root = Path(out_dir) / strategy / f"seed_{seed}"
    spec = campaign_spec(data, config, strategy, seed)
    resume = (root / "campaign.yaml").exists()
    if resume:
        (root / "campaign.yaml").write_text(spec.to_yaml())  # more rounds than before is fine
    else:
        ws = Workspace(root, settings=get_settings())
        save_slice(ws, data.pool_slice(), slice_id=POOL_SLICE)
    if config.rounds:
        campaign = run_campaign(
            spec,
            root,
            resume=resume,
            planner=RulesPlanner(),
            progress=lambda msg: log.debug("%s seed %d: %s", strategy, seed, msg),
        )
        if (status := campaign.state.meta("status")) != "finished":  # a cut curve would skew the means
            reason = campaign.state.meta("reason")
            raise CampaignStop(f"{strategy} seed {seed}: campaign {status} ({reason}); run again to resume")
    return evaluate_rounds(data, config, root, strategy, seed, progress)


def evaluate_rounds(
    data: ALData,
    config: ALConfig,
    root: Path,
    strategy: str,
    seed: int,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """One record per round model of the campaign in ``root``: labels it was trained on, hits,
    test and transductive metrics, the items picked with it and the round's wall time.
    Records are cached in ``rounds.json`` next to the campaign."""
    ws = Workspace(root, settings=get_settings())
    state = CampaignState(ws)
    cache_path = root / "rounds.json"
    cached = {r["model_id"]: r for r in json.loads(cache_path.read_text())} if cache_path.exists() else {}

    def items(model: Surrogate, positions: np.ndarray) -> Items:
        plain = data.items(positions, ws.settings.cache_dir)
        level = model.meta.get("cheap_level")
        if level is None or len(positions) < 2:  # fewer than 2 items are not scored
            return plain
        ids = [data.ids[i] for i in positions]
        return with_level_values(plain, ids, level_workspace(data, level, root.parent.parent), level)

    labels = state.labels(data.target, "lookup")
    items_of_data = set(data.ids)  # reference phases of goal 'stable' are labels, not picks
    picks = state.candidates()
    seconds = _round_seconds(DecisionLog(root / "decisions.jsonl").records())
    hits_set = target_set(data, config)
    records: list[dict[str, Any]] = []
    for k, m in enumerate(sorted(state.models(), key=lambda m: m["round"])[: config.rounds + 1]):
        rnd = m["round"]
        known = [lb["item_id"] for lb in labels if lb["round"] < rnd and lb["item_id"] in items_of_data]
        record = cached.get(m["model_id"])
        if record is None or (config.goal == "stable" and "stable_classifier" not in record):
            model = load_model(ws, m["model_id"])
            taken = set(known)
            unlabelled = np.asarray([i for i in data.pool if data.ids[i] not in taken], dtype=np.int64)
            learning = len(data.test) > 0  # discovery tasks have no test split and need no errors
            record = {
                "strategy": strategy,
                "seed": seed,
                "round": k,
                "model_id": m["model_id"],
                "n_labels": len(known),
                "hits": len(hits_set & set(known)) if hits_set is not None else None,
                "test": _metrics(model, items(model, data.test), data.y[data.test]),
                "transductive": _metrics(model, items(model, unlabelled), data.y[unlabelled])
                if learning
                else None,
                "selected_ids": [c["item_id"] for c in picks if c["round"] == rnd],
                "seconds": seconds.get(rnd, {}),
                "stable_classifier": _stable_classifier(
                    data, config, model, items(model, unlabelled), unlabelled
                )
                if config.goal == "stable"
                else None,
            }
            cached[m["model_id"]] = record
            _write_json(cache_path, list(cached.values()))
        records.append(record)
        if progress is not None:
            progress(strategy, seed, k, record)
    return records


def level_workspace(data: ALData, level: str, out_dir: Path) -> Workspace:
    """A workspace holding ``level``'s results for every item of ``data`` (pool and test split),
    computed once through the validation machinery (resumable)."""
    ws = Workspace(out_dir / f"level-{level}", settings=get_settings())
    done = ws.root / "complete"
    if done.exists():
        return ws
    if data.source is None:
        raise ValueError("ALData without a source slice cannot run a validation level")
    save_slice(ws, data.source.subset(data.ids), slice_id=ALL_SLICE)
    log.info("%s: level %s for all %d items", data.name, level, len(data.ids))
    batch = queue_validation(ALL_SLICE, data.ids, level=level, workspace=ws)  # type: ignore[arg-type]
    collect_validation(batch.batch_id, wait=True, workspace=ws)
    done.touch()
    return ws


def _metrics(model: Surrogate, items: Items, y: np.ndarray) -> dict[str, Any] | None:
    if len(items) < 2:
        return None
    pred = model.predict_items(items)
    return uq_metrics(y, pred.mean, pred.std).model_dump()


def _stable_classifier(
    data: ALData, config: ALConfig, model: Surrogate, items: Items, positions: np.ndarray
) -> dict[str, float] | None:
    """The model as a classifier of "stable" (the task's window on the oracle's distance to the
    hull) on the items at ``positions``. Its predicted distance is matbench-discovery's: the true
    distance plus the model's error on the formation energy (the hull of the known phases stays)."""
    if len(items) < 2 or config.window is None:
        return None
    mean = model.predict_items(items).mean
    true = _column(data, "e_above_hull")[positions]
    predicted = true + (mean - data.y[positions])
    return stable_classifier(predicted, true, threshold=config.window[1])


def _column(data: ALData, name: str) -> np.ndarray:
    """The source's column ``name`` in the order of ``data.ids``."""
    if data.source is None or name not in data.source.properties.columns:
        raise ToolInputError(f"expected an {name} column for goal 'stable' in {data.name}, got none")
    by_id = dict(zip(data.source.ids, data.source.target(name), strict=True))
    return np.array([by_id[i] for i in data.ids])


def _round_seconds(records: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per round: wall seconds (from each log record to the next, counted in the later one's
    round, except the time no process ran the campaign: up to a resumed run's first note), and
    seconds inside tools (from each tool's planned → done records)."""
    from datetime import datetime

    out: dict[int, dict[str, float]] = {}
    planned: dict[int, datetime] = {}
    previous: datetime | None = None
    for r in records:
        t = datetime.fromisoformat(r["time"])
        entry = out.setdefault(r["round"], {"wall": 0.0, "tools": 0.0})
        if previous is not None and (r.get("result") or {}).get("run") != "resumed":
            entry["wall"] += (t - previous).total_seconds()
        previous = t
        if r["phase"] == "planned":
            planned[r["step"]] = t
        elif r["phase"] == "done" and r["step"] in planned:
            entry["tools"] += (t - planned.pop(r["step"])).total_seconds()
    return out


def target_set(data: ALData, config: ALConfig) -> set[str] | None:
    """Pool items that count as hits: inside the window (goal ``window``; for goal ``stable`` the
    dataset's ``e_above_hull`` column, the distance to the full hull), else None."""
    if config.window is None:
        return None
    lo, hi = config.window
    values = _column(data, "e_above_hull") if config.goal == "stable" else data.y
    return {data.ids[i] for i in data.pool if lo <= values[i] <= hi}


# --- all strategies × seeds ----------------------------------------------------------------------


def _write_json(path: Path, payload: Any) -> None:
    """Atomic write: a crash never leaves a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _check_resumable(out: Path, data: ALData, config: ALConfig) -> None:
    """Refuse to mix campaigns made with other settings or splits (more rounds, strategies or
    seeds are fine: each strategy × seed is its own campaign)."""
    kept = {k: v for k, v in asdict(config).items() if k not in ("rounds", "strategies", "seeds")}
    current = json.loads(json.dumps({**kept, "dataset": data.name, "split": data.split_hash()}))
    path = out / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
        if changed:
            raise ToolInputError(
                f"expected campaigns made with the same settings in {out}, got campaigns that differ in "
                f"{changed}; use another output directory or start afresh"
            )
    _write_json(path, current)


def run_simulation(
    data: ALData,
    config: ALConfig,
    out_dir: str | Path,
    *,
    progress: ProgressCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every strategy × seed (resumable); writes ``summary.json`` and ``learning_curve.png``."""
    config.validate(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, data, config)
    records: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for seed in config.seed_list:
        for strategy in config.strategies:
            rows = run_strategy(data, config, strategy, seed, out, progress)
            records.setdefault(strategy, {})[seed] = rows
    summary = {
        "dataset": data.name,
        "unit": data.unit,
        "pool_size": len(data.pool),
        "test_size": len(data.test),
        "config": asdict(config),
        **(extra or {}),
        **summarise(records, hits_total=_size(target_set(data, config)), pool_size=len(data.pool)),
    }
    _write_json(out / "summary.json", summary)
    plot_curves(summary, out / "learning_curve.png")
    return summary


def _size(items: set[str] | None) -> int | None:
    return None if items is None else len(items)
