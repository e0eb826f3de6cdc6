"""The tools: plain typed functions, usable from Python and exposed to the planner."""

from matloop.data.feature_sets import load_graphs
from matloop.tools.acquire import select_candidates
from matloop.tools.dataset import query_dataset
from matloop.tools.featurize import featurize
from matloop.tools.train import fine_tune, predict, train_uq_gnn
from matloop.tools.validate import collect_validation, queue_validation, validation_status

__all__ = [
    "collect_validation",
    "featurize",
    "fine_tune",
    "load_graphs",
    "predict",
    "query_dataset",
    "queue_validation",
    "select_candidates",
    "train_uq_gnn",
    "validation_status",
]
