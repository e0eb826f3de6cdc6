from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Molecule

from matloop.data.slices import DatasetSlice, save_slice
from matloop.errors import ToolInputError
from matloop.settings import TrainSettings
from matloop.tools import featurize, select_candidates, train_uq_gnn
from matloop.validation.store import Finished, ValidationStore
from matloop.workspace import Workspace


def _molecules(n: int, seed: int = 0) -> tuple[list[Molecule], np.ndarray]:
    """Small random C/N/O/H molecules; the target depends on composition and size."""
    rng = np.random.default_rng(seed)
    mols, y = [], []
    while len(mols) < n:
        k = int(rng.integers(3, 7))
        species = list(rng.choice(["C", "N", "O", "H"], size=k))
        coords = np.cumsum(rng.normal(scale=0.9, size=(k, 3)), axis=0)
        d = np.linalg.norm(coords[:, None] - coords[None], axis=-1) + np.eye(k) * 10
        if d.min() < 1.0:
            continue
        mols.append(Molecule(species, coords))
        y.append(species.count("C") - 0.5 * species.count("O") + 0.1 * k)
    return mols, np.asarray(y)


@pytest.fixture
def pool(workspace):
    """A workspace with a 40-molecule pool (item-39 duplicates item-38) and a model on 12 items."""
    ws = Workspace(
        workspace.root,
        settings=workspace.settings.model_copy(update={"train": TrainSettings(epochs=4, ensemble_size=2)}),
    )
    mols, y = _molecules(39)
    mols.append(mols[-1].copy())
    y = np.append(y, y[-1])
    ids = [f"item-{k}" for k in range(40)]
    data = DatasetSlice(ids, mols, pd.DataFrame({"y": y}), {"y": "eV"}, "molecule", "test")
    fs = featurize(save_slice(ws, data), workspace=ws).feature_set_id
    model = train_uq_gnn(fs, "y", epochs=4, train_ids=ids[:12], workspace=ws)
    return ws, fs, model.model_id, ids


def test_selection_excludes_labelled_excluded_and_duplicate_items(pool):
    ws, fs, model_id, ids = pool
    mols, _ = _molecules(39)
    job = {"job_id": "job-1", "item_id": "item-20", "status": "queued", "structure": mols[20]}
    store = ValidationStore(ws)
    store.add_batch("batch-1", "lookup", "local", "test", [job])
    store.finish([Finished(store.jobs(job_ids=["job-1"])[0], {"y": (1.0, "eV")}, {}, "{}", 0.0)])
    sel = select_candidates(model_id, fs, 5, "batch_entropy", exclude_ids=["item-21"], seed=1, workspace=ws)
    picked = [c.item_id for c in sel.candidates]
    assert len(picked) == len(set(picked)) == 5
    assert not set(picked) & {*ids[:12], "item-20", "item-21"}
    assert sel.excluded == 14 and sel.duplicates == 1 and sel.considered == 25
    assert all(c.std > 0 and c.reason and "σ=" in c.reason for c in sel.candidates)
    assert all(c.entropy == pytest.approx(0.5 * np.log(2 * np.pi * np.e * c.std**2)) for c in sel.candidates)
    stored = ws.artifact(sel.selection_id, kind="selection")
    assert json.loads(stored.path.read_text())["item_ids"] == picked
    again = select_candidates(model_id, fs, 5, "batch_entropy", exclude_ids=["item-21"], seed=1, workspace=ws)
    assert [c.item_id for c in again.candidates] == picked


def test_entropy_order_and_goal_directed_strategies(pool):
    ws, fs, model_id, _ = pool
    sel = select_candidates(model_id, fs, 4, "entropy", workspace=ws)
    stds = [c.std for c in sel.candidates]
    assert stds == sorted(stds, reverse=True)
    window = select_candidates(model_id, fs, 3, "in_window", window=(0.0, 2.0), workspace=ws)
    assert all(0.0 <= c.score <= 1.0 for c in window.candidates)
    ei = select_candidates(model_id, fs, 3, "ei", goal="maximize", workspace=ws)
    assert len(ei.candidates) == 3 and all(c.score >= 0 for c in ei.candidates)


def test_bad_arguments_give_clear_messages(pool):
    ws, fs, model_id, _ = pool
    with pytest.raises(ToolInputError, match=r"expected n ≤ 27 .*got n=100"):
        select_candidates(model_id, fs, 100, workspace=ws)
    with pytest.raises(ToolInputError, match="n ≥ 1"):
        select_candidates(model_id, fs, 0, workspace=ws)
    with pytest.raises(ToolInputError, match="valid values are"):
        select_candidates(model_id, fs, 2, "greedy", workspace=ws)  # type: ignore[arg-type]
    with pytest.raises(ToolInputError, match="lo < hi"):
        select_candidates(model_id, fs, 2, "in_window", window=(3.0, 1.0), workspace=ws)
    with pytest.raises(ToolInputError, match="model id"):
        select_candidates("model-nope", fs, 2, workspace=ws)
    with pytest.raises(ToolInputError, match="trained with a cheap level to rank by that level"):
        select_candidates(model_id, fs, 2, ranking="cheap_level", workspace=ws)
    with pytest.raises(ToolInputError, match=r"expected a ranking, got 'screen'; valid values"):
        select_candidates(model_id, fs, 2, ranking="screen", workspace=ws)  # type: ignore[arg-type]
    everything = [f"item-{k}" for k in range(40)]
    with pytest.raises(ToolInputError, match="non-empty candidate pool"):
        select_candidates(model_id, fs, 1, exclude_ids=everything, workspace=ws)
