"""The tools: plain typed functions, usable from Python and exposed to the planner."""

from matloop.tools.featurize import featurize, load_graphs

__all__ = ["featurize", "load_graphs"]
