"""Start-up time of the commands that only read: ``matloop --help``, ``matloop data list`` and
``matloop campaign status DIR`` on a finished campaign (the schema-1 test fixture, copied).

Each command runs ``--repeats`` times in a fresh interpreter (``python -m matloop ...``), its runs
interleaved with those of ``python -c pass``; the figure is the ratio of the medians (the
machine is shared and noisy, so absolute seconds are context only). With ``--baseline-src DIR``
(the ``src`` folder of another checkout, e.g. ``git archive COMMIT src | tar -x -C /tmp/base``)
the same commands of that tree are timed in the same rounds, for a before/after ratio.

    python benchmarks/startup.py                                 # 5 runs per command
    python benchmarks/startup.py --baseline-src /tmp/base/src    # and the baseline tree's
    python benchmarks/startup.py --quick                         # 2 runs per command
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
FINISHED = ROOT / "tests" / "agent" / "fixtures" / "schema_v1" / "finished"
TARGET_S = 2.0


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _stats(times: list[float]) -> dict[str, float]:
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs per command")
    parser.add_argument("--repeats", type=int, default=5, help="runs per command")
    parser.add_argument("--baseline-src", type=Path, help="src folder of a checkout to compare with")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    trees = {"current": ROOT / "src"}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        base_env = {
            **os.environ,
            "MATLOOP_WORKSPACE": f"{tmp}/ws",
            "MATLOOP_CACHE_DIR": f"{tmp}/cache",
            "COLUMNS": "120",
        }
        commands: dict[str, dict[str, list[str]]] = {}
        envs = {}
        for tree, src in trees.items():
            campaign = shutil.copytree(FINISHED, f"{tmp}/{tree}-campaign")
            envs[tree] = {**base_env, "PYTHONPATH": str(src)}
            commands[tree] = {
                "--help": ["--help"],
                "data list": ["data", "list"],
                "campaign status": ["campaign", "status", campaign],
            }
        python_pass = [sys.executable, "-c", "pass"]
        for tree, cmds in commands.items():  # warm-up: schema migration, file caches
            for argv in cmds.values():
                _time([sys.executable, "-m", "matloop", *argv], envs[tree])
        times: dict[str, dict[str, list[float]]] = {
            tree: {name: [] for name in commands[tree]} for tree in trees
        }
        baseline: list[float] = []
        for _ in range(repeats):
            baseline.append(_time(python_pass, base_env))
            for tree, cmds in commands.items():
                for name, argv in cmds.items():
                    times[tree][name].append(_time([sys.executable, "-m", "matloop", *argv], envs[tree]))

    pass_median = statistics.median(baseline)
    results = {
        tree: {
            name: {
                "command": f"python -m matloop {' '.join(commands[tree][name][:2])}"
                + (" DIR" if name == "campaign status" else ""),
                **_stats(ts),
                "ratio_to_python_pass": statistics.median(ts) / pass_median,
                "within_target": statistics.median(ts) <= TARGET_S,
            }
            for name, ts in per_tree.items()
        }
        for tree, per_tree in times.items()
    }
    payload = {
        "repeats": repeats,
        "target_s": TARGET_S,
        "python_pass": _stats(baseline),
        "load_average": os.getloadavg(),
        "trees": {tree: str(src) for tree, src in trees.items()},
        "results": results,
    }
    if "baseline" in results:
        payload["current_over_baseline"] = {
            name: results["current"][name]["median_s"] / results["baseline"][name]["median_s"]
            for name in results["current"]
        }
    path = write_result("startup_quick" if args.quick else "startup", payload)
    for tree, per_tree in results.items():
        for name, r in per_tree.items():
            print(
                f"{tree:8s} {name:16s} median {r['median_s']:.2f} s "
                f"[{r['min_s']:.2f}, {r['max_s']:.2f}]  ×{r['ratio_to_python_pass']:.1f} python -c pass"
            )
    print(f"python -c pass median {pass_median:.3f} s; wrote {path}")


if __name__ == "__main__":
    main()
