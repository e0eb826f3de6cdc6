"""Validation tools: queue calculations for candidates, poll them, collect labels.

``queue_validation`` checks every candidate (sanity, duplicates at the same level) and hands
the rest to an executor; ``validation_status`` polls; ``collect_validation`` returns labels
with provenance and saves them as a slice whose columns are ``<property>@<level>``.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from pymatgen.core import Molecule, Structure

from matloop.data.slices import DatasetSlice, load_slice, save_slice
from matloop.errors import ToolInputError
from matloop.names import FINISHED_STATUSES, ExecutorName, JobStatus, LevelName
from matloop.validation.executors import get_executor
from matloop.validation.levels import LEVELS, get_level
from matloop.validation.runner import serve_cached
from matloop.validation.sanity import (
    check_structures,
    distance_cell,
    molecule_distances,
    reduced_structure,
    same_distances,
    same_structure,
    volume_cell,
)
from matloop.validation.store import Finished, JobRecord, ValidationStore
from matloop.workspace import Workspace, resolve_workspace


class CandidateStatus(BaseModel):
    """State of one candidate's calculation."""

    item_id: str = Field(description="Candidate id in the slice.")
    status: JobStatus = Field(description="queued, running, done, failed, rejected or duplicate.")
    reason: str | None = Field(None, description="Why it was rejected/failed, or what it duplicates.")


class ValidationBatch(BaseModel):
    """A batch of validation calculations."""

    batch_id: str = Field(description="Id to pass to validation_status / collect_validation.")
    level: str = Field(description="Validation level.")
    executor: str = Field(description="Where the calculations run.")
    statuses: list[CandidateStatus] = Field(description="Per-candidate state.")
    counts: dict[str, int] = Field(description="Number of candidates per state.")


class Label(BaseModel):
    """One new label."""

    item_id: str = Field(description="Candidate id.")
    property: str = Field(description="Property name, e.g. formation_energy_per_atom.")
    value: float = Field(description="Computed value.")
    unit: str = Field(description="Unit of the value.")
    level: str = Field(description="Level that computed it.")
    provenance: dict[str, Any] = Field(description="Code, version, task document location, job id.")


class CollectResult(BaseModel):
    """Labels of a finished (or timed-out) batch."""

    batch_id: str = Field(description="The batch.")
    level: str = Field(description="Validation level.")
    labels: list[Label] = Field(description="Labels computed (or served from duplicates).")
    failures: list[CandidateStatus] = Field(description="Rejected or failed candidates with reasons.")
    pending: list[CandidateStatus] = Field(description="Candidates not finished when collection stopped.")
    label_slice_id: str | None = Field(
        None, description="Slice of the labelled candidates, columns '<property>@<level>'."
    )


@dataclass(eq=False)
class _Entry:
    """A calculation a new item may repeat."""

    order: int
    job_id: str
    item: Structure | Molecule
    formula: str  # reduced

    @functools.cached_property
    def signature(self) -> Structure | np.ndarray:
        """What a repeat must match: a molecule's sorted interatomic distances, a crystal's
        reduced cell (computed when first compared)."""
        if isinstance(self.item, Molecule):
            return molecule_distances(self.item)
        return reduced_structure(self.item)


class _Seen:
    """Calculations a new item may repeat: those stored at the level, then those queued so far in
    this batch. Grouped by reduced formula and a grid cell that a repeat shares or neighbours — for
    molecules the cell of their sorted interatomic distances
    (:func:`~matloop.validation.sanity.distance_cell`), for crystals at a level that takes them as
    given that of their volume per atom (:func:`~matloop.validation.sanity.volume_cell`) — so a
    pool of isomers or polymorphs is compared with near neighbours only: linear in the pool, not
    quadratic."""

    def __init__(self, as_given: bool) -> None:
        self.as_given = as_given
        self.groups: dict[tuple, list[_Entry]] = {}
        self.added = 0

    def add(self, job_id: str, item: Structure | Molecule, formula: str) -> None:
        entry = _Entry(self.added, job_id, item, formula)
        self._add(entry, self._key(entry))

    def first(self, job_id: str, item: Structure | Molecule, formula: str) -> str | None:
        """The earliest calculation of the same structure as ``item`` (of reduced ``formula``);
        with none, ``item`` is recorded as ``job_id``'s and None returned."""
        entry = _Entry(self.added, job_id, item, formula)
        key = exact, cells = self._key(entry)
        neighbours = (
            (exact, tuple(c + d for c, d in zip(cells, shift, strict=True)))
            for shift in itertools.product((-1, 0, 1), repeat=len(cells))
        )
        near = sorted((o for cell in neighbours for o in self.groups.get(cell, [])), key=lambda o: o.order)
        original = next((other.job_id for other in near if self._same(entry, other)), None)
        if original is None:
            self._add(entry, key)
        return original

    def _add(self, entry: _Entry, key: tuple[tuple, tuple[int, ...]]) -> None:
        self.groups.setdefault(key, []).append(entry)
        self.added += 1

    def _same(self, a: _Entry, b: _Entry) -> bool:
        if isinstance(a.item, Molecule):
            return same_distances(a.signature, b.signature)
        return same_structure(a.signature, b.signature, self.as_given, reduced=True)

    def _key(self, entry: _Entry) -> tuple[tuple, tuple[int, ...]]:
        """What a repeat has equal, and the grid cells it shares or neighbours."""
        if isinstance(entry.item, Molecule):
            n, mean, largest = distance_cell(entry.signature)
            return (entry.formula, n), (mean, largest)
        return (entry.formula,), (volume_cell(entry.item),) if self.as_given else ()


def _lookup_labels(data: DatasetSlice, item_id: str) -> dict[str, tuple[float, str]]:
    row = data.properties.loc[item_id]
    labels = {}
    for prop, value in row.items():
        if isinstance(value, numbers.Real) and not math.isnan(float(value)):
            labels[str(prop)] = (float(value), data.units.get(str(prop), ""))
    return labels


def queue_validation(
    slice_id: str,
    item_ids: list[str],
    level: LevelName = "chgnet",
    executor: ExecutorName = "local",
    *,
    workspace: Workspace | str | Path | None = None,
) -> ValidationBatch:
    """Queue validation calculations for candidates of a slice; returns at once.

    Structures failing sanity checks are rejected, ones already computed (or queued) at the
    same level are served as duplicates, the rest run on the executor.

    Args:
        slice_id: Slice holding the candidates.
        item_ids: Candidate ids to validate.
        level: chgnet (default, crystals), sevenn (crystals), cp2k (DFT, small crystals),
            chgnet_static (crystals, screening: a whole pool costs 0.001 calculations per item),
            xtb (molecules, screening likewise), vasp (cluster only: executor slurm or
            jobflow-remote), lookup (benchmarks: reveal the slice's held-out labels).
        executor: local (background worker), dask, slurm (Slurm jobs through dask-jobqueue),
            or jobflow-remote.
    """
    ws = resolve_workspace(workspace)
    spec = get_level(level)
    runner = get_executor(executor)
    cluster_executors = ["slurm", "jobflow-remote"]
    if not spec.runs_locally and executor not in cluster_executors:
        raise ToolInputError(
            f"expected a cluster executor for level {level!r} (it never runs locally), got "
            f"{executor!r}; valid values are {cluster_executors}, or choose a local level such as 'chgnet'"
        )
    data = load_slice(ws, slice_id)
    if spec.kind is not None and data.kind != spec.kind:
        valid = [n for n, lv in LEVELS.items() if lv.kind in (data.kind, None)]
        raise ToolInputError(
            f"expected a level for {data.kind} structures, got {level!r} (for {spec.kind}s); "
            f"valid values are {valid}"
        )
    item_ids = list(dict.fromkeys(item_ids))
    position = {item_id: k for k, item_id in enumerate(data.ids)}
    unknown = [i for i in item_ids if i not in position]
    if not item_ids or unknown:
        raise ToolInputError(
            f"expected item ids of slice {slice_id}, got {unknown or item_ids}; valid values are "
            f"{data.ids[:10]}{' ...' if len(data) > 10 else ''}"
        )
    store = ValidationStore(ws)
    batch_id = ws.new_id("valbatch")
    jobs: list[dict[str, Any]] = []
    seen = _Seen(as_given=not spec.relaxes)
    asked = data.subset(item_ids)
    items, formulas = list(asked.structures), asked.formulas()  # each built once
    if level != "lookup":
        for stored in store.comparable_jobs(level, set(formulas)):
            seen.add(stored.job_id, stored.structure, stored.formula)
    problems = check_structures(asked.structures, ws.settings.validation)
    for item_id, item, formula, problem in zip(item_ids, items, formulas, problems, strict=True):
        job_id = ws.new_id("calc", digits=16)  # a pool of 100,000 would collide with 8
        job = {
            "job_id": job_id,
            "item_id": item_id,
            "structure": item,
            "formula": formula,
            "status": "queued",
        }
        if level == "lookup":
            job["status"] = "done"
        elif reason := problem:
            job.update(status="rejected", reason=reason)
        elif original := seen.first(job_id, item, formula):
            job.update(
                status="duplicate", reason=f"same structure as calculation {original}", duplicate_of=original
            )
        jobs.append(job)
    store.add_batch(batch_id, level, executor, slice_id, jobs)
    if level == "lookup":
        finished = []
        for job in store.jobs(batch_id=batch_id):
            labels = _lookup_labels(data, job.item_id)
            if labels:
                provenance = {
                    "level": "lookup",
                    "code": "dataset",
                    "code_version": data.source,
                    "task_doc": f"slice {slice_id}",
                    "job_id": job.job_id,
                    "batch_id": batch_id,
                }
                finished.append(Finished(job, labels, provenance, f"slice {slice_id}", 0.0))
            else:
                store.set_status(job.job_id, "failed", "no label for this item in the slice")
        store.finish(finished)
    else:
        held = {job["job_id"]: job["structure"] for job in jobs}
        waiting = [j for j in store.jobs(batch_id=batch_id) if j.status == "queued"]
        queued = serve_cached(ws, waiting, [held[j.job_id] for j in waiting])
        if queued:
            runner.submit(ws, queued)
    return _batch(store, batch_id)


def _batch(store: ValidationStore, batch_id: str) -> ValidationBatch:
    row = store.batch(batch_id)
    states = store.job_states(batch_id)
    statuses = [CandidateStatus(item_id=i, status=status, reason=reason) for i, status, reason in states]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    return ValidationBatch(
        batch_id=batch_id, level=row["level"], executor=row["executor"], statuses=statuses, counts=counts
    )


def validation_status(batch_id: str, *, workspace: Workspace | str | Path | None = None) -> ValidationBatch:
    """Current state of a validation batch (and restart its worker if it died).

    Args:
        batch_id: Id returned by queue_validation.
    """
    ws = resolve_workspace(workspace)
    store = ValidationStore(ws)
    row = store.batch(batch_id)
    get_executor(row["executor"]).poll(ws)
    return _batch(store, batch_id)


def _unfinished(store: ValidationStore, jobs: list[JobRecord]) -> list[JobRecord]:
    originals = {j.job_id: j for j in store.jobs(job_ids=[j.duplicate_of for j in jobs if j.duplicate_of])}
    return [
        j
        for j in jobs
        if j.status not in FINISHED_STATUSES
        or (j.duplicate_of and originals[j.duplicate_of].status not in FINISHED_STATUSES)
    ]


def collect_validation(
    batch_id: str,
    wait: bool = True,
    timeout_s: float = 3600.0,
    *,
    workspace: Workspace | str | Path | None = None,
) -> CollectResult:
    """Labels of a batch, with failures and their reasons; saves the labelled slice. Collecting
    is what makes the labels a campaign's own.

    Args:
        batch_id: Id returned by queue_validation.
        wait: Wait for unfinished calculations (up to timeout_s seconds; never for jobflow-remote,
            whose results arrive when its runner has finished them).
        timeout_s: Longest wait in seconds.
    """
    ws = resolve_workspace(workspace)
    store = ValidationStore(ws)
    row = store.batch(batch_id)
    executor = get_executor(row["executor"])
    deadline = time.monotonic() + timeout_s
    while True:
        executor.poll(ws)
        if not wait or not executor.finishes_here or time.monotonic() >= deadline:
            break
        if not store.unfinished_count(batch_id):
            break
        time.sleep(0.2)
    jobs = store.jobs(batch_id=batch_id)
    unfinished = _unfinished(store, jobs)
    pending_ids = {j.job_id for j in unfinished}
    originals = {j.job_id: j for j in store.jobs(job_ids=[j.duplicate_of for j in jobs if j.duplicate_of])}
    by_job = {}
    for rec in store.labels([j.job_id for j in jobs] + list(originals)):
        by_job.setdefault(rec.job_id, []).append(rec)
    labels: list[Label] = []
    failures: list[CandidateStatus] = []
    pending: list[CandidateStatus] = []
    for job in jobs:
        status = CandidateStatus(item_id=job.item_id, status=job.status, reason=job.reason)
        if job.job_id in pending_ids:
            pending.append(status)
        elif job.status in ("failed", "rejected"):
            failures.append(status)
        elif job.duplicate_of and originals[job.duplicate_of].status != "done":
            original = originals[job.duplicate_of]
            failures.append(
                status.model_copy(
                    update={"reason": f"duplicate of a {original.status} calculation: {original.reason}"}
                )
            )
        else:
            source = job.duplicate_of or job.job_id
            for rec in by_job.get(source, []):
                provenance = dict(rec.provenance)
                if job.duplicate_of:
                    provenance["duplicate_of"] = source
                labels.append(
                    Label(
                        item_id=job.item_id,
                        property=rec.property,
                        value=rec.value,
                        unit=rec.unit,
                        level=rec.level,
                        provenance=provenance,
                    )
                )
    store.mark_collected(batch_id, time.time())  # the labels just read are now the caller's
    label_slice_id = _save_label_slice(ws, store, row, labels) if labels else None
    return CollectResult(
        batch_id=batch_id,
        level=row["level"],
        labels=labels,
        failures=failures,
        pending=pending,
        label_slice_id=label_slice_id,
    )


def _save_label_slice(ws: Workspace, store: ValidationStore, row: dict[str, Any], labels: list[Label]) -> str:
    meta = json.loads(row["meta"])
    key = f"label_slice:{len(labels)}"
    if key in meta:
        return meta[key]
    level = row["level"]
    table: dict[str, dict[str, float]] = {}
    units: dict[str, str] = {}
    for lab in labels:
        column = f"{lab.property}@{level}"
        table.setdefault(lab.item_id, {})[column] = lab.value
        units[column] = lab.unit
    parent = load_slice(ws, row["slice_id"])
    ids = [i for i in parent.ids if i in table]
    labelled = parent.subset(ids)
    labelled.properties = pd.DataFrame([table[i] for i in ids], index=ids)
    labelled = DatasetSlice(
        ids=ids,
        structures=labelled.structures,
        properties=labelled.properties,
        units=units,
        kind=parent.kind,
        source=f"validation:{row['batch_id']}",
        meta={"batch_id": row["batch_id"], "level": level, "parent_slice_id": row["slice_id"]},
    )
    slice_id = save_slice(ws, labelled)
    meta[key] = slice_id
    store.set_batch_meta(row["batch_id"], meta)
    return slice_id
