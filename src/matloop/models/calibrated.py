"""What every surrogate model keeps besides its networks: target normalisation, the σ
recalibration factor, an optional GP head and metadata; and how it comes back from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from matloop.models.checkpoint import CheckpointError, read_checkpoint, split_gp_state
from matloop.models.gp import EmbeddingGP

M = TypeVar("M", bound="CalibratedModel")


class CalibratedModel(nn.Module):
    """Base of the surrogates: buffers ``y_mean``, ``y_std`` (targets are learnt normalised) and
    ``sigma_scale`` (σ calibration on the validation split), a GP head or None, ``config`` (the
    init arguments, set by the subclass) and ``meta``."""

    config: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("y_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("y_std", torch.ones((), dtype=torch.float64))
        self.register_buffer("sigma_scale", torch.ones((), dtype=torch.float64))
        self.gp: EmbeddingGP | None = None
        self.meta: dict[str, Any] = {}

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @classmethod
    def load(cls: type[M], path: str | Path, fmt: str, version: int) -> M:
        """The model of a checkpoint of format ``fmt``; problems raise :class:`CheckpointError`."""
        blob = read_checkpoint(path, fmt, version)
        try:
            model = cls(**blob["init_args"])
            state, gp_state = split_gp_state(blob["state_dict"])
            model.load_state_dict(state)
            if gp_state:
                model.gp = EmbeddingGP.from_state_dict(gp_state)
            elif model.method == "gp":
                raise KeyError("the GP state is missing")
            model.meta = json.loads(blob["meta_json"])
        except (KeyError, TypeError, RuntimeError, ValueError, StopIteration) as exc:
            raise CheckpointError(f"checkpoint {path} does not match its model arguments: {exc}") from exc
        model.eval()
        return model
