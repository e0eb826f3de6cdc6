"""Run one stored validation job: build its Flow, run it with jobflow, record labels or the failure.

A level with a deterministic single point reads its result from the calculation cache when that
structure was computed before, in any workspace (:mod:`matloop.validation.calc_cache`).

Shared by every executor that runs flows itself (the local worker process and Dask workers).
Task documents of all jobs of the Flow are written to ``calcs/<job_id>/task_docs.json``;
elemental references computed on the way are cached for the next structures.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version

from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from matloop.settings import Settings
from matloop.validation.calc_cache import CalculationCache
from matloop.validation.documents import ValidationDocument
from matloop.validation.levels import Level, LevelContext, get_level
from matloop.validation.store import JobRecord, ValidationStore
from matloop.workspace import Workspace


class WallTimeExceeded(RuntimeError):
    """A calculation ran past ``settings.validation.walltime_s``."""


@contextmanager
def wall_time(seconds: float) -> Iterator[None]:
    """Raise :class:`WallTimeExceeded` after ``seconds`` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum: int, frame: object) -> None:
        raise WallTimeExceeded(f"wall time of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _write_task_docs(store: JobStore, path) -> None:
    docs = [
        {"name": d.get("name"), "uuid": d.get("uuid"), "index": d.get("index"), "output": d.get("output")}
        for d in store.query({}, properties=["name", "uuid", "index", "output"])
    ]
    path.write_text(json.dumps(docs, default=str))


def run_job(workspace: Workspace, job: JobRecord) -> str:
    """Run a claimed (``running``) job to ``done`` or ``failed``; returns the final status."""
    level = get_level(job.level)
    if level.package is None:
        return _run_flow(workspace, job, level, None)
    cache = CalculationCache(workspace.settings.cache_dir, level)
    try:
        if (hit := cache.get(job.structure)) is not None:
            _record_cached(workspace, job, cache, hit)
            return "done"
        return _run_flow(workspace, job, level, cache)
    finally:
        cache.close()


def serve_cached(workspace: Workspace, jobs: list[JobRecord]) -> list[JobRecord]:
    """Finish the queued jobs (of one level) whose result the calculation cache holds, claiming each
    first; returns the others, which still need to run."""
    if not jobs or (level := get_level(jobs[0].level)).package is None:
        return jobs
    store, rest = ValidationStore(workspace), []
    cache = CalculationCache(workspace.settings.cache_dir, level)
    try:
        for job in jobs:
            hit = cache.get(job.structure)
            if hit is None:
                rest.append(job)
            elif store.transition(job.job_id, "queued", "running", None):  # claimed: no one runs it now
                _record_cached(workspace, job, cache, hit)
    finally:
        cache.close()
    return rest


def _record_cached(
    workspace: Workspace, job: JobRecord, cache: CalculationCache, hit: tuple[ValidationDocument, float]
) -> None:
    """Store a cached result as the job's, with the seconds it took when it ran."""
    doc, seconds = hit
    record_document(workspace, job, doc, f"{CalculationCache.FILE}:{cache.key(job.structure)}", seconds)


def _run_flow(workspace: Workspace, job: JobRecord, level: Level, cache: CalculationCache | None) -> str:
    """Build and run the job's Flow; a finished single point goes into ``cache``."""
    settings: Settings = workspace.settings
    store = ValidationStore(workspace)
    calc_dir = workspace.dir("calcs") / job.job_id
    shutil.rmtree(calc_dir, ignore_errors=True)  # leftovers of an interrupted attempt
    calc_dir.mkdir(parents=True)
    job_store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    start = time.perf_counter()
    try:
        if level.build is None:
            raise ValueError(f"level {job.level!r} has no calculation to run")
        flow = level.build(
            job.structure, LevelContext.known(settings, job.level, store.references(job.level))
        )
        with wall_time(settings.validation.walltime_s):
            run_locally(
                flow,
                store=job_store,
                create_folders=True,
                root_dir=calc_dir,
                ensure_success=True,
                raise_immediately=True,
                log=False,
            )
        doc = flow.output.resolve(job_store)
        doc = doc if isinstance(doc, ValidationDocument) else ValidationDocument.model_validate(doc)
    except Exception as exc:  # any crash of the calculation is a recorded failure, never fatal
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        _write_task_docs(job_store, calc_dir / "task_docs.json")
        store.set_status(job.job_id, "failed", reason, calc_seconds=time.perf_counter() - start)
        return "failed"
    seconds = time.perf_counter() - start
    docs_path = calc_dir / "task_docs.json"
    _write_task_docs(job_store, docs_path)
    record_document(workspace, job, doc, str(docs_path.relative_to(workspace.root)), seconds)
    if cache is not None:
        cache.put(job.structure, doc.model_copy(update={"final_structure": None}), seconds)
    return "done"


@functools.cache
def _matloop_version() -> str:
    return version("matloop")


def record_document(
    workspace: Workspace, job: JobRecord, doc: ValidationDocument, task_doc: str, seconds: float
) -> None:
    """Store a finished job's labels with provenance and cache its elemental references."""
    store = ValidationStore(workspace)
    provenance = {
        "level": job.level,
        "code": doc.code,
        "code_version": doc.code_version,
        "matloop_version": _matloop_version(),
        "task_doc": task_doc,
        "job_id": job.job_id,
        "batch_id": job.batch_id,
        "executor": job.executor,
    }
    if job.remote_id:
        provenance["remote_id"] = job.remote_id  # the Slurm job id; flow:job uuids for jobflow-remote
    if doc.references:
        store.add_references(job.level, doc.references, {"code": doc.code, "code_version": doc.code_version})
    labels = {p: (v, doc.units[p]) for p, v in doc.properties.items()}
    store.finish(job, labels, provenance, task_doc=task_doc, calc_seconds=seconds)
