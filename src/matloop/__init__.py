"""matloop: closed-loop active learning for materials, driven by an LLM or a rules planner."""

__version__ = "0.1.0"
