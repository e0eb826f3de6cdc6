"""The tools: plain typed functions, usable from Python and exposed to the planner."""

from matloop.tools.dataset import query_dataset
from matloop.tools.featurize import featurize, load_graphs
from matloop.tools.validate import collect_validation, queue_validation, validation_status

__all__ = [
    "collect_validation",
    "featurize",
    "load_graphs",
    "query_dataset",
    "queue_validation",
    "validation_status",
]
