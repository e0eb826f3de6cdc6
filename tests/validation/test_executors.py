"""Dask (real LocalCluster) and jobflow-remote (up to its MongoDB) executors."""

from __future__ import annotations

import pytest
import yaml
from distributed import LocalCluster
from validation_helpers import crystal_slice, perovskite

from matloop.errors import MissingExtraError
from matloop.settings import Settings, ValidationSettings
from matloop.tools import collect_validation, queue_validation
from matloop.validation.executors import close_dask_clients, dask_client, remote_submission
from matloop.validation.levels import LevelContext, get_level
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace


def _with_validation(workspace: Workspace, **fields) -> Workspace:
    settings = Settings(validation=ValidationSettings(**fields))
    return Workspace(workspace.root, settings=settings)


def test_dask_executor_runs_xtb_in_chunks(workspace, molecule_slice):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        ws = _with_validation(workspace, dask_address=cluster.scheduler_address, chunk_size=2)
        batch = queue_validation(
            molecule_slice, ["CH4", "H2O", "NH3"], level="xtb", executor="dask", workspace=ws
        )
        assert batch.executor == "dask"
        result = collect_validation(batch.batch_id, timeout_s=120, workspace=ws)
        client = dask_client(cluster.scheduler_address)
        close_dask_clients()
        assert client.status == "closed" and dask_client(cluster.scheduler_address) is not client
        close_dask_clients()
    assert not result.failures and not result.pending
    gaps = {lab.item_id: lab.value for lab in result.labels if lab.property == "gap"}
    assert set(gaps) == {"CH4", "H2O", "NH3"} and all(5 < g < 25 for g in gaps.values())
    tasks = {j.task_doc for j in ValidationStore(ws).jobs(batch_id=batch.batch_id)}
    assert len(tasks) == 2  # [CH4, H2O] and [NH3]: one task per chunk of two single points


@pytest.fixture
def remote_project(tmp_path, monkeypatch) -> str:
    """A jobflow-remote project whose MongoDB does not exist (port 9, short timeout)."""
    import jobflow_remote

    mongo = {
        "type": "MongoStore",
        "host": "localhost",
        "port": 9,
        "database": "matloop",
        "collection_name": "jobs",
        "mongoclient_kwargs": {"serverSelectionTimeoutMS": 300},
    }
    project = {
        "name": "matloop-test",
        "workers": {
            "cluster": {
                "type": "remote",
                "scheduler_type": "slurm",
                "work_dir": "/scratch/matloop",
                "host": "hpc.example.org",
                "pre_run": "module load vasp",
            }
        },
        "queue": {"store": mongo},
        "jobstore": {"docs_store": mongo, "additional_stores": {"data": mongo}},
    }
    folder = tmp_path / "jfremote"
    folder.mkdir()
    (folder / "matloop-test.yaml").write_text(yaml.safe_dump(project))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))
    return "matloop-test"


def test_jobflow_remote_payload_is_valid(workspace):
    ws = _with_validation(
        workspace, remote_project="p", remote_worker="cluster", remote_resources={"nodes": 1}
    )
    flow = get_level("vasp").build(perovskite("Sr", "Ti", 3.95), LevelContext(ws.settings, {}))
    payload = remote_submission(flow, ws.settings)
    assert payload["worker"] == "cluster" and payload["project"] == "p"
    assert payload["resources"] == {"nodes": 1}
    assert [j.name for j in payload["flow"].jobs] == ["MP GGA relax", "vasp_document"]


def test_jobflow_remote_submission_reaches_the_database(workspace, remote_project):
    from jobflow_remote.config import ConfigManager

    project = ConfigManager().get_project(remote_project)
    assert set(project.workers) == {"cluster"}
    ws = _with_validation(workspace, remote_project=remote_project, remote_worker="cluster")
    slice_id = crystal_slice(ws, {"SrTiO3": perovskite("Sr", "Ti", 3.95)})
    batch = queue_validation(slice_id, ["SrTiO3"], level="vasp", executor="jobflow-remote", workspace=ws)
    status = batch.statuses[0]
    # configuration, worker and flow were accepted; only the (absent) MongoDB stops it
    assert status.status == "failed"
    assert "jobflow-remote submission" in status.reason and "ServerSelectionTimeout" in status.reason


def test_jobflow_remote_poll_keeps_jobs_running_when_store_unreachable(workspace, remote_project):
    from matloop.tools import validation_status
    from matloop.validation.store import ValidationStore

    ws = _with_validation(workspace, remote_project=remote_project, remote_worker="cluster")
    slice_id = crystal_slice(ws, {"SrTiO3": perovskite("Sr", "Ti", 3.95)})
    batch = queue_validation(slice_id, ["SrTiO3"], level="vasp", executor="jobflow-remote", workspace=ws)
    store = ValidationStore(ws)
    job = store.jobs(batch_id=batch.batch_id)[0]
    store.set_status(job.job_id, "running", "submitted", remote_id="flow-uuid:job-uuid")  # as if accepted
    status = validation_status(batch.batch_id, workspace=ws).statuses[0]
    assert status.status == "running" and "store unreachable" in status.reason
    result = collect_validation(batch.batch_id, workspace=ws)  # returns at once: results come via jf
    assert [p.item_id for p in result.pending] == ["SrTiO3"] and not result.labels


def test_jobflow_remote_missing_names_the_extra(workspace, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jobflow_remote", None)  # as on a machine without the extra
    ws = _with_validation(workspace, remote_project="p", remote_worker="cluster")
    slice_id = crystal_slice(ws, {"SrTiO3": perovskite("Sr", "Ti", 3.95)})
    with pytest.raises(MissingExtraError, match=r"pip install 'matloop\[remote\]'"):
        queue_validation(slice_id, ["SrTiO3"], level="vasp", executor="jobflow-remote", workspace=ws)
