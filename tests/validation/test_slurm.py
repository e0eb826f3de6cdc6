"""The slurm executor against a real single-node Slurm (``scripts/slurm-local.sh``).

Workers are real Slurm jobs started by dask-jobqueue; the faults are real Slurm events:
``scancel``, a job reaching its time limit (``scontrol update EndTime=now``: Slurm's own
time-limit kill, without waiting a minute), and ``slurmctld`` stopped and started again.
To catch a calculation while it runs, a test holds the workspace database's write lock from
the moment the calculation is claimed: the worker computes but cannot record its result.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner
from validation_helpers import molecule_slice

from matloop.agent.campaign import Campaign, CampaignSpec
from matloop.cli import app
from matloop.settings import Settings
from matloop.tools import collect_validation, queue_validation, validation_status
from matloop.validation.slurm import close_pools, slurm_jobs, worker_cluster
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
SMALL_JOBS = {"default": {"memory": "1GB", "walltime": "00:10:00", "max_jobs": 1}}


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


def _start_slurm() -> None:
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, stdin=subprocess.DEVNULL, timeout=900)


@pytest.fixture(scope="session")
def slurm() -> None:
    """A running local Slurm: started with the script when sinfo does not answer (needs root)."""
    if not _slurm_answers():
        if os.geteuid() != 0:
            pytest.skip(f"no Slurm answering and not root: run `sudo {SCRIPT} start`")
        _start_slurm()
    assert _slurm_answers()


@pytest.fixture
def slurm_ws(slurm, workspace) -> Iterator[Workspace]:
    """The test workspace with small worker jobs (1 core, 1 GB, at most one at a time)."""
    settings = Settings(
        workspace=workspace.root,
        cache_dir=workspace.settings.cache_dir,
        validation={"slurm": SMALL_JOBS},
    )
    yield Workspace(workspace.root, settings=settings)
    close_pools()


def _wait(predicate, timeout_s: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def caught_running(ws: Workspace, batch_id: str, item_id: str, timeout_s: float = 180.0) -> Iterator[str]:
    """Hold the workspace database's write lock from the moment a worker has claimed ``item_id``.

    Checking and locking happen in one transaction, retried every few milliseconds, so the
    calculation is caught between its claim and its result: it runs but cannot record until
    the block ends. Yields the Slurm job id of the worker running it.
    """
    db = sqlite3.connect(ws.db_path, timeout=60.0, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            db.execute("BEGIN IMMEDIATE")
            status, slurm_id = db.execute(
                "SELECT status, remote_id FROM validation_jobs WHERE batch_id = ? AND item_id = ?",
                (batch_id, item_id),
            ).fetchone()
            if status == "running":
                break
            db.execute("ROLLBACK")
            assert status == "queued" and time.monotonic() < deadline, f"{item_id} is {status}, not running"
            time.sleep(0.01)
        yield slurm_id
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()


def _wait_ended(slurm_id: str) -> str:
    job = _wait(
        lambda: (j := slurm_jobs({slurm_id}, 30).get(slurm_id)) is not None and not j.active and j,
        60,
        f"Slurm job {slurm_id} to end",
    )
    return job.state


def test_cluster_example_gives_each_level_its_worker_jobs(settings, tmp_path):
    spec = CampaignSpec.from_yaml(ROOT / "examples" / "cluster-cp2k.yaml")
    ws = Campaign(tmp_path / "gaps", spec).ws
    scripts = {}
    for level in ("cp2k", "chgnet"):
        cluster = worker_cluster(ws, level)
        scripts[level] = cluster.job_script()
        cluster.close()
    cp2k, chgnet = scripts["cp2k"], scripts["chgnet"]
    for line in (
        "-p compute",
        "-A my-project",
        "--cpus-per-task=16",
        "--mem=30G",
        "-t 04:00:00",
        "--qos=normal",
    ):
        assert f"#SBATCH {line}" in cp2k
    assert "module load cp2k/2024.1" in cp2k and "export OMP_NUM_THREADS=16" in cp2k
    assert "--nthreads 1" in cp2k  # one calculation at a time per worker job
    assert "#SBATCH --cpus-per-task=1" in chgnet and "#SBATCH -t 01:00:00" in chgnet
    assert "#SBATCH -p compute" in chgnet and "module load" not in chgnet


@pytest.fixture
def slurm_campaign(slurm, settings, tmp_path) -> Iterator[Campaign]:
    """An (unstarted) campaign whose spec sends calculations to Slurm in small worker jobs."""
    spec = CampaignSpec(name="cluster", executor="slurm", slurm=SMALL_JOBS)
    root = tmp_path / "cluster"
    root.mkdir()
    (root / "campaign.yaml").write_text(spec.to_yaml())
    yield Campaign(root, spec)
    close_pools()


def test_batch_runs_in_slurm_jobs_with_job_id_in_provenance(slurm_campaign):
    ws = slurm_campaign.ws
    sl = molecule_slice(ws)
    batch = queue_validation(sl, ["CH4", "H2O"], level="xtb", executor="slurm", workspace=ws)
    assert batch.executor == "slurm" and batch.counts == {"queued": 2}  # returned without waiting
    assert all(s.reason.startswith("queued in Slurm") for s in batch.statuses)
    result = collect_validation(batch.batch_id, timeout_s=180, workspace=ws)
    assert not result.failures and not result.pending
    gaps = {lab.item_id: lab.value for lab in result.labels if lab.property == "gap"}
    assert set(gaps) == {"CH4", "H2O"} and all(5 < g < 25 for g in gaps.values())
    slurm_ids = {lab.provenance["remote_id"] for lab in result.labels}
    assert {lab.provenance["executor"] for lab in result.labels} == {"slurm"}
    for slurm_id in slurm_ids:  # Slurm itself knows these as the worker jobs of this level
        out = subprocess.run(
            ["squeue", "-h", "-j", slurm_id, "--states=all", "-o", "%j"], capture_output=True, text=True
        )
        assert out.stdout.strip() == "matloop-xtb"
    jobs = ValidationStore(ws).jobs(batch_id=batch.batch_id)
    assert [j.attempts for j in jobs] == [1, 1]
    status = CliRunner().invoke(app, ["campaign", "status", str(ws.root)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert "calculation states (slurm)" in status.output and "2 done" in status.output


def test_scancel_requeues_the_running_calculation_and_keeps_finished_ones(slurm_ws, caplog):
    caplog.set_level(logging.INFO, logger="matloop.validation.slurm")
    sl = molecule_slice(slurm_ws)
    first = queue_validation(sl, ["CH4"], level="xtb", executor="slurm", workspace=slurm_ws)
    before = collect_validation(first.batch_id, timeout_s=180, workspace=slurm_ws).labels
    assert before
    batch = queue_validation(sl, ["H2O", "NH3"], level="xtb", executor="slurm", workspace=slurm_ws)
    with caught_running(slurm_ws, batch.batch_id, "H2O") as slurm_id:
        subprocess.run(["scancel", slurm_id], check=True)
        assert _wait_ended(slurm_id) == "CANCELLED"
    status = validation_status(batch.batch_id, workspace=slurm_ws)
    h2o = next(s for s in status.statuses if s.item_id == "H2O")
    assert h2o.status in ("queued", "running")
    assert f"re-queued: Slurm job {slurm_id} ended (CANCELLED)" in caplog.text
    result = collect_validation(batch.batch_id, timeout_s=180, workspace=slurm_ws)
    assert not result.failures and not result.pending
    jobs = {j.item_id: j for j in ValidationStore(slurm_ws).jobs(batch_id=batch.batch_id)}
    assert jobs["H2O"].status == "done" and jobs["H2O"].attempts == 2
    assert jobs["H2O"].remote_id != slurm_id  # finished in a new worker job
    again = collect_validation(first.batch_id, workspace=slurm_ws)
    assert again.labels == before  # the finished calculation kept its labels and never re-ran
    assert ValidationStore(slurm_ws).jobs(batch_id=first.batch_id)[0].attempts == 1


def test_single_points_run_in_chunks_and_a_chunk_killed_mid_run_reruns_alone(slurm_ws):
    ws = Workspace(
        slurm_ws.root,
        settings=slurm_ws.settings.model_copy(
            update={"validation": slurm_ws.settings.validation.model_copy(update={"chunk_size": 2})}
        ),
    )
    sl = molecule_slice(ws)
    first = queue_validation(sl, ["CH4"], level="xtb", executor="slurm", workspace=ws)
    assert collect_validation(first.batch_id, timeout_s=180, workspace=ws).labels
    batch = queue_validation(sl, ["H2O", "NH3", "C2H4"], level="xtb", executor="slurm", workspace=ws)
    # NH3 is the last of the chunk [H2O, NH3]: once it is claimed the chunk computes but cannot record
    with caught_running(ws, batch.batch_id, "NH3") as slurm_id:
        with closing(sqlite3.connect(ws.db_path)) as db:  # a reader: the write lock is held
            running = dict(db.execute("SELECT item_id, remote_id FROM validation_jobs WHERE batch_id = ?",
                                      (batch.batch_id,)))  # fmt: skip
        subprocess.run(["scancel", slurm_id], check=True)
        assert _wait_ended(slurm_id) == "CANCELLED"
    assert running["H2O"] == running["NH3"] == slurm_id  # claimed together, by one worker job
    result = collect_validation(batch.batch_id, timeout_s=180, workspace=ws)
    assert not result.failures and not result.pending
    jobs = {j.item_id: j for j in ValidationStore(ws).jobs(batch_id=batch.batch_id)}
    assert {i: j.attempts for i, j in jobs.items()} == {"H2O": 2, "NH3": 2, "C2H4": 1}
    docs = {lab.item_id: lab.provenance["task_doc"] for lab in result.labels}
    assert docs["H2O"] == docs["NH3"] != docs["C2H4"]  # one calculation per chunk
    assert ValidationStore(ws).jobs(batch_id=first.batch_id)[0].attempts == 1  # finished: never re-ran


def test_walltime_kill_fails_the_calculation_with_that_reason(slurm_ws):
    sl = molecule_slice(slurm_ws)
    batch = queue_validation(sl, ["CH4"], level="xtb", executor="slurm", workspace=slurm_ws)
    with caught_running(slurm_ws, batch.batch_id, "CH4") as slurm_id:
        update = subprocess.run(
            ["scontrol", "update", f"JobId={slurm_id}", "EndTime=now"], capture_output=True, text=True
        )
        assert update.returncode == 0, update.stderr
        assert _wait_ended(slurm_id) == "TIMEOUT"
    result = collect_validation(batch.batch_id, timeout_s=60, workspace=slurm_ws)
    assert not result.labels and not result.pending
    (failure,) = result.failures
    assert failure.status == "failed"
    assert f"Slurm job {slurm_id} reached its time limit" in failure.reason
    assert "TIMEOUT" in failure.reason


def test_controller_down_while_polling_waits_retries_and_continues(slurm_ws, caplog):
    caplog.set_level(logging.WARNING, logger="matloop.validation.slurm")
    sl = molecule_slice(slurm_ws)
    subprocess.run(["bash", str(SCRIPT), "stop-controller"], check=True)
    try:
        batch = queue_validation(sl, ["CH4", "NH3"], level="xtb", executor="slurm", workspace=slurm_ws)
        assert batch.counts == {"queued": 2}
        collected: dict[str, object] = {}
        poller = threading.Thread(
            target=lambda: collected.update(
                result=collect_validation(batch.batch_id, timeout_s=240, workspace=slurm_ws)
            )
        )
        poller.start()
        _wait(lambda: caplog.text.count("Slurm controller not answering") >= 2, 120, "two retries")
        states = {j.status for j in ValidationStore(slurm_ws).jobs(batch_id=batch.batch_id)}
        assert states == {"queued"}  # nothing failed or lost while the controller was away
    finally:
        _start_slurm()
    poller.join(timeout=300)
    assert "retrying at the next poll" in caplog.text
    result = collected["result"]
    assert not result.failures and not result.pending
    assert {lab.item_id for lab in result.labels if lab.property == "gap"} == {"CH4", "NH3"}
