"""The README's two set-up commands and `.ci/run` install the same things and run the same tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> tuple[list[str], list[str]]:
    """The steps (split on ``&&``) of the main-job and the test command of the README's set-up."""
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(blocks) == 2, f"expected two fenced bash commands in the README's set-up, got {len(blocks)}"
    main, tests = ([step.strip() for step in block.split("&&")] for block in blocks)
    return main, tests


def _ci_lines() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]


def _torch_pin(steps: list[str]) -> str:
    pins = {m for step in steps for m in re.findall(r"torch==[\w.+]+", step)}
    assert len(pins) == 1, f"expected one torch pin, got {sorted(pins)}"
    return pins.pop()


def test_ci_runs_the_readme_test_command_in_a_fresh_virtualenv():
    _, tests = _readme_commands()
    ci = _ci_lines()
    readme_installs = [s for s in tests if s.startswith("pip install")]
    ci_installs = [line for line in ci if line.startswith("pip install")]
    assert ci_installs == readme_installs
    assert readme_installs[0] == f"pip install {_torch_pin(tests)}", "torch must be installed first"
    assert tests[-1] in ci, f"CI does not run the README's test command {tests[-1]!r}"
    venv = next(k for k, line in enumerate(ci) if re.match(r"python3? -m venv ", line))
    activate = next(k for k, line in enumerate(ci) if line.startswith("source ") and "/bin/activate" in line)
    first_install = ci.index(ci_installs[0])
    assert venv < activate < first_install < ci.index(tests[-1])
    apt = next(s for s in tests if s.startswith("apt-get install"))
    ci_apt = next(line for line in ci if "apt-get install" in line)
    assert set(shlex.split(apt)[3:]) <= set(shlex.split(ci_apt.split("apt-get install", 1)[1]))


def test_ci_runs_the_readme_main_command_on_an_empty_cache():
    main, _ = _readme_commands()
    line = next(line for line in _ci_lines() if "matloop campaign run" in line)
    assert line.startswith('MATLOOP_CACHE_DIR="$work/empty-cache" bash -c ')
    assert shlex.split(line)[-1] == " && ".join(main)


def test_both_readme_commands_pin_the_same_torch_and_install_the_project():
    main, tests = _readme_commands()
    assert _torch_pin(main) == _torch_pin(tests) == _torch_pin(_ci_lines())
    assert main[1] == "pip install -e ."
    spec = shlex.split(main[-1])
    assert spec[:3] == ["matloop", "campaign", "run"] and (ROOT / spec[3]).is_file()


def test_the_test_extra_holds_every_optional_integration():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (test_extra,) = extras["test"]
    named = set(re.fullmatch(r"matloop\[(.*)\]", test_extra).group(1).split(","))
    assert named == set(extras) - {"test"}
