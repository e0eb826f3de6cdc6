"""Where validation flows run.

- ``local``: a background worker process per workspace (:mod:`matloop.validation.worker`);
  the caller is never blocked, state lives in ``state.sqlite``, a killed worker's running jobs
  are re-queued by the next one and finished jobs are never recomputed.
- ``dask``: each job is a task on a ``dask.distributed`` cluster that writes its result to the
  workspace (which must be on a filesystem shared with the workers). With no
  ``settings.validation.dask_address`` a ``LocalCluster`` is started in this process. On Slurm,
  start a cluster with dask-jobqueue and point the setting at its scheduler::

      from dask_jobqueue import SLURMCluster
      cluster = SLURMCluster(cores=16, memory="64GB", walltime="02:00:00", account="...")
      cluster.scale(jobs=4)
      # MATLOOP_VALIDATION__DASK_ADDRESS=<cluster.scheduler_address>

- ``jobflow-remote``: flows are submitted with ``jobflow_remote.submit_flow`` to a project's
  worker (HPC); results come back through its MongoDB job store. Set-up: ``pip install
  jobflow-remote``, ``jf project generate NAME``, fill in the worker (host, scheduler, work
  dir, ``pre_run`` loading VASP/CP2K) and the MongoDB queue/job stores, ``jf project check``,
  ``jf runner start``; then set ``MATLOOP_VALIDATION__REMOTE_PROJECT`` / ``__REMOTE_WORKER``.
- ``slurm``: workers are Slurm jobs started by dask-jobqueue from this process, with per-level
  resources from ``settings.validation.slurm`` (:mod:`matloop.validation.slurm`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from jobflow import Flow, Job

from matloop.errors import MissingExtraError, invalid_choice
from matloop.filelock import is_held
from matloop.names import ExecutorName
from matloop.settings import Settings
from matloop.validation.levels import LevelContext, get_level
from matloop.validation.runner import chunks
from matloop.validation.slurm import SlurmExecutor
from matloop.validation.store import JobRecord, ValidationStore
from matloop.validation.worker import (
    MAX_STARTS,
    SETTINGS_FILE,
    failed_starts,
    lock_path,
    set_failed_starts,
    try_lock,
)
from matloop.workspace import Workspace


class Executor(Protocol):
    """Runs queued jobs somewhere; ``poll`` is called by status/collect to keep things moving.

    ``finishes_here`` is False when results arrive only through another system (jobflow-remote),
    so collecting never waits for them.
    """

    finishes_here: bool

    def submit(self, workspace: Workspace, jobs: list[JobRecord]) -> None: ...

    def poll(self, workspace: Workspace) -> None: ...


def worker_alive(workspace: Workspace) -> bool:
    """Whether a local worker holds this workspace's lock."""
    return is_held(lock_path(workspace))


@dataclass
class LocalExecutor:
    """A background worker process (started on demand) runs queued jobs one at a time."""

    finishes_here: bool = True

    def submit(self, workspace: Workspace, jobs: list[JobRecord]) -> None:
        self.poll(workspace)

    def poll(self, workspace: Workspace) -> None:
        (workspace.dir("calcs") / SETTINGS_FILE).write_text(workspace.settings.model_dump_json())
        store = ValidationStore(workspace)
        if not store.count("local"):
            return
        fd = try_lock(workspace)
        if fd is None:
            return  # a worker is alive (or starting: it was handed the lock)
        try:
            starts = failed_starts(workspace)
            if starts >= MAX_STARTS:
                self._give_up(workspace, store, starts)
                return
            set_failed_starts(workspace, starts + 1)
            self.start_worker(workspace, fd)
        finally:
            os.close(fd)  # the worker's inherited copy keeps the lock

    @staticmethod
    def _give_up(workspace: Workspace, store: ValidationStore, starts: int) -> None:
        """Fail the queued jobs with the worker's last output: it cannot start here."""
        log = workspace.dir("calcs") / "worker.log"
        last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        reason = f"the local worker failed to start {starts} times in a row; its last output: " + (
            last[0] if last else "none"
        )
        store.requeue_running("local")
        for job in store.jobs_with_status("queued", executor="local"):
            store.transition(job.job_id, "queued", "failed", reason)
        set_failed_starts(workspace, 0)

    @staticmethod
    def start_worker(workspace: Workspace, lock_fd: int) -> subprocess.Popen:
        """Spawn ``python -P -m matloop.validation.worker`` detached, handing it the locked fd and
        this process's pid (the worker stops after its current job once this process is gone)."""
        calcs = workspace.dir("calcs")
        args = [str(workspace.root), str(lock_fd), str(os.getpid())]
        with open(calcs / "worker.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-P", "-m", "matloop.validation.worker", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(lock_fd,),
            )


def run_stored_jobs(root: str, settings_json: str, job_ids: list[str]) -> int:
    """Dask task: claim and run stored jobs (see :func:`~matloop.validation.runner.run_claimed`)."""
    from matloop.validation.runner import run_claimed

    workspace = Workspace(root, settings=Settings.model_validate_json(settings_json))
    return run_claimed(workspace, job_ids, executor="dask")


_CLIENTS: dict[str | None, Any] = {}


def dask_client(address: str | None) -> Any:
    """A cached ``distributed.Client`` for ``address`` (None: a LocalCluster of one worker)."""
    if address not in _CLIENTS or _CLIENTS[address].status != "running":
        from distributed import Client, LocalCluster

        if address is None:
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True)
            _CLIENTS[None] = Client(cluster)
        else:
            _CLIENTS[address] = Client(address)
    return _CLIENTS[address]


def close_dask_clients() -> None:
    """Close the cached clients (their clusters are gone, or the caller is done with them), and
    the LocalCluster this process started."""
    while _CLIENTS:
        address, client = _CLIENTS.popitem()
        client.close()
        if address is None:
            client.cluster.close()


@dataclass
class DaskExecutor:
    """Each job (or chunk of single points) is one task on a Dask cluster; results go straight to
    the workspace."""

    finishes_here: bool = True

    def submit(self, workspace: Workspace, jobs: list[JobRecord]) -> None:
        from distributed import fire_and_forget

        client = dask_client(workspace.settings.validation.dask_address)
        settings_json = workspace.settings.model_dump_json()
        for chunk in chunks(jobs, workspace.settings.validation.chunk_size):
            ids = [job.job_id for job in chunk]
            future = client.submit(
                run_stored_jobs, str(workspace.root), settings_json, ids, pure=False, key=ids[0]
            )
            fire_and_forget(future)

    def poll(self, workspace: Workspace) -> None:
        """Dask runs and retries tasks itself; nothing to do here."""


def remote_submission(flow: Flow | Job, settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``jobflow_remote.submit_flow`` for one flow, validated.

    The flow must serialise to JSON and have no references outside itself (it will run on
    another machine); project and worker come from ``settings.validation``.
    """
    from jobflow.core.flow import get_flow

    flow = get_flow(flow, allow_external_references=False)
    Flow.from_dict(flow.as_dict())  # round trip: everything in it is serialisable
    resources = dict(settings.validation.remote_resources) or None
    return {
        "flow": flow,
        "worker": settings.validation.remote_worker,
        "project": settings.validation.remote_project,
        "resources": resources,
    }


def _jobflow_remote() -> Any:
    """The ``jobflow_remote`` module, or an error naming the extra that installs it."""
    try:
        import jobflow_remote
    except ImportError as exc:
        raise MissingExtraError(
            "the jobflow-remote executor needs jobflow-remote: pip install 'matloop[remote]'"
        ) from exc
    return jobflow_remote


@dataclass
class JobflowRemoteExecutor:
    """Submit each job's Flow to a jobflow-remote project (HPC; MongoDB-backed queue)."""

    finishes_here: bool = False

    def submit(self, workspace: Workspace, jobs: list[JobRecord]) -> None:
        submit_flow = _jobflow_remote().submit_flow
        store = ValidationStore(workspace)
        for job in jobs:
            level = get_level(job.level)
            assert level.build is not None
            try:
                flow = level.build(
                    job.structure,
                    LevelContext.known(workspace.settings, job.level, store.references(job.level)),
                )
                payload = remote_submission(flow, workspace.settings)
                db_ids = submit_flow(**payload)
            except Exception as exc:  # configuration or database errors fail the job, with the reason
                store.set_status(
                    job.job_id, "failed", f"jobflow-remote submission: {type(exc).__name__}: {exc}"
                )
                continue
            store.set_status(
                job.job_id,
                "running",
                f"submitted to jobflow-remote (db ids {', '.join(map(str, db_ids))}); see `jf job list`",
                remote_id=f"{payload['flow'].uuid}:{flow.output.uuid}",
            )

    def poll(self, workspace: Workspace) -> None:
        """Fetch finished flows' documents from the project's job store; record failures."""
        jobflow_remote = _jobflow_remote()
        from jobflow_remote.jobs.state import JobState

        from matloop.validation.documents import ValidationDocument
        from matloop.validation.runner import record_documents

        store = ValidationStore(workspace)
        jobs = store.jobs_with_status("running", executor="jobflow-remote")
        if not jobs:
            return
        project = workspace.settings.validation.remote_project
        broken = {JobState.FAILED, JobState.REMOTE_ERROR, JobState.STOPPED, JobState.USER_STOPPED}
        try:
            controller = jobflow_remote.JobController.from_project_name(project)
            for job in jobs:
                flow_uuid, output_uuid = str(job.remote_id).split(":")
                infos = controller.get_jobs_info(flow_ids=[flow_uuid])
                failed = [i for i in infos if i.state in broken]
                if failed:
                    info = failed[0]
                    reason = f"{info.name}: {info.state.value}: {info.error or info.remote.error or ''}"
                    store.set_status(job.job_id, "failed", reason.strip()[:500])
                elif infos and all(i.state == JobState.COMPLETED for i in infos):
                    output = controller.jobstore.get_output(output_uuid, load=True)
                    doc = ValidationDocument.model_validate(output)
                    record_documents(
                        workspace, [(job, doc, f"jobflow-remote {project}: job {output_uuid}", 0.0)]
                    )
        except Exception as exc:  # unreachable database: jobs stay running, the reason says why
            for job in jobs:
                store.set_status(
                    job.job_id, "running", f"jobflow-remote store unreachable: {type(exc).__name__}"
                )


def get_executor(name: str) -> Executor:
    """The executor called ``name``; unknown names raise a ToolInputError listing valid ones."""
    executors: dict[ExecutorName, type] = {
        "local": LocalExecutor,
        "dask": DaskExecutor,
        "jobflow-remote": JobflowRemoteExecutor,
        "slurm": SlurmExecutor,
    }
    if name not in executors:
        raise invalid_choice("an executor", name, executors)
    return executors[name]()
