"""The ``slurm`` executor: calculations run on dask-jobqueue workers that are Slurm jobs.

The process that queues calculations (a campaign, a notebook) owns one ``SLURMCluster`` per
workspace and level: its Dask scheduler lives in that process, its workers are Slurm jobs with
the level's resources (``settings.validation.slurm``). A worker job runs calculations one after
another until none are left, so a thousand calculations cost ``max_jobs`` submissions, not a
thousand; single points go to workers in chunks of ``settings.validation.chunk_size`` (one model
load and one claim transaction per chunk), and a chunk whose worker died reruns only its
unfinished jobs. Nothing blocks: ``submit`` hands tasks to the scheduler and asks Slurm for workers;
``poll`` (from ``validation_status`` / ``collect_validation``) reconciles the store with Slurm:

- a worker claims a job atomically and records its Slurm job id (``remote_id``), so a
  calculation never runs twice at once and each label's provenance names its Slurm job;
- a job whose worker job ended while it ran (``scancel``, node failure, preemption) is
  re-queued and handed to a new worker; one killed by Slurm's time limit or memory limit is
  ``failed`` with that reason; a job that took down its worker ``MAX_ATTEMPTS`` times fails,
  and so does one whose task raised on the worker (e.g. matloop not importable there);
- while the controller does not answer, states are left as they are, a warning is logged and
  the next poll retries; finished calculations keep arriving meanwhile (workers write to the
  workspace, which must be on a filesystem the compute nodes share);
- worker jobs are released when nothing is left to run.

One process per workspace and level owns the cluster (an ``flock`` on ``calcs/slurm-LEVEL.lock``);
others only read the store. When the owner exits its workers stop after losing their scheduler,
and the next process that polls takes over.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matloop.filelock import try_flock
from matloop.settings import Settings, SlurmResources
from matloop.validation.runner import chunks, run_claimed
from matloop.validation.store import MAX_ATTEMPTS, JobRecord, ValidationStore
from matloop.workspace import Workspace

log = logging.getLogger(__name__)

EXECUTOR = "slurm"
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)
#: Slurm end states that fail the calculation running in the job (anything else re-queues it).
FATAL = {"TIMEOUT": "reached its time limit", "OUT_OF_MEMORY": "ran out of memory"}


class SlurmUnavailable(RuntimeError):
    """The Slurm controller did not answer."""


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says about one job."""

    job_id: str
    state: str
    time_limit: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def slurm_jobs(job_ids: set[str], timeout_s: float) -> dict[str, SlurmJob]:
    """Slurm's view of ``job_ids`` (from squeue; sacct for jobs squeue has forgotten).

    Raises :class:`SlurmUnavailable` when squeue cannot reach the controller; ids neither knows
    are left out.
    """
    try:
        out = subprocess.run(
            ["squeue", "-h", "-u", getpass.getuser(), "--states=all", "-o", "%i|%T|%l|%r"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmUnavailable(f"squeue: {type(exc).__name__}: {exc}") from exc
    if out.returncode != 0:
        raise SlurmUnavailable(f"squeue: {out.stderr.strip() or f'exit code {out.returncode}'}")
    found: dict[str, SlurmJob] = {}
    for line in out.stdout.splitlines():
        job_id, state, limit, reason = [*line.split("|"), "", "", ""][:4]
        if job_id in job_ids:
            found[job_id] = SlurmJob(job_id, state, limit, reason)
    missing = sorted(job_ids - set(found))
    if missing:
        found.update(_sacct(missing, timeout_s))
    return found


def _sacct(job_ids: list[str], timeout_s: float) -> dict[str, SlurmJob]:
    """Finished jobs from the accounting database (none when accounting is off)."""
    try:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,Timelimit"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        job_id, state, limit = [*line.split("|"), "", ""][:3]
        found[job_id] = SlurmJob(job_id, state.split()[0] if state else "", limit)
    return found


def current_slurm_job() -> str | None:
    """The Slurm job id of this process (None outside Slurm)."""
    return os.environ.get("SLURM_JOB_ID")


def run_in_slurm(root: str, settings_json: str, job_ids: list[str]) -> int:
    """Dask task on a Slurm worker: claim and run one chunk of stored jobs, recording the Slurm
    job id (:func:`~matloop.validation.runner.run_claimed`); returns how many ran.

    A job already ``running`` under this same Slurm job was left by a worker process that
    died (its nanny restarted it): it is claimed again. Threaded codes (CP2K) use the cores
    Slurm gave the job.
    """
    settings = Settings.model_validate_json(settings_json)
    cores = os.environ.get("SLURM_CPUS_PER_TASK")
    if cores:
        validation = settings.validation.model_copy(update={"cp2k_threads": int(cores)})
        settings = settings.model_copy(update={"validation": validation})
    workspace = Workspace(root, settings=settings)
    slurm_id = current_slurm_job() or "none"
    reason = f"running in Slurm job {slurm_id} on {socket.gethostname()}"
    return run_claimed(workspace, job_ids, executor=EXECUTOR, remote_id=slurm_id, reason=reason)


def worker_log_directory(workspace: Workspace) -> Path:
    """Where worker jobs write their stdout and stderr."""
    return workspace.settings.validation.slurm.log_directory or workspace.dir("calcs") / "slurm"


def worker_cluster(workspace: Workspace, level: str) -> Any:
    """A ``SLURMCluster`` (no workers yet) with the resources of ``level``."""
    from dask_jobqueue import SLURMCluster

    res: SlurmResources = workspace.settings.validation.slurm.resources(level)
    logs = worker_log_directory(workspace)
    logs.mkdir(parents=True, exist_ok=True)
    return SLURMCluster(
        cores=1,  # one calculation at a time per worker job; it may use all of job_cpu
        processes=1,
        job_cpu=res.cores,
        memory=res.memory,
        walltime=res.walltime,
        queue=res.partition,
        account=res.account,
        job_name=f"matloop-{level}",
        job_script_prologue=[f"export OMP_NUM_THREADS={res.cores}", *res.prologue],
        job_extra_directives=list(res.directives),
        log_directory=str(logs),
        scheduler_options={"dashboard": False},
    )


@dataclass
class SlurmPool:
    """This process's cluster for one workspace and level, and the tasks it has handed out."""

    level: str
    cluster: Any
    client: Any
    lock_fd: int
    log_directory: str
    futures: dict[str, Any] = field(default_factory=dict)

    def worker_jobs(self) -> dict[str, str | None]:
        """Worker name → Slurm job id (None when its submission failed)."""
        return {name: w.job_id for name, w in list(self.cluster.workers.items())}

    def close(self) -> None:
        self.client.close()
        self.cluster.close()
        os.close(self.lock_fd)


_POOLS: dict[tuple[str, str], SlurmPool] = {}


def _lock(workspace: Workspace, level: str) -> int | None:
    return try_flock(workspace.dir("calcs") / f"slurm-{level}.lock")


def slurm_pool(workspace: Workspace, level: str) -> SlurmPool | None:
    """This process's pool for ``level`` (started on first use), or None when another process owns it."""
    key = (str(workspace.root.resolve()), level)
    if key not in _POOLS:
        fd = _lock(workspace, level)
        if fd is None:
            return None
        from distributed import Client

        try:
            cluster = worker_cluster(workspace, level)
        except BaseException:
            os.close(fd)
            raise
        _POOLS[key] = SlurmPool(level, cluster, Client(cluster), fd, str(worker_log_directory(workspace)))
        # jobs left running by a previous owner: their workers are gone or will stop without
        # a scheduler; each poll re-queues them once Slurm says they ended
    return _POOLS[key]


def close_pools() -> None:
    """Close this process's clusters (cancels their worker jobs) and release their locks."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()


@dataclass
class SlurmExecutor:
    """Each calculation is a task on a dask-jobqueue ``SLURMCluster`` (workers are Slurm jobs)."""

    finishes_here: bool = True

    def submit(self, workspace: Workspace, jobs: list[JobRecord]) -> None:
        self.poll(workspace)

    def poll(self, workspace: Workspace) -> None:
        """Reconcile stored states with Slurm, hand out queued jobs, size the worker pool."""
        store = ValidationStore(workspace)
        queued = store.jobs_with_status("queued", executor=EXECUTOR)
        running = store.jobs_with_status("running", executor=EXECUTOR)
        root = str(workspace.root.resolve())
        levels = {j.level for j in queued + running} | {lv for r, lv in _POOLS if r == root}
        for level in sorted(levels):
            pool = slurm_pool(workspace, level)
            if pool is None:
                continue  # another process owns this level's cluster and keeps it moving
            _reconcile(
                workspace,
                store,
                pool,
                [j for j in queued if j.level == level],
                [j for j in running if j.level == level],
            )


def _reconcile(
    workspace: Workspace,
    store: ValidationStore,
    pool: SlurmPool,
    queued: list[JobRecord],
    running: list[JobRecord],
) -> None:
    slurm = workspace.settings.validation.slurm
    failed = _fail_broken_tasks(store, pool, queued + running)
    queued = [j for j in queued if j.job_id not in failed]
    running = [j for j in running if j.job_id not in failed]
    workers = pool.worker_jobs()
    if not queued and not running and not workers:
        return
    ids = {j.remote_id for j in running if j.remote_id} | {i for i in workers.values() if i}
    try:
        known = slurm_jobs(ids, slurm.command_timeout_s)
    except SlurmUnavailable as exc:
        log.warning(
            "Slurm controller not answering (%s); %d %s calculation(s) keep their state, "
            "retrying at the next poll",
            exc,
            len(queued) + len(running),
            pool.level,
        )
        return
    for job in running:
        ended = known.get(job.remote_id or "")
        if ended is not None and ended.active:
            continue
        state = ended.state if ended is not None else "no longer known to Slurm"
        if ended is not None and ended.state in FATAL:
            limit = f", limit {ended.time_limit}" if ended.state == "TIMEOUT" and ended.time_limit else ""
            reason = f"Slurm job {job.remote_id} {FATAL[ended.state]} while this calculation ran"
            store.transition(
                job.job_id, "running", "failed", f"{reason} ({ended.state}{limit})", remote_id=job.remote_id
            )
        elif job.attempts >= MAX_ATTEMPTS:
            reason = f"its Slurm worker job ended ({state}) during each of {job.attempts} attempts"
            store.transition(job.job_id, "running", "failed", reason, remote_id=job.remote_id)
        else:
            reason = f"re-queued: Slurm job {job.remote_id} ended ({state}) while this calculation ran"
            if store.transition(job.job_id, "running", "queued", reason, remote_id=job.remote_id):
                log.info("%s: %s", job.job_id, reason)
                queued.append(job)
    _hand_out(workspace, pool, queued)
    _resize(pool, known, wanted=len(queued) + len(running), max_jobs=slurm.resources(pool.level).max_jobs)
    pending = sorted(f"{i} {known[i].state}" for i in workers.values() if i in known and known[i].active)
    waiting = f"worker jobs {', '.join(pending)}" if pending else "worker jobs being submitted"
    for job in queued:
        if not (job.reason or "").startswith("re-queued"):
            store.transition(job.job_id, "queued", "queued", f"queued in Slurm: waiting for {waiting}")


def _fail_broken_tasks(store: ValidationStore, pool: SlurmPool, jobs: list[JobRecord]) -> set[str]:
    """Fail jobs whose task raised on the worker (matloop not importable there, a worker that died
    three times running it: Dask's ``KilledWorker``); returns their ids."""
    failed = set()
    for job in jobs:
        future = pool.futures.get(job.job_id)
        if future is None or future.status != "error":
            continue
        exc = future.exception()
        reason = f"its task failed on the Slurm worker ({pool.log_directory}): {type(exc).__name__}: {exc}"
        reason = reason[:500]
        if store.transition(job.job_id, job.status, "failed", reason):  # type: ignore[arg-type]
            log.warning("%s: %s", job.job_id, reason)
            failed.add(job.job_id)
        pool.futures.pop(job.job_id)
    return failed


def _hand_out(workspace: Workspace, pool: SlurmPool, queued: list[JobRecord]) -> None:
    """A task for the queued jobs that have none in flight (new, re-queued, or given up by Dask):
    single points of a level in chunks of ``settings.validation.chunk_size``, others one each."""
    settings_json = workspace.settings.model_dump_json()
    idle = [job for job in queued if (f := pool.futures.get(job.job_id)) is None or f.done()]
    for chunk in chunks(idle, workspace.settings.validation.chunk_size):
        ids = [job.job_id for job in chunk]
        future = pool.client.submit(
            run_in_slurm,
            str(workspace.root),
            settings_json,
            ids,
            pure=False,
            key=f"matloop-{ids[0]}-{chunk[0].attempts}-{len(pool.futures)}",
        )
        pool.futures.update(dict.fromkeys(ids, future))
    pool.futures = {k: f for k, f in pool.futures.items() if not f.done() or k in {j.job_id for j in queued}}


def _resize(pool: SlurmPool, known: dict[str, Any], *, wanted: int, max_jobs: int) -> None:
    """Forget worker jobs that ended or never started, then ask for as many as there is work.

    Forgotten workers leave the cluster's spec too, so their replacements get new names (Dask
    would otherwise close a replacement that reuses the name of a worker it saw leave).
    """
    dead = [
        name
        for name, job_id in pool.worker_jobs().items()
        if job_id is None or job_id not in known or not known[job_id].active
    ]
    if dead:

        async def forget() -> None:
            for name in dead:
                pool.cluster.workers.pop(name, None)
                pool.cluster.worker_spec.pop(name, None)

        pool.cluster.sync(forget)
    pool.cluster.scale(jobs=min(max_jobs, wanted))
