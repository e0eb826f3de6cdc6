"""One settings object for matloop: environment (``MATLOOP_`` prefix) and optional YAML.

Nothing is read or created at import time: call :func:`get_settings` at an entry point (the CLI,
``run_campaign``, ``ask``) and hand the object on; components read the workspace's settings.
Nested fields use ``__`` in environment variables, e.g. ``MATLOOP_FEATURIZE__CUTOFF=6``.
Precedence, highest first: arguments, environment, the YAML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from matloop.names import ConvName, LevelName


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

    epochs: int = Field(100, gt=0, description="Maximum epochs per network (early stopping may end sooner).")
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    ensemble_size: int = Field(5, gt=0)
    patience: int = Field(15, gt=0, description="Early-stopping patience in epochs.")
    hidden: int = Field(64, gt=0, description="Width of the graph network.")
    conv: ConvName = Field(
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
    max_retries: int = Field(
        3, ge=0, description="Retries (exponential backoff) when the server is unreachable or overloaded."
    )
    timeout_s: float = Field(
        60.0, gt=0, description="Seconds to wait for the server's next streamed bytes before giving up."
    )
    tool_calling: Literal["auto", "native", "forced"] = Field(
        "auto",
        description=(
            "native: the model sees every tool and chooses (tool_choice 'auto'); forced: it must call one "
            "'next_step' tool naming a tool and its arguments, so servers that constrain output to a "
            "schema (llama.cpp, vLLM) always get a well-formed call, even from a very small model; "
            "auto: forced with a base_url, native otherwise."
        ),
    )
    max_completion_tokens: int = Field(1024, gt=0, description="Completion cap per model call.")
    cap_parameter: Literal["auto", "max_tokens", "max_completion_tokens", "both"] = Field(
        "auto",
        description=(
            "Request field(s) carrying the completion cap; auto: max_completion_tokens for OpenAI, both "
            "for a base_url (llama.cpp reads max_tokens). Replies are also cut client-side at the cap."
        ),
    )
    max_idle_turns: int = Field(
        3,
        gt=0,
        description=(
            "Model turns in a row without valid progress (text only, refused or invalid calls) before "
            "a campaign hands over to the rules planner."
        ),
    )


class SlurmResources(BaseModel):
    """What one Slurm worker job asks for; a worker job runs calculations one after another."""

    model_config = ConfigDict(extra="forbid")

    cores: int = Field(1, gt=0, description="CPU cores per worker job (--cpus-per-task).")
    memory: str = Field("4GB", description="Memory per worker job, e.g. '4GB' (--mem).")
    walltime: str = Field("01:00:00", description="Time limit of a worker job, [D-]HH:MM:SS (--time).")
    partition: str | None = Field(None, description="Slurm partition (--partition); None: the default.")
    account: str | None = Field(None, description="Slurm account (--account); None: the user's default.")
    prologue: list[str] = Field(
        default_factory=list,
        description="Shell lines run in the job before the worker starts, e.g. 'module load cp2k'.",
    )
    directives: list[str] = Field(
        default_factory=list, description="Extra #SBATCH options, e.g. '--qos=short' or '--constraint=cpu'."
    )
    max_jobs: int = Field(4, gt=0, description="Most worker jobs in Slurm at once for this level.")


class SlurmSettings(BaseModel):
    """The slurm executor: worker jobs through dask-jobqueue, resources per validation level."""

    model_config = ConfigDict(extra="forbid")

    default: SlurmResources = Field(default_factory=SlurmResources, description="Resources of every level.")
    levels: dict[LevelName, SlurmResources] = Field(
        default_factory=dict,
        description="Per-level changes to the defaults; only the fields given here replace them.",
    )
    log_directory: Path | None = Field(
        None, description="Worker jobs' stdout/stderr (None: calcs/slurm in the workspace)."
    )
    command_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for squeue/sacct before the controller counts as down."
    )

    def resources(self, level: str) -> SlurmResources:
        """The defaults with the changes given for ``level``."""
        changes = self.levels.get(level)  # type: ignore[call-overload]
        if changes is None:
            return self.default
        return self.default.model_copy(update={k: getattr(changes, k) for k in changes.model_fields_set})


class ValidationSettings(BaseModel):
    """Validation calculations (oracle levels and executors)."""

    model_config = ConfigDict(extra="forbid")

    max_sites: int = Field(64, gt=0, description="Largest cell accepted for validation.")
    min_distance: float = Field(0.5, gt=0, description="Smallest interatomic distance in Å.")
    cp2k_threads: int = Field(2, gt=0)
    walltime_s: float = Field(1800.0, gt=0, description="Wall-time limit per calculation.")
    chunk_size: int = Field(
        64, gt=0, description="Single points of a screening level (chgnet_static, xtb) run as one task."
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler address for the dask executor (None: a LocalCluster)."
    )
    remote_project: str | None = Field(None, description="jobflow-remote project (None: its default).")
    remote_worker: str | None = Field(None, description="jobflow-remote worker (None: project's first).")
    remote_resources: dict[str, str | int] = Field(
        default_factory=dict, description="Queue resources for jobflow-remote, e.g. {'nodes': 1}."
    )
    slurm: SlurmSettings = Field(default_factory=SlurmSettings, description="The slurm executor.")


class Settings(BaseSettings):
    """All matloop settings."""

    model_config = SettingsConfigDict(env_prefix="MATLOOP_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Field(Path("matloop-workspace"), description="Default workspace directory.")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Dataset/graph cache.")
    featurize: FeaturizeSettings = Field(default_factory=FeaturizeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Settings:
        """Settings from a YAML file; the environment's ``MATLOOP_`` variables take precedence."""

        class FromYaml(cls):  # type: ignore[valid-type,misc]
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                yaml_settings = YamlConfigSettingsSource(settings_cls, yaml_file=Path(path))
                return init_settings, env_settings, yaml_settings, dotenv_settings, file_secret_settings

        return cls.model_validate(FromYaml().model_dump())


def get_settings() -> Settings:
    """Fresh settings from the environment (and ``MATLOOP_CONFIG`` YAML when set)."""
    config = os.environ.get("MATLOOP_CONFIG")
    return Settings.from_yaml(config) if config else Settings()
