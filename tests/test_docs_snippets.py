"""Every Python snippet of the README and of ``docs/`` runs as written after the README's set-up.

A snippet that needs what a test machine cannot have says so in a comment on the line before its
fence: ``<!-- not run: needs a Slurm cluster -->`` or ``<!-- not run: needs an API key -->``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- not run: (?P<why>[^>]*) -->\n)?```python\n(?P<code>.*?)\n```", re.S)
#: The only reasons a snippet may be left out.
NOT_HERE = ("needs a Slurm cluster", "needs an API key")


def _snippets() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start("code")].count("\n") + 1
            marks = [pytest.mark.skip(reason=m["why"])] if m["why"] in NOT_HERE else []
            found.append(pytest.param(m["why"], m["code"], id=f"{page.name}:{line}", marks=marks))
    return found


@pytest.mark.parametrize(("why", "code"), _snippets())
def test_snippet_runs_as_written(why, code, tmp_path_factory):
    assert why is None or why in NOT_HERE, f"expected a reason among {NOT_HERE}, got {why!r}"
    cache = tmp_path_factory.getbasetemp() / "snippet-cache"  # shared: sources parse once
    run_dir = tmp_path_factory.mktemp("snippet")
    env = {**os.environ, "MATLOOP_CACHE_DIR": str(cache), "MATLOOP_WORKSPACE": str(run_dir / "ws")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=run_dir, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_every_page_of_the_docs_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert {p.name for p in PAGES[1:]} <= set(re.findall(r"\(docs/([\w-]+\.md)\)", readme))
