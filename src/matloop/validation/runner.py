"""Run stored validation jobs: build a job's Flow (or one job for a chunk of single points), run it
with jobflow, record labels or the failure.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from jobflow import Flow, Job, JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Molecule, Structure

from matloop.settings import Settings
from matloop.validation.calc_cache import CalculationCache
from matloop.validation.documents import ValidationDocument
from matloop.validation.levels import Level, LevelContext, get_level
from matloop.validation.store import Finished, JobRecord, StoredStructures, ValidationStore
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
        todo = _serve(workspace, cache, [job], cache.keys(_structures([job])), claim=False)
        return _run_flow(workspace, job, level, cache, todo[0][1]) if todo else "done"
    finally:
        cache.close()


def _structures(jobs: Sequence[JobRecord]) -> StoredStructures:
    """The jobs' structures as stored: hashed without decoding, each decoded when read."""
    return StoredStructures([job.structure_json for job in jobs])


def chunks(jobs: list[JobRecord], size: int) -> list[list[JobRecord]]:
    """Jobs grouped into tasks: single points of one level ``size`` at a time (one model load
    each, see :func:`run_jobs`), every other job alone."""
    out: list[list[JobRecord]] = []
    by_level: dict[str, list[JobRecord]] = {}
    for job in jobs:
        if get_level(job.level).single_point is None:
            out.append([job])
        else:
            by_level.setdefault(job.level, []).append(job)
    for same in by_level.values():
        out += [same[k : k + size] for k in range(0, len(same), size)]
    return out


def run_claimed(
    workspace: Workspace,
    job_ids: list[str],
    *,
    executor: str,
    remote_id: str | None = None,
    reason: str | None = None,
) -> int:
    """What one task of a cluster runs: claim the stored jobs ``job_ids`` of ``executor`` (one
    chunk; jobs finished or claimed elsewhere are skipped) and run them; returns how many ran."""
    store = ValidationStore(workspace)
    jobs = store.claim_ids(job_ids, executor=executor, remote_id=remote_id, reason=reason)
    if jobs:
        run_jobs(workspace, jobs)
    return len(jobs)


def run_jobs(workspace: Workspace, jobs: list[JobRecord]) -> None:
    """Run claimed jobs of one level: single points as one task (one model load for the chunk),
    others one by one. Cached results are served first; each job ends ``done`` or ``failed``."""
    level = get_level(jobs[0].level)
    if level.single_point is None or len(jobs) == 1:
        for job in jobs:
            run_job(workspace, job)
        return
    cache = CalculationCache(workspace.settings.cache_dir, level)
    try:
        if todo := _serve(workspace, cache, jobs, cache.keys(_structures(jobs)), claim=False):
            _run_chunk(workspace, todo, level, cache)
    finally:
        cache.close()


def _run_chunk(
    workspace: Workspace, todo: list[tuple[JobRecord, str]], level: Level, cache: CalculationCache
) -> None:
    """One job of single points for the jobs of ``todo`` (each with its cache key); its task
    documents go to the first job's directory. The structures go in as their stored JSON text,
    which jobflow passes on without walking through every site."""
    store = ValidationStore(workspace)
    jobs = [job for job, _ in todo]
    texts = [job.structure_json for job in jobs]
    start = time.perf_counter()
    try:
        docs, docs_path = _execute(
            workspace, level, jobs[0].job_id, lambda ctx: level.build_batch(texts, ctx)
        )
    except Exception as exc:  # the whole chunk failed: every job records why
        for job in jobs:
            store.set_status(job.job_id, "failed", _reason(exc))
        return
    seconds = (time.perf_counter() - start) / len(jobs)
    done = []
    for (job, key), doc in zip(todo, docs, strict=True):
        if isinstance(doc, str):
            store.set_status(job.job_id, "failed", _reason(RuntimeError(doc)), calc_seconds=seconds)
        else:
            done.append((job, key, ValidationDocument.model_validate(doc)))
    task_doc = str(docs_path.relative_to(workspace.root))
    record_documents(workspace, [(job, doc, task_doc, seconds) for job, _, doc in done])
    cache.put([(key, doc, seconds) for _, key, doc in done])


def serve_cached(
    workspace: Workspace, jobs: list[JobRecord], structures: Sequence[Structure | Molecule] | None = None
) -> list[JobRecord]:
    """Finish the queued jobs (of one level) whose result the calculation cache holds, claiming them
    first (one transaction for all); returns the others, which still need to run. ``structures``:
    the jobs' structures where the caller holds them (else decoded from the store)."""
    if not jobs or (level := get_level(jobs[0].level)).package is None:
        return jobs
    cache = CalculationCache(workspace.settings.cache_dir, level)
    try:
        keys = cache.keys(structures if structures is not None else _structures(jobs))
        return [job for job, _ in _serve(workspace, cache, jobs, keys, claim=True)]
    finally:
        cache.close()


def _serve(
    workspace: Workspace, cache: CalculationCache, jobs: list[JobRecord], keys: list[str], *, claim: bool
) -> list[tuple[JobRecord, str]]:
    """Store the cached results of ``jobs`` (under their cache ``keys``) as theirs, claiming the
    queued jobs first when ``claim`` (one transaction); returns the jobs the cache does not hold,
    each with its key."""
    hits = cache.get(keys)
    found = [(job, hit) for job, hit in zip(jobs, hits, strict=True) if hit is not None]
    if claim:
        moved = ValidationStore(workspace).transition_many(
            [job.job_id for job, _ in found], "queued", "running"
        )
        found = [(job, hit) for job, hit in found if job.job_id in moved]
    record_documents(
        workspace,
        [(job, hit.document, f"{CalculationCache.FILE}:{hit.key}", hit.seconds) for job, hit in found],
    )
    return [(job, key) for job, key, hit in zip(jobs, keys, hits, strict=True) if hit is None]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:500]


def _execute(
    workspace: Workspace, level: Level, job_id: str, build: Callable[[LevelContext], Flow | Job]
) -> tuple[Any, Path]:
    """Run the Flow ``build(context)`` in a fresh ``calcs/<job_id>`` (leftovers of an interrupted
    attempt removed) within the wall time; returns its output and the task-document file, which
    is written once the Flow has run, whether it succeeded or not."""
    settings: Settings = workspace.settings
    calc_dir = workspace.dir("calcs") / job_id
    shutil.rmtree(calc_dir, ignore_errors=True)
    calc_dir.mkdir(parents=True)
    job_store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    docs_path = calc_dir / "task_docs.json"
    stored = ValidationStore(workspace).references(level.name)
    flow = build(LevelContext.known(settings, level.name, stored))
    try:
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
        return flow.output.resolve(job_store), docs_path
    finally:
        _write_task_docs(job_store, docs_path)


def _run_flow(
    workspace: Workspace, job: JobRecord, level: Level, cache: CalculationCache | None, key: str = ""
) -> str:
    """Build and run the job's Flow; a finished single point goes into ``cache`` under ``key``."""
    store = ValidationStore(workspace)
    start = time.perf_counter()
    try:
        if level.build is None:
            raise ValueError(f"level {job.level!r} has no calculation to run")
        build = level.build
        out, docs_path = _execute(workspace, level, job.job_id, lambda ctx: build(job.structure, ctx))
        doc = ValidationDocument.model_validate(out)
    except Exception as exc:  # any crash of the calculation is a recorded failure, never fatal
        store.set_status(job.job_id, "failed", _reason(exc), calc_seconds=time.perf_counter() - start)
        return "failed"
    seconds = time.perf_counter() - start
    record_documents(workspace, [(job, doc, str(docs_path.relative_to(workspace.root)), seconds)])
    if cache is not None:
        cache.put([(key, doc.model_copy(update={"final_structure": None}), seconds)])
    return "done"


@functools.cache
def _matloop_version() -> str:
    return version("matloop")


def record_documents(
    workspace: Workspace, results: list[tuple[JobRecord, ValidationDocument, str, float]]
) -> None:
    """Store finished jobs' labels with provenance, one transaction for all (each result: the
    job, its document, where its task document is, the seconds it took), and cache the elemental
    references they computed."""
    if not results:
        return
    store = ValidationStore(workspace)
    finished = []
    references: dict[tuple[str, str, str], dict[str, float]] = {}
    for job, doc, task_doc, seconds in results:
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
        known = references.setdefault((job.level, doc.code, doc.code_version), {})
        for element, energy in doc.references.items():
            known.setdefault(element, energy)  # the first one stays, as in the store
        labels = {p: (v, doc.units[p]) for p, v in doc.properties.items()}
        finished.append(Finished(job, labels, provenance, task_doc, seconds))
    for (level, code, code_version), energies in references.items():
        if energies:
            store.add_references(level, energies, {"code": code, "code_version": code_version})
    store.finish(finished)
