"""Settings: environment over YAML over defaults, unknown keys refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from matloop.settings import Settings, get_settings


def test_the_environment_overrides_the_yaml_file(tmp_path, monkeypatch) -> None:
    config = tmp_path / "matloop.yaml"
    config.write_text("train:\n  epochs: 7\n  batch_size: 16\nllm:\n  model: from-yaml\n")
    monkeypatch.setenv("MATLOOP_TRAIN__EPOCHS", "9")
    monkeypatch.setenv("MATLOOP_CONFIG", str(config))
    settings = get_settings()
    assert type(settings) is Settings
    assert (settings.train.epochs, settings.train.batch_size, settings.llm.model) == (9, 16, "from-yaml")
    assert Settings.from_yaml(config).train.epochs == 9
    monkeypatch.delenv("MATLOOP_TRAIN__EPOCHS")
    assert Settings.from_yaml(config).train.epochs == 7


def test_unknown_yaml_keys_are_refused(tmp_path) -> None:
    config = tmp_path / "matloop.yaml"
    config.write_text("seed: 3\n")  # no longer a setting: a run's seed is an argument
    with pytest.raises(ValidationError, match="seed"):
        Settings.from_yaml(config)
