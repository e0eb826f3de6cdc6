"""``matloop model train / predict / fine-tune`` on a small featurized slice."""

from __future__ import annotations

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


def test_backbones_command_lists_graph_networks_and_pretrained_featurizers():
    import chgnet

    out = CliRunner().invoke(app, ["model", "backbones"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    names = (
        "cgcnn",
        "schnet",
        "chgnet",
        "mlp_ensemble",
        f"chgnet {chgnet.__version__}",
        "fine-tunable pretrained",
    )
    for name in names:
        assert name in out.output
