"""Reading a campaign request in plain words: target property, goal or value window, elements
to include or exclude, dataset, calculation budget and validation level."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field
from pymatgen.core.periodic_table import Element

from matloop.names import LEVEL_NAMES, SOURCE_NAMES, GoalName

# phrase → (property, dataset where it lives); longest phrases are tried first
PROPERTIES: dict[str, tuple[str, str | None]] = {
    "homo-lumo gap": ("gap", "qm9"),
    "homo lumo gap": ("gap", "qm9"),
    "homo": ("homo", "qm9"),
    "lumo": ("lumo", "qm9"),
    "formation energy": ("formation_energy_per_atom", None),
    "formation enthalpy": ("formation_energy_per_atom", None),
    "energy above hull": ("e_above_hull", "mp_formation_energy"),
    "hull distance": ("e_above_hull", "mp_formation_energy"),
    "band gap": ("band_gap", "mp_dielectric"),
    "bandgap": ("band_gap", "mp_dielectric"),
    "refractive index": ("n", "mp_dielectric"),
    "bulk modulus": ("K_VRH", "mp_elastic"),
    "shear modulus": ("G_VRH", "mp_elastic"),
    "piezoelectric": ("eij_max", "mp_piezo"),
    "gap": ("gap", None),
}
#: sources a request can name in words (those read from a user's file need its path)
DATASETS = tuple(name for name in SOURCE_NAMES if name not in ("table", "cif_folder", "ase_db"))
#: words for a validation level: each level's name, and "dft" for CP2K
LEVELS = {**{name: name for name in LEVEL_NAMES if name != "lookup"}, "dft": "cp2k"}
ANION_WORDS = {
    "oxide": "O",
    "nitride": "N",
    "sulfide": "S",
    "sulphide": "S",
    "fluoride": "F",
    "chloride": "Cl",
    "bromide": "Br",
    "iodide": "I",
    "selenide": "Se",
    "telluride": "Te",
    "carbide": "C",
    "phosphide": "P",
    "hydride": "H",
}
_NAMES = {Element(s).long_name.lower(): s for s in (e.symbol for e in Element) if Element(s).Z <= 94}
_NAMES.update({"sulphur": "S", "aluminum": "Al", "caesium": "Cs"})
_SYMBOLS = {e.symbol for e in Element if e.Z <= 94}
_NUM = r"([-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


class ParsedRequest(BaseModel):
    """What the rules planner understood of a request, and what it still needs."""

    target: str | None = Field(None, description="Property to learn or search on.")
    goal: GoalName | None = None
    window: tuple[float | None, float | None] | None = Field(None, description="Target range (None = open).")
    elements_include: list[str] = Field(default_factory=list)
    elements_exclude: list[str] = Field(default_factory=list)
    dataset: str | None = None
    budget: int | None = Field(None, description="Number of calculations allowed.")
    level: str | None = None
    missing: list[str] = Field(default_factory=list)

    def understood(self) -> str:
        parts = []
        if self.target:
            parts.append(f"target {self.target}")
        if self.goal:
            parts.append(f"goal {self.goal}" + (f" {self.window}" if self.window else ""))
        if self.elements_include:
            parts.append(f"with {', '.join(self.elements_include)}")
        if self.elements_exclude:
            parts.append(f"without {', '.join(self.elements_exclude)}")
        for label, value in (("dataset", self.dataset), ("budget", self.budget), ("level", self.level)):
            if value is not None:
                parts.append(f"{label} {value}")
        return "; ".join(parts) or "nothing I can act on"


def _float(text: str) -> float:
    return float(text.replace("−", "-"))


def _element(token: str) -> str | None:
    token = token.strip(" .,;:()")
    if token in _SYMBOLS:
        return token
    return _NAMES.get(token.lower())


def _elements_after(text: str, keywords: str) -> list[str]:
    found: list[str] = []
    for m in re.finditer(
        rf"\b(?:{keywords})\s+((?:[A-Za-z]+(?:\s*,\s*|\s+(?:and|or|nor)\s+|\s+)?){{1,6}})", text
    ):
        for token in re.split(r"\s*,\s*|\s+(?:and|or|nor)\s+|\s+", m.group(1)):
            el = _element(token)
            if el is None:
                if token.lower() in {"any", "the", "elements", "element"}:
                    continue
                break
            found.append(el)
    return found


def parse_request(text: str) -> ParsedRequest:
    """Read target, goal/range, elements, dataset, budget and level from a request."""
    low = text.lower().replace("–", "-").replace("≤", "<=").replace("≥", ">=")
    req = ParsedRequest()
    for phrase in sorted(PROPERTIES, key=len, reverse=True):
        if re.search(rf"\b{re.escape(phrase)}\b", low):
            req.target, dataset = PROPERTIES[phrase]
            req.dataset = dataset
            break
    if req.target == "gap" and "qm9" not in low and "molecul" not in low and "homo" not in low:
        req.target, req.dataset = "band_gap", "mp_dielectric"
    for name in DATASETS:
        if name in low or (name == "materials_project" and "materials project" in low):
            req.dataset = name
    if "qm9" in low or "molecul" in low:
        req.dataset = "qm9"
    if "perovskite" in low or "rock-salt" in low or "rocksalt" in low or "zinc-blende" in low:
        req.dataset = req.dataset if req.dataset == "qm9" else "prototypes"
    for word, level in LEVELS.items():
        if re.search(rf"\b{word}\b", low):
            req.level = level

    unit = r"\s*(?:ev/atom|ev|mev/atom|gpa|%|kj/mol)?"
    if (m := re.search(rf"(?:between|from)\s+{_NUM}{unit}\s+(?:and|to)\s+{_NUM}", low)) or (
        m := re.search(rf"{_NUM}{unit}\s*(?:-|to)\s*{_NUM}{unit}", low)
    ):
        req.window = (_float(m.group(1)), _float(m.group(2)))
    elif m := re.search(rf"(?:around|about|near|close to|≈|~)\s*{_NUM}", low):
        v = _float(m.group(1))
        req.window = (v - 0.1 * abs(v) - 0.05, v + 0.1 * abs(v) + 0.05)
    else:
        lo = re.search(
            rf"(?:above|over|greater than|more than|higher than|at least|exceeding|>=?)\s*{_NUM}", low
        )
        hi = re.search(rf"(?:below|under|less than|lower than|smaller than|at most|<=?)\s*{_NUM}", low)
        hi = (
            None
            if hi and re.search(r"calculation|calcs|evaluation|label|dft run", low[hi.end() : hi.end() + 25])
            else hi
        )
        if lo or hi:
            req.window = (_float(lo.group(1)) if lo else None, _float(hi.group(1)) if hi else None)
    if req.window and None not in req.window and req.window[0] > req.window[1]:  # type: ignore[operator]
        req.window = (req.window[1], req.window[0])

    if re.search(r"minimi[sz]e|lowest|smallest|most negative|most stable|minimum", low):
        req.goal = "minimize"
    elif re.search(r"maximi[sz]e|highest|largest|maximum", low):
        req.goal = "maximize"
    elif req.window:
        req.goal = "window"
    elif req.target:
        req.goal = "learn"

    if (
        m := re.search(
            r"(\d+)\s*(?:dft\s+|chgnet\s+|cp2k\s+)?(?:calculations|calcs|evaluations|labels|dft runs)", low
        )
    ) or (m := re.search(r"budget\s*(?:of|:|=)?\s*(\d+)", low)):
        req.budget = int(m.group(1))

    exclude = _elements_after(text, r"without|excluding|exclude|except|no|not|avoid|avoiding|free of")
    exclude += [
        el
        for word, el in (
            ("lead-free", "Pb"),
            ("lead free", "Pb"),
            ("non-toxic", "Pb"),
            ("cadmium-free", "Cd"),
            ("mercury-free", "Hg"),
        )
        if word in low
    ]
    if "non-toxic" in low or "nontoxic" in low:
        exclude += ["Cd", "Hg", "As", "Tl"]
    include = _elements_after(text, r"with|containing|contain|including|include|made of|based on")
    include += [el for word, el in ANION_WORDS.items() if re.search(rf"\b{word}s?\b", low)]
    req.elements_exclude = sorted(set(exclude))
    req.elements_include = sorted(set(include) - set(exclude))

    if req.target is None:
        req.missing.append(
            f"a target property (one of: {', '.join(sorted({p for p, _ in PROPERTIES.values()}))})"
        )
    if req.goal == "window" and req.window is None:
        req.missing.append("a value range for the target")
    return req
