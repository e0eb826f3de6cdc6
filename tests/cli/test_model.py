"""``matloop model train / predict / fine-tune`` on a small featurized slice."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from matloop.cli import app
from matloop.data.slices import DatasetSlice, save_slice
from matloop.tools import featurize


def _nacl_feature_set(workspace) -> str:
    rng = np.random.default_rng(0)
    ids, structures, y = [], [], []
    for k in range(30):
        a = rng.uniform(4.0, 6.0)
        cell = 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
        structures.append(Structure(Lattice(cell), ["Na", "Cl"], [[0] * 3, [0.5] * 3]))
        ids.append(f"nacl-{k}")
        y.append(0.1 * a**2)
    data = DatasetSlice(ids, structures, pd.DataFrame({"y": y}), {"y": "eV"}, "crystal", "test")
    return featurize(save_slice(workspace, data), workspace=workspace).feature_set_id


def test_train_predict_fine_tune_commands(workspace):
    fs = _nacl_feature_set(workspace)
    ws = ["--workspace", str(workspace.root)]
    out = CliRunner().invoke(app, ["model", "train", fs, "y", "--epochs", "3", *ws])
    assert out.exit_code == 0, out.output
    model_id = re.search(r"model-[0-9a-f]{8}", out.output).group(0)
    assert "mae" in out.output
    out = CliRunner().invoke(app, ["model", "predict", model_id, fs, *ws])
    assert out.exit_code == 0 and "nacl-" in out.output, out.output
    out = CliRunner().invoke(
        app, ["model", "fine-tune", model_id, fs, "--freeze-backbone", "--epochs", "2", *ws]
    )
    assert out.exit_code == 0 and "→" in out.output, out.output
    bad = CliRunner().invoke(app, ["model", "train", fs, "band_gap", *ws])
    assert bad.exit_code != 0 and "valid values are" in bad.output


def test_train_command_fine_tunes_chgnet(workspace):
    fs = _nacl_feature_set(workspace)
    ws = ["--workspace", str(workspace.root)]
    args = ["model", "train", fs, "y", "--backbone", "chgnet", "--epochs", "1", *ws]
    out = CliRunner().invoke(app, [*args, "--trainable-blocks", "1"])
    assert out.exit_code == 0, out.output
    assert re.search(r"checkpoint 1\.\d+ MB", out.output), out.output
    out = CliRunner().invoke(app, [*args, "--trainable-blocks", "1", "--method", "mc_dropout"])
    assert out.exit_code == 0 and "mc_dropout on y" in out.output, out.output
    bad = CliRunner().invoke(app, [*args, "--trainable-blocks", "some"])
    assert bad.exit_code != 0 and "or 'all'" in bad.output, bad.output


def test_backbones_lists_what_the_spec_accepts_with_the_specs_names():
    import chgnet

    from matloop.agent.spec import ModelSpec
    from matloop.names import BACKBONES, UQ_METHODS

    out = CliRunner().invoke(app, ["model", "backbones", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["name"] for r in rows] == ["auto", *BACKBONES]
    for row in rows:  # a method is listed exactly when the spec takes it with that backbone
        for method in UQ_METHODS:
            try:
                ModelSpec(backbone=row["name"], method=method)
                accepted = True
            except ValueError:
                accepted = False
            assert accepted == (method in row["methods"]), (row["name"], method)
    by_name = {r["name"]: r for r in rows}
    assert "magpie" in by_name and "chgnet+magpie" in by_name["auto"]["description"]
    assert f"chgnet {chgnet.__version__}" in by_name["chgnet"]["status"]
    assert "to 4 or 'all'" in by_name["chgnet"]["options"] and "cgcnn or schnet" in by_name["gnn"]["options"]
    table = CliRunner().invoke(app, ["model", "backbones"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and all(f" {name} " in table.output for name in by_name)
