"""How a campaign's cost grows with its pool, and what the screening level costs through matloop.

**Campaigns at growing pool sizes** (``--sizes``, full: 1,000 / 10,000 / 100,000 QM9 molecules):
the same campaign each time — the GFN2-xTB screening level over the whole pool, the suite's
vector surrogate (a bootstrapped MLP ensemble on Magpie vectors plus the xTB results), batch 10,
3 rounds of selection, labels from the ``lookup`` level, the random audit set — run in a
process of its own. Per phase of the campaign, the wall time summed over its rounds, from the
decision log's planned → done records of each tool:

- ``pool``: ``query_dataset`` (read the source, write the pool slice);
- ``screening``: ``queue_validation`` + ``collect_validation`` at the screening level (the xTB
  single points themselves, per item, plus the queue → worker → store machinery);
- ``features``: ``featurize``; ``train``: ``train_uq_gnn`` / ``fine_tune``;
- ``predict_select``: ``select_candidates`` (predict over the pool, score, pick);
- ``labels``: queue and collect at the label level; ``other_tools``: anything else;
- ``machinery``: round wall time outside every tool (planner, guardrails, duplicate checks,
  state writes, decision log);
- ``status`` / ``report``: ``matloop campaign status`` and ``campaign report`` on the finished
  campaign, each a fresh process (what a user waits for).

Also the peak resident memory of the campaign process and of its worker processes (sampled
every 0.2 s) and the size of ``state.sqlite``; then the ratio of the largest size to the one
before it, phase by phase, from the same run.

**Screening throughput** (``--screen N``, full 2,000 molecules): the xTB level over the same N
molecules (i) as a bare loop of the level's own single-point code in this process (no queue,
worker or store), (ii) through matloop with the ``local`` executor (one worker process) and (iii)
the ``dask`` executor on a ``LocalCluster`` of 1 and of 2 workers; (ii) and (iii) on a cold cache
(a fresh cache directory: model start-up included) and (ii) again warm (the same molecules in a
new workspace: served from the calculation cache).

    python benchmarks/scale.py                  # full mode (what counts), resumable by size
    python benchmarks/scale.py --quick          # CI-sized: 300 / 1,000 molecules, 300 screened

Writes ``benchmarks/results/scale.json`` (``scale_quick.json``) and ``scale.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from _common import RESULTS_DIR, write_result
from al_suite import surrogate

ROOT = Path(__file__).resolve().parent.parent
FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (300, 1_000)
SCREEN_LEVEL = "xtb"
PHASES = ("pool", "screening", "features", "train", "predict_select", "labels", "other_tools", "machinery")
TOOL_PHASE = {
    "query_dataset": "pool",
    "featurize": "features",
    "train_uq_gnn": "train",
    "fine_tune": "train",
    "select_candidates": "predict_select",
}


def campaign_spec(size: int) -> dict[str, Any]:
    """The campaign measured at every pool size."""
    return {
        "name": f"scale-{size}",
        "planner": "rules",
        "pool": {"source": "qm9", "max_items": size},
        "target": {"property": "gap", "goal": "minimize"},
        "level": "lookup",
        "model": surrogate("auto", "molecule", "gap", quick=False),
        "seed_size": 20,
        "batch_size": 10,
        "rounds": 3,
        # the screening level is charged per molecule: room for it and the labels at every size
        "budget": {"calculations": 100 + math.ceil(size * 1e-3 * 1.05), "cpu_hours": 1000.0, "llm_tokens": 0},
        "seed": 0,
    }


class PeakMemory:
    """Peak resident memory (MiB) of this process and of all its descendants together, sampled."""

    def __init__(self, every: float = 0.2) -> None:
        self.own = self.children = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, every: float) -> None:
        me = psutil.Process()
        while not self._stop.wait(every):
            self.own = max(self.own, me.memory_info().rss / 2**20)
            total = 0.0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
            self.children = max(self.children, total)


def phase_seconds(decisions: Path) -> dict[str, float]:
    """Seconds per phase (see the module docstring) from a campaign's decision log."""
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    seconds = dict.fromkeys(PHASES, 0.0)
    planned: dict[int, datetime] = {}
    rounds: dict[int, list[datetime]] = {}
    for r in records:
        t = datetime.fromisoformat(r["time"])
        rounds.setdefault(r["round"], []).append(t)
        if r["phase"] == "planned":
            planned[r["step"]] = t
        elif r["phase"] == "done" and r["step"] in planned:
            tool = r["tool"]
            if tool in ("queue_validation", "collect_validation"):
                level = r["arguments"].get("level") or r.get("result", {}).get("level")
                phase = "screening" if level == SCREEN_LEVEL else "labels"
            else:
                phase = TOOL_PHASE.get(tool, "other_tools")
            seconds[phase] += (t - planned.pop(r["step"])).total_seconds()
    wall = sum((max(ts) - min(ts)).total_seconds() for ts in rounds.values())
    seconds["machinery"] = wall - sum(v for k, v in seconds.items() if k != "machinery")
    return {k: round(v, 2) for k, v in seconds.items()}


def run_one(size: int, directory: Path, out: Path) -> None:
    """One campaign at ``size`` (this process), its phases, memory and the CLI's reading times."""
    from matloop.agent.campaign import run_campaign
    from matloop.agent.spec import CampaignSpec

    spec = CampaignSpec.from_dict(campaign_spec(size))
    start = time.perf_counter()
    with PeakMemory() as memory:
        campaign = run_campaign(spec, directory, progress=lambda line: print(line, flush=True))
    wall = time.perf_counter() - start
    reading = {}
    for command in ("status", "report"):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "matloop", "campaign", command, str(directory)], check=True,
                       capture_output=True)  # fmt: skip
        reading[command] = round(time.perf_counter() - t0, 2)
    with sqlite3.connect(directory / "state.sqlite") as db:
        screened, calc_seconds = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(j.calc_seconds), 0) FROM validation_jobs j"
            " JOIN validation_batches b USING (batch_id) WHERE b.level = ?",
            (SCREEN_LEVEL,),
        ).fetchone()
    record = {
        "size": size,
        "status": campaign.state.meta("status"),
        "wall_s": round(wall, 1),
        "phases_s": phase_seconds(directory / "decisions.jsonl"),
        "reading_s": reading,
        "screened": screened,
        "screening_calc_s": round(calc_seconds, 1),
        "peak_rss_mib": {"campaign": round(memory.own), "workers": round(memory.children)},
        "state_sqlite_mib": round((directory / "state.sqlite").stat().st_size / 2**20, 1),
        "labels": len(campaign.state.labels("gap", "lookup")),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")


def screening_throughput(n: int) -> dict[str, Any]:
    """Seconds per molecule of the screening level: bare, local worker, Dask with 1 and 2 workers
    (cold cache), local worker again (warm cache); see the module docstring."""
    from dask.distributed import Client, LocalCluster

    from matloop.data.slices import load_slice
    from matloop.settings import Settings
    from matloop.tools import collect_validation, query_dataset, queue_validation
    from matloop.validation.levels import LevelContext, get_level
    from matloop.workspace import Workspace

    results: dict[str, Any] = {"molecules": n, "level": SCREEN_LEVEL}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def through_matloop(name: str, cache: str, executor: str, address: str | None = None) -> float:
            settings = Settings(cache_dir=root / cache)
            settings.validation.dask_address = address
            ws = Workspace(root / name, settings=settings)
            pool = query_dataset("qm9", limit=n, workspace=ws)
            ids = load_slice(ws, pool.slice_id).ids
            start = time.perf_counter()
            batch = queue_validation(pool.slice_id, ids, level=SCREEN_LEVEL, executor=executor, workspace=ws)
            done = collect_validation(batch.batch_id, wait=True, workspace=ws)
            seconds = time.perf_counter() - start
            assert len({lb.item_id for lb in done.labels}) == n, f"{name}: {len(done.labels)} labels for {n}"
            return seconds

        ws = Workspace(root / "bare", settings=Settings(cache_dir=root / "bare-cache"))
        molecules = load_slice(ws, query_dataset("qm9", limit=n, workspace=ws).slice_id).structures
        level = get_level(SCREEN_LEVEL)
        start = time.perf_counter()
        documents = level.single_point(LevelContext(ws.settings, {})).documents(molecules)
        bare = time.perf_counter() - start
        assert not [d for d in documents if isinstance(d, str)]
        timings = {"bare": bare, "local_cold": through_matloop("local", "cold-local", "local")}
        timings["local_warm"] = through_matloop("local-warm", "cold-local", "local")
        for workers in (1, 2):
            with (
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
                Client(cluster),
            ):
                timings[f"dask_{workers}_cold"] = through_matloop(
                    f"dask{workers}", f"cold-dask{workers}", "dask", cluster.scheduler_address
                )
    results["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    results["ms_per_molecule"] = {k: round(1000 * v / n, 2) for k, v in timings.items()}
    results["ratio_to_bare"] = {k: round(v / bare, 2) for k, v in timings.items() if k != "bare"}
    results["speedup_2_vs_1_workers"] = round(timings["dask_1_cold"] / timings["dask_2_cold"], 2)
    return results


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each phase's cost at the largest size ÷ at the one before (and the size ratio)."""
    small, large = runs[-2], runs[-1]
    out: dict[str, Any] = {
        "sizes": [small["size"], large["size"]],
        "size_ratio": large["size"] / small["size"],
    }
    for key in [*PHASES, "wall"]:
        a = small["wall_s"] if key == "wall" else small["phases_s"][key]
        b = large["wall_s"] if key == "wall" else large["phases_s"][key]
        out[key] = round(b / a, 2) if a > 0 else None
    for key in ("status", "report"):
        out[key] = round(large["reading_s"][key] / small["reading_s"][key], 2)
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = [r["size"] for r in runs]
    for phase in PHASES:
        values = [max(r["phases_s"][phase], 1e-2) for r in runs]
        ax.loglog(sizes, values, marker="o", label=phase)
    ax.loglog(sizes, [r["wall_s"] for r in runs], "k--", marker="s", label="campaign wall")
    ax.set_xlabel("pool size (QM9 molecules)")
    ax.set_ylabel("seconds (3 rounds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run.")
    parser.add_argument("--sizes", default=None, help="Comma-separated pool sizes.")
    parser.add_argument(
        "--screen", type=int, default=None, help="Molecules of the throughput part (0: skip)."
    )
    parser.add_argument("--state", type=Path, default=None, help="Directory of the campaigns (resumable).")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    name = "scale_quick" if args.quick else "scale"
    state = args.state or Path(tempfile.gettempdir()) / f"matloop-{name}"
    if args.one is not None:
        run_one(args.one, state / f"pool-{args.one}", state / f"pool-{args.one}.json")
        return
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if args.quick else FULL_SIZES)
    )
    runs = []
    for size in sizes:
        part = state / f"pool-{size}.json"
        if not part.exists():  # each size in a process of its own: its own peak memory
            state.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, __file__, "--one", str(size), "--state", str(state)], check=True)
        runs.append(json.loads(part.read_text()))
        print(json.dumps(runs[-1]), flush=True)
    screen = args.screen if args.screen is not None else (300 if args.quick else 2_000)
    payload: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "campaign": campaign_spec(sizes[-1])
        | {"name": "scale-<size>", "pool": {"source": "qm9", "max_items": "<size>"}},
        "runs": runs,
        "ratios": ratios(runs) if len(runs) > 1 else None,
        "screening": screening_throughput(screen) if screen else None,
        "seeds": {"campaign": 0},
    }
    png = RESULTS_DIR / f"{name}.png"
    plot(runs, png)
    payload["plot"] = png.name
    print(f"wrote {write_result(name, payload)}")


if __name__ == "__main__":
    main()
