"""Reading a campaign request in plain words: target property, goal or value window, elements
to require, allow or exclude, dataset, budget and validation level.

Nothing is dropped silently: each phrase the parser uses is marked, and every number, element or
budget word left unmarked is reported back (``notes``) or, when the parse cannot tell what the
user wants (an element neither wanted nor unwanted, a budget it cannot read), asked about
(``needs``: the request is not run until the user says). Conflicting limits resolve to the most
restrictive one (the smallest budget, the cheapest level), with a note.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from pymatgen.core.periodic_table import Element

from matloop.data.prototypes import Family
from matloop.names import LEVEL_NAMES, SOURCE_NAMES, GoalName
from matloop.validation.levels import LEVELS as LEVEL_SPECS

# phrase → (property, dataset where it lives); longest phrases are tried first
PROPERTIES: dict[str, tuple[str, str | None]] = {
    "homo-lumo gap": ("gap", "qm9"),
    "homo lumo gap": ("gap", "qm9"),
    "homo": ("homo", "qm9"),
    "lumo": ("lumo", "qm9"),
    "formation energy": ("formation_energy_per_atom", None),
    "formation energies": ("formation_energy_per_atom", None),
    "formation enthalpy": ("formation_energy_per_atom", None),
    "energy above hull": ("e_above_hull", "mp_formation_energy"),
    "energy above the hull": ("e_above_hull", "mp_formation_energy"),
    "e_above_hull": ("e_above_hull", "mp_formation_energy"),
    "hull distance": ("e_above_hull", "mp_formation_energy"),
    "distance to the hull": ("e_above_hull", "mp_formation_energy"),
    "band gap": ("band_gap", "mp_dielectric"),
    "band gaps": ("band_gap", "mp_dielectric"),
    "bandgap": ("band_gap", "mp_dielectric"),
    "band-gap": ("band_gap", "mp_dielectric"),
    "eg": ("band_gap", "mp_dielectric"),
    "e_g": ("band_gap", "mp_dielectric"),
    "refractive index": ("n", "mp_dielectric"),
    "bulk modulus": ("K_VRH", "mp_elastic"),
    "k_vrh": ("K_VRH", "mp_elastic"),
    "shear modulus": ("G_VRH", "mp_elastic"),
    "g_vrh": ("G_VRH", "mp_elastic"),
    "piezoelectric": ("eij_max", "mp_piezo"),
    "eij": ("eij_max", "mp_piezo"),
    "eij_max": ("eij_max", "mp_piezo"),
    "gap": ("band_gap", "mp_dielectric"),
}
#: qualitative words that name a property and a direction; used only when no property is named
QUALITIES: dict[str, tuple[str, GoalName, str]] = {
    "hardest": ("G_VRH", "maximize", "hardness read as the shear modulus"),
    "hard": ("G_VRH", "maximize", "hardness read as the shear modulus"),
    "softest": ("G_VRH", "minimize", "softness read as the shear modulus"),
    "stiffest": ("K_VRH", "maximize", "stiffness read as the bulk modulus"),
    "most stable": ("formation_energy_per_atom", "minimize", "stability read as the formation energy"),
    "wide-gap": ("band_gap", "maximize", ""),
    "wide gap": ("band_gap", "maximize", ""),
}
GOAL_WORDS: dict[GoalName, str] = {
    "minimize": r"minimi[sz]e|lowest|smallest|most negative|minimum|low|softest|most stable",
    "maximize": r"maximi[sz]e|most(?! stable| negative)|highest|largest|maximum|high|large|big|hardest"
    r"|stiffest|strongest|wide",
}
#: sources a request can name in words (those read from a user's file need its path)
DATASETS = tuple(name for name in SOURCE_NAMES if name not in ("table", "cif_folder", "ase_db"))
#: words for a validation level
LEVEL_WORDS = {
    **{name: name for name in LEVEL_NAMES if name not in ("lookup", "chgnet_static")},
    "sevennet": "sevenn",
    "7net": "sevenn",
    "dft": "cp2k",
    "pbe": "cp2k",
    "gfn2-xtb": "xtb",
    "gfn2": "xtb",
}
#: words for the prototype families of candidate pools
PROTOTYPE_WORDS: dict[Family, str] = {
    "perovskite": "perovskite",
    "rocksalt": "rock-?salt",
    "zincblende": "zinc-?blende",
    "wurtzite": "wurtzite",
    "fluorite": "fluorite",
}
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
    "arsenide": "As",
    "boride": "B",
    "silicide": "Si",
}
_LANTHANIDES = [Element.from_Z(z).symbol for z in range(57, 72)]
#: element families: excluded as a whole, ambiguous when required ("halides": which one?)
FAMILIES = {
    "halide": ["F", "Cl", "Br", "I"],
    "chalcogenide": ["S", "Se", "Te"],
    "pnictide": ["N", "P", "As", "Sb", "Bi"],
    "rare[- ]earth": ["Sc", "Y", *_LANTHANIDES],
    "lanthanide": _LANTHANIDES,
}
TOXIC = ["As", "Cd", "Hg", "Pb", "Tl"]
N_ELEMENTS = {"unary": 1, "elemental": 1, "binary": 2, "ternary": 3, "quaternary": 4, "quinary": 5}
_NAMES = {Element(s).long_name.lower(): s for s in (e.symbol for e in Element) if Element(s).Z <= 94}
_NAMES.update({"sulphur": "S", "aluminium": "Al", "caesium": "Cs"})
_SYMBOLS = {e.symbol for e in Element if e.Z <= 94}
#: symbols that are also English words: elements only next to an element cue
_WORD_SYMBOLS = {"I", "In", "As", "At", "Be", "He"}
_NUM = r"(?<![\w.])([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?!\w|\.\d)"
# fmt: off
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate((
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ))
} | {
    word: 20 + 10 * k
    for k, word in enumerate(("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))
}
# fmt: on
_SCALES = {"hundred": 100, "thousand": 1000, "dozen": 12}
_NOUNS = (
    r"calculations?|calcs?|computations?|relaxations?|evaluations?|labels?|runs?|jobs?|simulations?"
    r"|single[- ]points?|data points|samples|structures"
)
_UNIT = (
    r"(?:\s*(?:mev/atom|mev per atom|mev|ev/atom|ev per atom|ev/at|electron[- ]?volts?|ev|gpa|c/m2|c/m\^2)"
    r"(?![a-z]))?"
)
_LOWER = (
    r"(?<![a-z])(?:above|over|greater than|(?<!no )(?<!not )more than|higher than|larger than|at least"
    r"|exceeding"
    r"|no less than|not below)|>=?"
)
_UPPER = (
    r"(?<![a-z])(?:below|under|(?<!no )(?<!not )less than|lower than|smaller than|at most|no more than"
    r"|not above"
    r"|up to|not exceeding)|<=?"
)
# fmt: off
NEGATIVE_CUES = (
    "no", "not", "non", "without", "avoid", "avoiding", "skip", "skipping", "exclude", "excluding", "except",
    "never", "nor", "ban", "forbid", "don't", "doesn't", "free of", "other than", "none of", "do not",
    "does not", "leave out", "leaving out", "rule out",
)
POSITIVE_CUES = (
    "with", "containing", "contain", "contains", "including", "include", "includes", "of", "using", "use",
    "having", "have", "has", "among", "in", "from", "only", "made of", "made from", "based on", "rich in",
)
# fmt: on
_NEGATIVE = rf"\b(?:{'|'.join(NEGATIVE_CUES)})\b"
_POSITIVE = rf"\b(?:{'|'.join(POSITIVE_CUES)})\b"
#: words between an element cue and the list of elements it governs
# fmt: off
_FILLER = {
    "any", "anything", "the", "a", "an", "all", "elements", "element", "compounds", "compound", "materials",
    "material", "those", "ones", "these", "structures", "things", "that", "which", "like", "such", "as",
    "rare", "toxic", "heavy", "metals", "metal", "or", "and", "for", "phases", "systems",
} | {w for cue in (*NEGATIVE_CUES, *POSITIVE_CUES) for w in cue.split()}
# fmt: on
#: nouns after an element that make it wanted ("Pb compounds", "caesium iodide perovskites")
_MATERIAL_NOUNS = "|".join(
    [f"{word}s?" for word in ANION_WORDS]
    + [f"{word}s?" for word in PROTOTYPE_WORDS.values()]
    + ["compounds?", "materials?", "alloys?", "salts?", "phases?", "crystals?", "halides?", "chalcogenides?"]
)
#: words that ask for thermodynamically stable crystals (goal ``stable``); "most stable" is not one
#: of them (it reads as the lowest formation energy, see QUALITIES)
_STABLE = (
    rf"\b(?:thermodynamically\s+)?(?<!most )(?<!more )(?<!meta)stable(?=\s+(?:new\s+)?"
    rf"(?:[a-z]{{1,2}}(?:-[a-z]{{1,2}})+\s+)?(?:{_MATERIAL_NOUNS})\b)|\bthermodynamically\s+stable\b"
    r"|\b(?:on|at)\s+the\s+(?:convex\s+)?hull\b"
)
STABLE_NEEDS_ELEMENTS = (
    "the elements of the chemical space to search for stable crystals: name them, e.g. 'new stable "
    "Li-Mg-O crystals'"
)
TARGET_NEEDED = f"a target property (one of: {', '.join(sorted({p for p, _ in PROPERTIES.values()}))})"
_LIST_SEP = re.compile(r"^\s*(?:,\s*(?:and|or|nor)?|and|or|nor|/|&|as well as)\s*$", re.IGNORECASE)


class ParsedRequest(BaseModel):
    """What the request parser understood, what it reports back, and what it still needs."""

    target: str | None = Field(None, description="Property to learn or search on.")
    goal: GoalName | None = None
    window: tuple[float | None, float | None] | None = Field(None, description="Target range (None = open).")
    elements_include: list[str] = Field(default_factory=list, description="Every item contains all of these.")
    elements_exclude: list[str] = Field(default_factory=list, description="No item contains any of these.")
    elements_allowed: list[str] = Field(default_factory=list, description="Items contain only these.")
    n_elements: int | None = Field(None, description="Number of distinct elements (binary 2, ternary 3 ...).")
    families: list[Family] = Field(default_factory=list, description="Prototype families of the pool.")
    dataset: str | None = None
    budget: int | None = Field(None, description="Number of calculations allowed.")
    cpu_hours: float | None = Field(None, description="CPU-hours allowed.")
    level: str | None = None
    notes: list[str] = Field(default_factory=list, description="What was read loosely or not understood.")
    needs: list[str] = Field(default_factory=list, description="Questions to answer before anything runs.")

    def understood(self) -> str:
        parts = []
        if self.target:
            parts.append(f"target {self.target}")
        if self.goal:
            parts.append(f"goal {self.goal}" + (f" {self.window}" if self.window else ""))
        if self.elements_include:
            parts.append(f"with {', '.join(self.elements_include)}")
        if self.elements_allowed:
            parts.append(f"only {', '.join(self.elements_allowed)}")
        if self.elements_exclude:
            parts.append(f"without {', '.join(self.elements_exclude)}")
        for label, value in (
            ("elements per item", self.n_elements),
            ("families", ", ".join(self.families) or None),
            ("dataset", self.dataset),
            ("budget", self.budget),
            ("CPU-hours", self.cpu_hours),
            ("level", self.level),
        ):
            if value is not None:
                parts.append(f"{label} {value}")
        return "; ".join(parts) or "nothing I can act on"


@dataclass
class _Text:
    """The request with the spans already used marked, so what is left can be reported."""

    text: str
    low: str = field(init=False)
    used: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.low = "".join(c.lower() if len(c.lower()) == 1 else c for c in self.text)
        self.used = [False] * len(self.text)

    def free(self, m: re.Match[str], group: int = 0) -> bool:
        return not any(self.used[m.start(group) : m.end(group)])

    def take(self, start: int, end: int) -> None:
        self.used[start:end] = [True] * (end - start)

    def find(self, pattern: str, *, case: bool = False, group: int = 0) -> Iterator[re.Match[str]]:
        """Matches of ``pattern`` (lowercased text unless ``case``) whose ``group`` is not used yet."""
        for m in re.finditer(pattern, self.text if case else self.low):
            if self.free(m, group):
                yield m

    def rest(self, start: int = 0, end: int | None = None) -> str:
        """The lowercased text from ``start`` to ``end`` with the used spans blanked."""
        end = len(self.text) if end is None else end
        return "".join(
            " " if u else c for c, u in zip(self.low[start:end], self.used[start:end], strict=True)
        )

    def around(self, start: int, end: int) -> str:
        lo, hi = max(self.text.rfind(" ", 0, max(start - 12, 0)), 0), self.text.find(" ", end + 12)
        return self.text[lo : hi if hi >= 0 else None].strip(" ,;.")


def _normalise(text: str) -> str:
    text = text.replace("−", "-").replace("≥", ">=").replace("≤", "<=").replace("±", "+/-")
    text = re.sub(r"(?<=\d)\s*[–—]\s*(?=[-+]?\d)", " to ", text)
    return re.sub(r"[–—]", "-", text)


def _number_words(text: str) -> str:
    """'ten' → 10, 'a hundred' → 100, 'two dozen' → 24, 'twenty-five' → 25 (a lone 'one' stays)."""
    word = "|".join([*_NUMBER_WORDS, *_SCALES])
    pattern = rf"\b(?:(?:a|an)\s+(?=(?:{'|'.join(_SCALES)})\b))?(?:{word})(?:[\s-]+(?:and\s+)?(?:{word}))*\b"

    def value(m: re.Match[str]) -> str:
        words = re.findall(rf"\b(?:{word})\b", m.group(0).lower())
        if words == ["one"]:
            return m.group(0)
        total = current = 0
        for w in words:
            if w in _SCALES and w != "thousand":
                current = (current or 1) * _SCALES[w]
            elif w == "thousand":
                total, current = total + (current or 1) * 1000, 0
            else:
                current += _NUMBER_WORDS[w]
        return str(total + current)

    return re.sub(pattern, value, text, flags=re.IGNORECASE)


def _clause(text: str) -> str:
    """The last clause of ``text`` (what governs the words that follow it)."""
    return re.split(r"[,;.!?]|\bbut\b|\bso\b|\bwhile\b|\bthen\b", text)[-1]


def parse_request(text: str) -> ParsedRequest:
    """Read target, goal/range, elements, dataset, budget and level from a request."""
    t = _Text(_number_words(_normalise(text)))
    req = ParsedRequest()
    _level(t, req)
    _budget(t, req)
    stable, hull_window = _stability(t, req)
    _target(t, req)
    _window(t, req)
    _goal(t, req)
    _elements(t, req)
    _leftovers(t, req)
    if stable:
        _stable_goal(req, hull_window)
    if req.target is None:
        req.needs.append(TARGET_NEEDED)
    return req


def _stability(t: _Text, req: ParsedRequest) -> tuple[bool, tuple[float | None, float | None] | None]:
    """Whether words ask for thermodynamically stable crystals ("new stable Li-Mg-O crystals", "on
    the convex hull"), and the window "within 25 meV/atom of the hull" sets on the distance."""
    found = False
    for m in t.find(rf"\bwithin\s+{_NUM}{_UNIT}\s+(?:of|from|above)\s+the\s+(?:convex\s+)?hull\b"):
        scale = 1e-3 if "mev" in m.group(0) else 1.0
        req.window = (None, float(m.group(1)) * scale)
        t.take(m.start(), m.end())
        found = True
    for m in t.find(_STABLE):
        t.take(m.start(), m.end())
        found = True
    return found, req.window


def _stable_goal(req: ParsedRequest, hull_window: tuple[float | None, float | None] | None) -> None:
    """Goal ``stable``: labels are formation energies, hits lie within the window of the convex hull
    (a window on the energy above the hull is that window); candidates come from substitution into
    the named elements, which are the chemical space (allowed, not each required: the hull needs the
    known phases of its subsystems)."""
    from matloop.stability import HULL_PROPERTY

    if req.target not in (None, HULL_PROPERTY, "e_above_hull"):
        req.needs.append(
            f"one goal: stable crystals (the convex hull) or {req.target}? ask for one at a time"
        )
        return
    if req.target == HULL_PROPERTY and req.window != hull_window:
        req.needs.append(
            f"a window on the distance to the hull or on {HULL_PROPERTY}: stable crystals are those "
            "within a distance of the hull (say 'within 25 meV/atom of the hull')"
        )
        return
    req.target, req.goal, req.dataset = HULL_PROPERTY, "stable", "substitution"
    req.window = req.window or (None, 0.0)
    space = sorted({*req.elements_include, *req.elements_allowed})
    if not space:
        req.needs.append(STABLE_NEEDS_ELEMENTS)
        return
    req.elements_allowed, req.elements_include = space, []
    req.notes.append(
        f"stable crystals of the chemical space {'-'.join(space)}: the candidates and the reference "
        "phases of the hull are made only of these elements"
    )


def _budget(t: _Text, req: ParsedRequest) -> None:
    """Calculation and CPU-hour budgets in any wording; conflicting ones → the smallest."""
    levels = "|".join(LEVEL_WORDS)
    found: list[int] = []
    for pattern in (
        rf"\bbudget(?:\s+(?:of|is))?\s*[:=]?\s*{_NUM}(?:\s+(?:{_NOUNS})\b)?",
        rf"{_NUM}\s+(?:(?:more|additional|new|extra|{levels}|cheap|expensive|validation)\s+)*(?:{_NOUNS})\b"
        r"(?:\s+(?:max(?:imum)?|at most|in total|total|tops))?",
    ):
        for m in t.find(pattern, group=1):
            value = float(m.group(1))
            if math.isfinite(value) and value.is_integer() and value >= 0:
                found.append(int(value))
            else:
                req.needs.append(f"a whole number of calculations, got {m.group(1)}")
            start = m.start()
            pre = re.search(
                r"(?:\b(?:max(?:imum)?|at most|up to|no more than|not more than|never more than"
                r"|limit(?:ed)? to|do not exceed|don't exceed|not exceeding|capped at|spend|use|queue"
                r"|run|with|of|only)\s+)+$",
                t.low[:start],
            )
            t.take(pre.start() if pre else start, m.end())
    if found:
        req.budget = min(found)
        if len(set(found)) > 1:
            req.notes.append(
                f"calculation budgets {sorted(set(found))} stated: using the smallest, {req.budget}"
            )
    for m in t.find(rf"{_NUM}\s*(?:cpu|core)[- ]?(?:hours?|h)\b"):
        req.cpu_hours = float(m.group(1))
        t.take(m.start(), m.end())
    for m in t.find(r"\bbudget\b"):
        req.needs.append(
            f"the budget as a number ('{t.around(m.start(), m.end())}'): say e.g. 'at most 20 calculations'"
        )
        t.take(m.start(), m.end())


def _negated(t: _Text, start: int) -> bool:
    """Whether a negation governs the word at ``start`` within its clause."""
    return re.search(_NEGATIVE, _clause(t.rest(0, start))) is not None


def _level(t: _Text, req: ParsedRequest) -> None:
    """Level words; negated ones ("no vasp") rule a level out; several → the cheapest."""
    named: dict[str, str] = {}
    for word, level in LEVEL_WORDS.items():
        for m in t.find(rf"(?<![\w-]){re.escape(word)}(?:\+u)?(?![\w-])"):
            t.take(m.start(), m.end())
            if _negated(t, m.start()):
                req.notes.append(f"level {level} ruled out ('{t.around(m.start(), m.end())}')")
            else:
                named.setdefault(level, word)
    if not named:
        return
    costs = sorted((LEVEL_SPECS[lv].cost, lv) for lv in named)  # type: ignore[index]
    if len(costs) > 1 and costs[0][0] == costs[1][0]:
        req.needs.append(f"one validation level: {' or '.join(sorted(named))}?")
        return
    req.level = costs[0][1]
    if len(costs) > 1:
        req.notes.append(f"levels {sorted(named)} named: using the cheapest, {req.level}")


def _target(t: _Text, req: ParsedRequest) -> None:
    found: dict[str, tuple[str, str | None]] = {}
    molecules = re.search(r"qm9|molecul", t.low) is not None
    for phrase in sorted(PROPERTIES, key=len, reverse=True):
        for m in t.find(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])"):
            prop = ("gap", "qm9") if phrase == "gap" and molecules else PROPERTIES[phrase]
            found.setdefault(prop[0], prop)
            t.take(m.start(), m.end())
    if len(found) > 1:
        req.needs.append(f"one target property: {' or '.join(sorted(found))}?")
    elif found:
        req.target, req.dataset = next(iter(found.values()))
    else:
        for word, (prop, _goal, note) in QUALITIES.items():
            if re.search(rf"\b{word}\b", t.low):
                req.target = prop
                if note:
                    req.notes.append(note)
                break
    for name in DATASETS:
        if name in t.low or (name == "materials_project" and "materials project" in t.low):
            req.dataset = name
    if molecules or req.target in ("homo", "lumo"):
        req.dataset = "qm9"
    else:
        for family, pattern in PROTOTYPE_WORDS.items():
            for m in t.find(rf"\b(?:{pattern})s?\b"):
                if req.dataset in (None, "prototypes"):
                    req.dataset = "prototypes"
                else:  # the property lives in a dataset, which has no structure families
                    req.notes.append(f"'{m.group(0)}': {req.dataset} is not filtered by structure type")
                req.families = sorted({*req.families, family})
                t.take(m.start(), m.end())
    for m in t.find(r"\b(?:qm9|molecules?|molecular)\b"):
        t.take(m.start(), m.end())


def _window(t: _Text, req: ParsedRequest) -> None:
    """Intervals in any notation; several bounds on one side → the tightest."""
    n, u = _NUM, _UNIT
    lows: list[float] = []
    highs: list[float] = []

    def add(m: re.Match[str], lo: float | None, hi: float | None) -> None:
        scale = 1e-3 if "mev" in m.group(0) else 1.0
        if lo is not None:
            lows.append(lo * scale)
        if hi is not None:
            highs.append(hi * scale)
        t.take(m.start(), m.end())

    for m in t.find(
        rf"(?:around|about|near|approximately|roughly|close to|≈|~)?\s*{n}{u}\s*\(?\s*\+/-\s*{n}\)?{u}"
    ):
        v, d = float(m.group(1)), abs(float(m.group(2)))
        add(m, v - d, v + d)
    for m in t.find(rf"[\[(]\s*{n}\s*,\s*{n}\s*[\])]{u}"):
        add(m, float(m.group(1)), float(m.group(2)))
    for pattern in (
        rf"\bbetween\s*{n}{u}\s*and\s*{n}{u}",
        rf"(?:\bfrom|\bin the range(?: of)?|\brange)?\s*{n}{u}\s*(?:-|to|\.\.)\s*{n}{u}",
    ):
        for m in t.find(pattern):
            a, b = sorted((float(m.group(1)), float(m.group(2))))
            add(m, a, b)
    for m in t.find(rf"(?:\baround|\babout|\bnear|\bapproximately|\broughly|\bclose to|≈|~)\s*{n}{u}"):
        v = float(m.group(1))
        add(m, v - 0.1 * abs(v) - 0.05, v + 0.1 * abs(v) + 0.05)
    for m in t.find(rf"(?:{_LOWER})\s*{n}{u}"):
        add(m, float(m.group(1)), None)
    for m in t.find(rf"(?:{_UPPER})\s*{n}{u}"):
        add(m, None, float(m.group(1)))
    for m in t.find(rf"{n}\s*(?:k|kelvin|°c)(?![a-z])"):
        req.notes.append(f"temperature not used: labels are 0 K energies ('{t.around(m.start(), m.end())}')")
        t.take(m.start(), m.end())
    if not lows and not highs:
        return
    lo, hi = (max(lows) if lows else None), (min(highs) if highs else None)
    if len(lows) > 1 or len(highs) > 1:
        req.notes.append(f"several bounds stated: using the tightest, {(lo, hi)}")
    if lo is not None and hi is not None and lo > hi:
        req.needs.append(f"a window that is not empty: the bounds read {lo} to {hi}")
        return
    req.window = (lo, hi)


def _goal(t: _Text, req: ParsedRequest) -> None:
    words = {goal: list(t.find(rf"\b(?:{pattern})\b(?!-throughput)")) for goal, pattern in GOAL_WORDS.items()}
    for ms in words.values():
        for m in ms:
            t.take(m.start(), m.end())
    if req.window:
        req.goal = "window"
        return
    if words["minimize"] and words["maximize"]:
        first = min((ms[0].start(), goal) for goal, ms in words.items())[1]
        req.notes.append(f"both lower and higher values asked for: reading the first, {first}")
        req.goal = first  # type: ignore[assignment]
    elif words["minimize"]:
        req.goal = "minimize"
    elif words["maximize"]:
        req.goal = "maximize"
    elif req.target:
        req.goal = "learn"


@dataclass
class _Mention:
    """A run of element names or symbols in the request ("Pb, Hg, Cd and As")."""

    start: int
    end: int
    symbols: list[str]
    words_only: bool
    has_or: bool = False


def _atoms(t: _Text) -> list[tuple[int, int, str, bool]]:
    """(start, end, symbol, is an English word) for every element name or symbol not used yet."""
    found = []
    for m in t.find(r"\b[a-z]+\b"):
        if (sym := _NAMES.get(m.group(0))) and not re.match(r"\s+to\b", t.low[m.end() :]):
            found.append((m.start(), m.end(), sym, False))
    for m in t.find(r"(?<![A-Za-z0-9_])[A-Z][a-z]?(?![A-Za-z0-9_])", case=True):
        if m.group(0) in _SYMBOLS:
            found.append((m.start(), m.end(), m.group(0), m.group(0) in _WORD_SYMBOLS))
    return sorted(found)


def _mentions(t: _Text) -> list[_Mention]:
    out: list[_Mention] = []
    for start, end, sym, word in _atoms(t):
        if out and (_LIST_SEP.match(gap := t.text[out[-1].end : start]) or gap == "-"):
            last = out[-1]
            last.end, last.words_only = end, last.words_only and word
            last.symbols.append(sym)
            last.has_or |= re.search(r"\bor\b", gap) is not None
        else:
            out.append(_Mention(start, end, [sym], word))
    return out


def _polarity(t: _Text, mention: _Mention, prev_end: int) -> str | None:
    """'exclude', 'include', 'allow' (only these), 'ambiguous', or None when the mention is an
    English word with no element cue ("As a test", "In perovskites")."""
    after = t.low[mention.end :]
    if free := re.match(
        r"\s*-?\s*free\b(?!\s+of)|\s+(?:is|are)\s+(?:not allowed|forbidden|banned|excluded|not wanted)", after
    ):
        t.take(mention.end, mention.end + free.end())
        return "exclude"
    if (
        re.match(r"-(?:containing|based|bearing|rich|doped|substituted)\b", after)
        or (not mention.words_only and re.match(rf"\s+(?:{_MATERIAL_NOUNS})\b", after))
        or (len(mention.symbols) > 1 and "-" in t.text[mention.start : mention.end])
    ):
        return "include"
    clause = _clause(t.rest(prev_end, mention.start))
    unclear = None if mention.words_only else "ambiguous"
    if re.search(r"\bnon-?\s*$", clause):
        return "exclude"
    if re.search(r"\bwith (?:and|or) without\b", clause):
        return "ambiguous"
    neg = list(re.finditer(_NEGATIVE, clause))
    pos = list(re.finditer(_POSITIVE, clause))
    if not neg and not pos:
        return unclear
    cue = neg[-1] if neg else pos[-1]  # a negation governs the positive words after it
    if any(w not in _FILLER for w in re.findall(r"[a-z']+", clause[cue.end() :])):
        return unclear
    if neg:
        return "exclude"
    return "allow" if re.search(r"\bonly\b", clause) else "include"


def _element_classes(t: _Text, req: ParsedRequest, include: set[str], exclude: set[str]) -> None:
    """Words for kinds of compounds: 'ternary', formulas, 'oxides', 'halides', 'rare earths'."""
    for m in t.find(r"\b(?:unary|elemental|binary|ternary|quaternary|quinary)\b"):
        req.n_elements = N_ELEMENTS[m.group(0)]
        t.take(m.start(), m.end())
    formula = r"(?<![A-Za-z0-9_])(?:[A-Z][a-z]?\d*(?:\.\d+)?){2,}(?![A-Za-z0-9_])"
    for m in t.find(formula, case=True):
        parts = re.findall(r"[A-Z][a-z]?", m.group(0))
        if all(p in _SYMBOLS for p in parts) and len(m.group(0)) > 2:
            t.take(m.start(), m.end())
            if _negated(t, m.start()):
                req.needs.append(f"which elements of {m.group(0)} to exclude: name them ('without ...')")
            else:
                req.notes.append(f"formula {m.group(0)} not used as a constraint")
    for word, sym in ANION_WORDS.items():
        for m in t.find(rf"\b(?:non-?\s*)?{word}s?\b"):
            negative = m.group(0).startswith("non") or _negated(t, m.start())
            (exclude if negative else include).add(sym)
            t.take(m.start(), m.end())
    for word, members in FAMILIES.items():
        for m in t.find(rf"\b(?:non-?\s*)?{word}s?(?:-free)?\b"):
            t.take(m.start(), m.end())
            if m.group(0).startswith("non") or m.group(0).endswith("-free") or _negated(t, m.start()):
                exclude.update(members)
            else:
                req.needs.append(
                    f"which {m.group(0)} elements ({', '.join(members)}): name the ones to require"
                )


def _elements(t: _Text, req: ParsedRequest) -> None:
    """Elements required, allowed and excluded, from names, symbols and the cues around them."""
    include: set[str] = set()
    exclude: set[str] = set()
    allowed: set[str] = set()
    _element_classes(t, req, include, exclude)
    toxic = list(t.find(r"\b(?:non-?\s*)?toxic\b"))
    lists = _mentions(t)
    prev = 0
    for mention in lists:
        polarity = _polarity(t, mention, prev)
        prev = mention.end
        if polarity is None:
            continue
        t.take(mention.start, mention.end)
        symbols = ", ".join(mention.symbols)
        if polarity == "exclude":
            exclude.update(mention.symbols)
        elif polarity == "ambiguous":
            req.needs.append(
                f"whether {symbols} is wanted or unwanted ('{t.around(mention.start, mention.end)}'): "
                f"say 'containing {symbols}' or 'without {symbols}'"
            )
        elif mention.has_or and len(mention.symbols) > 1:
            req.needs.append(
                f"all of {symbols} in every item, or any one of them? say 'containing "
                f"{' and '.join(mention.symbols)}' or ask one element at a time"
            )
        else:
            (allowed if polarity == "allow" else include).update(mention.symbols)
    for m in toxic:
        t.take(m.start(), m.end())
        negative = m.group(0).startswith("non") or _negated(t, m.start())
        listed = any(
            mention.start > m.end() and not re.search(r"[;.!?]", t.low[m.end() : mention.start])
            for mention in lists
        )
        if negative and not listed:
            exclude.update(TOXIC)
            req.notes.append(f"toxic elements read as {', '.join(TOXIC)}")
    if include & exclude:
        req.needs.append(
            f"whether {', '.join(sorted(include & exclude))} is wanted: asked both for and against"
        )
    req.elements_exclude = sorted(exclude)
    req.elements_include = sorted(include - exclude)
    req.elements_allowed = sorted(allowed)


def _leftovers(t: _Text, req: ParsedRequest) -> None:
    """Every number left unused is reported back with its context."""
    for m in re.finditer(_NUM, t.rest()):
        req.notes.append(f"not understood: '{t.around(m.start(), m.end())}'")
