"""What every surrogate model keeps besides its networks: target normalisation, the σ
recalibration factor, an optional GP head and metadata; and how it comes back from a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from matloop.models.checkpoint import CheckpointError, read_checkpoint, split_gp_state
from matloop.models.gp import EmbeddingGP

M = TypeVar("M", bound="CalibratedModel")


def sigma_scale(residual: Tensor, var: Tensor) -> float:
    """The σ multiplier that minimises the Gaussian NLL of ``residual``: sqrt(mean(r²/var)), or 1."""
    scale = float((residual.double() ** 2 / var.double()).mean().sqrt())
    return scale if math.isfinite(scale) and scale > 0 else 1.0


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

    def predict_normalized(self, inputs: Any) -> tuple[Tensor, ...]:
        """Mean and total variance (then what the subclass adds) in normalised units, before σ
        calibration."""
        raise NotImplementedError

    def recalibrate(self, inputs: Any, y: Any) -> float:
        """Set ``sigma_scale`` to the σ multiplier that minimises the Gaussian NLL of targets ``y``
        on validation ``inputs``; returns it."""
        mean, var = self.predict_normalized(inputs)[:2]
        residual = (torch.as_tensor(y, dtype=torch.float64) - self.y_mean) / self.y_std - mean
        self.sigma_scale.fill_(sigma_scale(residual, var))
        return float(self.sigma_scale)

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
