"""The local worker under a hostile environment: a module that shadows the standard library, a
worker that cannot import at all, a calculation that kills its worker, and the process that
started it killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from validation_helpers import crystal_slice, perovskite

from matloop.tools import collect_validation, queue_validation
from matloop.validation.executors import worker_alive
from matloop.validation.store import MAX_ATTEMPTS, ValidationStore
from matloop.validation.worker import MAX_STARTS

BROKEN = "raise ImportError('this inspect.py shadows the standard library')\n"


def test_a_module_in_the_working_directory_cannot_shadow_the_workers(
    workspace, molecule_slice, tmp_path, monkeypatch
):
    here = tmp_path / "project"
    here.mkdir()
    (here / "inspect.py").write_text(BROKEN)
    monkeypatch.chdir(here)
    batch = queue_validation(molecule_slice, ["H2O", "CH4"], level="xtb", workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=120, workspace=workspace)
    assert not result.failures and not result.pending
    assert {lab.item_id for lab in result.labels} == {"H2O", "CH4"}


def test_a_worker_that_cannot_start_fails_its_jobs_after_a_few_tries(
    workspace, molecule_slice, tmp_path, monkeypatch
):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "inspect.py").write_text(BROKEN)
    monkeypatch.setenv("PYTHONPATH", str(shadow))  # every interpreter started now breaks at import
    batch = queue_validation(molecule_slice, ["H2O", "CH4"], level="xtb", workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=120, workspace=workspace)
    assert not result.labels and not result.pending
    assert [f.status for f in result.failures] == ["failed", "failed"]
    reason = result.failures[0].reason or ""
    assert (
        f"failed to start {MAX_STARTS} times in a row" in reason and "shadows the standard library" in reason
    )
    log = (workspace.root / "calcs" / "worker.log").read_text()
    assert log.count("Traceback") == MAX_STARTS

    monkeypatch.delenv("PYTHONPATH")  # fixed: new work runs again
    again = queue_validation(molecule_slice, ["NH3"], level="xtb", workspace=workspace)
    assert collect_validation(again.batch_id, timeout_s=120, workspace=workspace).labels


def test_a_job_that_takes_its_worker_down_fails_after_a_few_attempts(
    workspace, molecule_slice, tmp_path, monkeypatch
):
    shadow = tmp_path / "shadow" / "tblite"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "interface.py").write_text("import os\nos._exit(3)  # the calculation kills its worker\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))  # workers start, then die in the calculation
    batch = queue_validation(molecule_slice, ["H2O"], level="xtb", workspace=workspace)
    result = collect_validation(batch.batch_id, timeout_s=180, workspace=workspace)
    assert not result.labels and not result.pending
    assert [f.status for f in result.failures] == ["failed"]
    assert f"its worker died during each of {MAX_ATTEMPTS} attempts" in (result.failures[0].reason or "")

    monkeypatch.delenv("PYTHONPATH")  # the rest of the campaign carries on
    again = queue_validation(molecule_slice, ["CH4"], level="xtb", workspace=workspace)
    assert collect_validation(again.batch_id, timeout_s=120, workspace=workspace).labels


def test_the_worker_stops_after_the_process_that_started_it_is_killed(workspace, tmp_path):
    items = {f"{a}TiO3": perovskite(a, "Ti", x) for a, x in (("Sr", 3.95), ("Ba", 4.0), ("Ca", 3.85))}
    items.update({"SrZrO3": perovskite("Sr", "Zr", 4.15), "BaZrO3": perovskite("Ba", "Zr", 4.2)})
    slice_id = crystal_slice(workspace, items)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from matloop.tools import queue_validation
                queue_validation({slice_id!r}, {list(items)!r}, workspace={str(workspace.root)!r})
                time.sleep(600)
            """),
        ],
        env={**os.environ, "MATLOOP_CACHE_DIR": str(workspace.settings.cache_dir)},
    )
    store = ValidationStore(workspace)
    deadline = time.monotonic() + 300
    while "running" not in store.status_counts():
        assert time.monotonic() < deadline and owner.poll() is None
        time.sleep(0.1)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    while worker_alive(workspace):
        assert time.monotonic() < deadline, "the worker kept computing after its owner died"
        time.sleep(0.2)
    counts = store.status_counts()
    assert counts.get("queued", 0) >= 1 and "running" not in counts, counts


def test_screening_single_points_run_in_chunks_and_a_killed_chunk_reruns_alone(settings, tmp_path):
    """chgnet_static over a pool: chunks of ``chunk_size`` crystals, one task each; a worker killed
    mid-chunk leaves the finished chunks alone and the interrupted one runs again."""
    from matloop.data.prototypes import build_prototype_pool
    from matloop.data.slices import save_slice
    from matloop.workspace import Workspace

    chunked = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"chunk_size": 40})}
    )
    workspace = Workspace(tmp_path / "ws", settings=chunked)
    pool = build_prototype_pool(families=["perovskite", "rocksalt", "zincblende"], max_items=160, seed=0)
    slice_id = save_slice(workspace, pool)
    batch = queue_validation(slice_id, pool.ids, level="chgnet_static", workspace=workspace)
    store = ValidationStore(workspace)
    deadline = time.monotonic() + 300
    while True:
        jobs = store.jobs(batch_id=batch.batch_id)
        if sum(j.status == "done" for j in jobs) >= 40 and any(j.status == "running" for j in jobs):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(int((workspace.root / "calcs" / "worker.lock").read_text()), signal.SIGKILL)
    while worker_alive(workspace):
        time.sleep(0.05)
    before = {j.job_id: j for j in store.jobs(batch_id=batch.batch_id)}
    running = {i for i, j in before.items() if j.status == "running"}
    assert 0 < len(running) <= 40

    result = collect_validation(batch.batch_id, timeout_s=300, workspace=workspace)
    assert not result.failures and not result.pending
    after = {j.job_id: j for j in store.jobs(batch_id=batch.batch_id)}
    for job_id, job in after.items():
        was = before[job_id]
        if was.status == "done":  # finished before the kill: never ran again
            assert (job.attempts, job.finished_at) == (1, was.finished_at)
        else:
            assert job.attempts == (2 if job_id in running else 1)
    chunks = {j.task_doc for j in after.values()}
    assert len(chunks) == len(pool) // 40  # one task per chunk (the killed one reran in its directory)
