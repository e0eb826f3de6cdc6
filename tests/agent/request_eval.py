"""Compare the request parser with request sets written by hand (YAML: text + expected parse).

``python -m tests.agent.request_eval FILE`` prints "parsed exactly as meant: k of n", the requests
where an exclusion or a budget in the words is neither parsed nor reported back, and each miss.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

from matloop.agent.request import parse_request

#: fields compared on every request; left out of an expectation they must be empty
FIELDS: dict[str, Any] = {
    "target": None,
    "goal": None,
    "window": None,
    "elements_include": [],
    "elements_exclude": [],
    "budget": None,
    "level": None,
    "n_elements": None,
    "needs": False,
}


def load(path: str | Path) -> list[dict[str, Any]]:
    return yaml.safe_load(Path(path).read_text())


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, list) and any(isinstance(w, float | int) for w in want):  # a window
        return got is not None and all(
            g == w or (g is not None and w is not None and math.isclose(g, w, abs_tol=1e-6))
            for g, w in zip(got, want, strict=True)
        )
    if isinstance(want, list):
        return sorted(got or []) == sorted(want)
    return got == want


def actual(req: Any) -> dict[str, Any]:
    """The compared fields of a parse (``needs``: whether it asks a question before running)."""
    out = {key: getattr(req, key, None) for key in FIELDS}
    out["needs"] = bool(getattr(req, "needs", getattr(req, "missing", [])))
    return out


def compare(text: str, expect: dict[str, Any]) -> tuple[list[str], bool]:
    """Differences between the parse of ``text`` and ``expect``, and whether an exclusion or a
    budget of the words was dropped without being reported back."""
    req = parse_request(text)
    got = actual(req)
    diffs = []
    for key, default in FIELDS.items():
        want = expect.get(key, default)
        if not _same(got[key], want):
            diffs.append(f"{key}: expected {want!r}, got {got[key]!r}")
    for key in expect.keys() - FIELDS.keys():  # compared only where an expectation names them
        if not _same(getattr(req, key, None), expect[key]):
            diffs.append(f"{key}: expected {expect[key]!r}, got {getattr(req, key, None)!r}")
    reported = bool(getattr(req, "notes", [])) or got["needs"]
    lost = set(expect.get("elements_exclude", [])) - set(got["elements_exclude"])
    budget_lost = expect.get("budget") is not None and got["budget"] != expect["budget"]
    return diffs, bool((lost or budget_lost) and not reported)


def main(path: str) -> int:
    cases = load(path)
    exact, dropped = 0, 0
    for case in cases:
        diffs, lost = compare(case["text"], case["expect"])
        exact += not diffs
        dropped += lost
        if diffs:
            print(
                f"- {case['text']}\n    " + "\n    ".join(diffs) + ("\n    DROPPED SILENTLY" if lost else "")
            )
    print(f"parsed exactly as meant: {exact} of {len(cases)}")
    print(f"exclusion or budget dropped without a word: {dropped} of {len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
