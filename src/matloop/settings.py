"""One settings object for matloop: environment (``MATLOOP_`` prefix) and optional YAML.

Nothing is read or created at import time: call :func:`get_settings` when a value is needed.
Nested fields use ``__`` in environment variables, e.g. ``MATLOOP_FEATURIZE__CUTOFF=6``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "matloop"


class FeaturizeSettings(BaseModel):
    """Crystal/molecule graph construction."""

    model_config = ConfigDict(extra="forbid")

    cutoff: float = Field(6.0, gt=0, description="Neighbour cut-off radius in Å.")
    max_neighbors: int = Field(12, gt=0, description="Nearest neighbours kept per atom.")
    n_gaussians: int = Field(40, gt=1, description="Gaussians in the edge distance expansion.")
    node_features: Literal["onehot", "magpie", "onehot+magpie"] = Field(
        "onehot+magpie", description="Element embedding used as node features."
    )


class TrainSettings(BaseModel):
    """Defaults for UQ-GNN training."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["ensemble", "mc_dropout", "evidential", "gp"] = "ensemble"
    epochs: int = Field(100, gt=0, description="Maximum epochs per network (early stopping may end sooner).")
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    ensemble_size: int = Field(5, gt=0)
    patience: int = Field(15, gt=0, description="Early-stopping patience in epochs.")
    conv: Literal["cgcnn", "schnet"] = Field(
        "cgcnn",
        description="Graph convolution of the backbone: CGCNN-style gated or SchNet continuous-filter.",
    )
    bootstrap: bool = Field(False, description="Train each ensemble member on its own bootstrap resample.")


class LLMSettings(BaseModel):
    """Language-model planner connection; the key is read from the environment, never logged."""

    model_config = ConfigDict(extra="forbid")

    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="OpenAI-compatible server URL (vLLM, Ollama, ...).")
    api_key: str | None = Field(None, repr=False, description="Defaults to OPENAI_API_KEY.")
    temperature: float = 0.0
    max_retries: int = Field(3, ge=0)
    timeout_s: float = Field(60.0, gt=0)


class ValidationSettings(BaseModel):
    """Validation calculations (oracle levels and executors)."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["chgnet", "sevenn", "cp2k", "xtb", "vasp", "lookup"] = "chgnet"
    executor: Literal["local", "dask", "jobflow-remote"] = "local"
    max_sites: int = Field(64, gt=0, description="Largest cell accepted for validation.")
    min_distance: float = Field(0.5, gt=0, description="Smallest interatomic distance in Å.")
    cp2k_threads: int = Field(2, gt=0)
    walltime_s: float = Field(1800.0, gt=0, description="Wall-time limit per calculation.")
    dask_address: str | None = Field(
        None, description="Dask scheduler address for the dask executor (None: a LocalCluster)."
    )
    remote_project: str | None = Field(None, description="jobflow-remote project (None: its default).")
    remote_worker: str | None = Field(None, description="jobflow-remote worker (None: project's first).")
    remote_resources: dict[str, str | int] = Field(
        default_factory=dict, description="Queue resources for jobflow-remote, e.g. {'nodes': 1}."
    )


class Settings(BaseSettings):
    """All matloop settings."""

    model_config = SettingsConfigDict(
        env_prefix="MATLOOP_", env_nested_delimiter="__", extra="forbid"
    )

    workspace: Path = Field(Path("matloop-workspace"), description="Default workspace directory.")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Dataset/graph cache.")
    seed: int = Field(0, description="Global seed for anything random.")
    featurize: FeaturizeSettings = Field(default_factory=FeaturizeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Settings:
        """Settings from a YAML file (its values take precedence over the environment)."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls(**data)


def get_settings() -> Settings:
    """Fresh settings from the environment (and ``MATLOOP_CONFIG`` YAML when set)."""
    config = os.environ.get("MATLOOP_CONFIG")
    return Settings.from_yaml(config) if config else Settings()
