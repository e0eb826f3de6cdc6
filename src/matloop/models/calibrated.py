"""What every surrogate model keeps besides its networks: target normalisation, the σ
recalibration factor, an optional GP head and metadata; and how it comes back from a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
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
        self.register_buffer("label_range", torch.tensor([-math.inf, math.inf], dtype=torch.float64))
        self.gp: EmbeddingGP | None = None
        self.meta: dict[str, Any] = {}

    def set_targets(self, y: np.ndarray) -> None:
        """Normalisation and range of the training targets ``y`` (see :meth:`bound`)."""
        y = np.asarray(y, dtype=np.float64)
        self.y_mean.fill_(float(y.mean()))
        self.y_std.fill_(float(y.std()) if len(y) > 1 and y.std() > 0 else 1.0)
        self.label_range.copy_(torch.tensor([y.min(), y.max()], dtype=torch.float64))

    def widen_range(self, y: np.ndarray) -> None:
        """Extend the training targets' range to new targets ``y`` (fine-tuning on new labels)."""
        lo, hi = self.label_range.tolist()
        self.label_range.copy_(torch.tensor([min(lo, float(np.min(y))), max(hi, float(np.max(y)))]))

    def bound(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictions held to what the training targets support: μ within their range widened by
        half its width (at least one standard deviation) on each side, so a model on a handful of
        labels cannot extrapolate to impossible values; σ at most that widened range's width.
        Models saved before the range was kept are not bounded."""
        lo, hi = self.label_range.tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return mean, std
        pad = max(0.5 * (hi - lo), float(self.y_std))
        return np.clip(mean, lo - pad, hi + pad), np.minimum(std, hi - lo + 2 * pad)

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
            state.setdefault("label_range", model.label_range)  # saved before ranges were kept
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
