"""Graph neural networks with calibrated uncertainty: backbone, UQ methods, training, checkpoints."""

from matloop.models.checkpoint import CheckpointError
from matloop.models.metrics import UQMetrics, uq_metrics
from matloop.models.model import UQModel, UQPrediction, load_checkpoint, save_checkpoint
from matloop.models.network import CrystalGNN
from matloop.models.saved import Surrogate, load_model, save_model
from matloop.models.training import EpochLog, TrainOptions, fine_tune_uq_model, fit_uq_model
from matloop.models.uq import METHODS, get_method

__all__ = [
    "METHODS",
    "CheckpointError",
    "CrystalGNN",
    "EpochLog",
    "Surrogate",
    "TrainOptions",
    "UQMetrics",
    "UQModel",
    "UQPrediction",
    "fine_tune_uq_model",
    "fit_uq_model",
    "get_method",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
    "uq_metrics",
]
