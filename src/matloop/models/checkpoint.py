"""Checkpoints: init args + state_dict + JSON metadata, loadable with ``weights_only=True``."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from matloop.errors import MatloopError


class CheckpointError(MatloopError, ValueError):
    """A checkpoint file that is corrupt, not a matloop model, or inconsistent with its own arguments."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries a checkpoint depends on."""
    import gpytorch
    import torch_geometric

    import matloop

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "gpytorch": gpytorch.__version__,
        "matloop": getattr(matloop, "__version__", "unknown"),
    }


def data_hash(ids: Sequence[str], y: Sequence[float]) -> str:
    """Short content hash of a training set (item ids and targets)."""
    h = hashlib.sha256()
    for item_id, value in zip(ids, y, strict=True):
        h.update(f"{item_id}\t{float(value):.10g}\n".encode())
    return h.hexdigest()[:16]


def graph_ids(graphs: Sequence[Data]) -> list[str]:
    return [str(getattr(g, "item_id", i)) for i, g in enumerate(graphs)]


def write_checkpoint(
    path: str | Path, fmt: str, version: int, model: torch.nn.Module, meta: dict[str, Any]
) -> Path:
    """Write ``model``'s init args (``model.config``), weights and metadata to ``path``."""
    meta = {**meta}
    meta.setdefault("versions", library_versions())
    path = Path(path)
    torch.save(
        {
            "format": fmt,
            "version": version,
            "init_args": dict(model.config),  # type: ignore[arg-type]
            "state_dict": model.state_dict(),
            "meta_json": json.dumps(meta, default=str),
        },
        path,
    )
    return path


def read_checkpoint(path: str | Path, fmt: str, version: int) -> dict[str, Any]:
    """The stored dict of a checkpoint of format ``fmt`` and ``version``; problems raise
    :class:`CheckpointError`."""
    path = Path(path)
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise CheckpointError(f"{path} is not a matloop checkpoint of format {fmt!r}")
    if blob.get("version") != version:
        raise CheckpointError(f"checkpoint {path} has version {blob.get('version')}, expected {version}")
    return blob


def split_gp_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A state dict split into the network's entries and the GP head's (``gp.`` prefix removed)."""
    state = dict(state)
    gp_state = {k[3:]: state.pop(k) for k in list(state) if k.startswith("gp.")}
    return state, gp_state
