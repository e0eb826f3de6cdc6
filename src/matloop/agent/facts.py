"""What a request or a campaign did, read from its own records, and a model's answer checked
against them.

The LLM planner's final answer never reaches the user as the model's claim alone: the facts —
calculations sent per level and what became of them (done, failed, not run, with the reasons),
what the guardrails left out of calls they let through, the calls they refused — come from the
decision log and the validation store, and claims in the model's text that contradict them are
flagged: a count of calculations queued or computed, "all"/"everything" queued when items were
left out, and an element said to be included that the guardrails excluded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from pymatgen.core import Element

from matloop.agent.decisions import DecisionLog
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace

_QUEUED = r"(?:queued|submitted)"
_COMPUTED = r"(?:computed|calculated|completed|labelled|labeled)"
_NUMBER = r"(\d+)\s+(?:\w+\s+){0,3}?"
#: verdict messages that name elements kept out ("forbidden elements ['O']", "elements ['U'] not allowed")
_EXCLUDED = re.compile(r"forbidden elements \[([^\]]*)\]|elements \[([^\]]*)\] not allowed")


@dataclass
class Facts:
    """The records of one request (or campaign) from a decision-log step on."""

    #: calculations per (level, status): queued, running, done, failed, rejected, duplicate
    calcs: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: why calculations failed or were not run ("item: reason")
    reasons: list[str] = field(default_factory=list)
    #: what the guardrails changed in calls they let through ("tool: what")
    left_out: list[str] = field(default_factory=list)
    #: calls the guardrails or the schema refused ("tool: why")
    refused: list[str] = field(default_factory=list)
    #: elements the guardrails kept out of calls they let through
    excluded: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, log: DecisionLog, ws: Workspace, first_step: int = 0) -> Facts:
        facts, batches = cls(), []
        for rec in log.records():
            if rec["step"] < first_step:
                continue
            for v in rec["verdicts"]:
                if v.get("amended") and rec["phase"] == "planned":
                    facts.left_out.append(f"{rec['tool']}: {v['message']}")
                for m in _EXCLUDED.finditer(v["message"]):
                    names = (m.group(1) or m.group(2)).split(",")
                    facts.excluded |= {e.strip(" '\"") for e in names} - {""}
            if rec["phase"] == "rejected":
                facts.refused.append(f"{rec['tool']}: {rec['result']}")
            elif rec["phase"] == "done" and rec["tool"] == "queue_validation":
                batches.append(rec["result"]["batch_id"])
        if batches:
            store = ValidationStore(ws)
            for batch in batches:
                for job in store.jobs(batch_id=batch):
                    facts.calcs[(job.level, job.status)] += 1
                    if job.status in ("failed", "rejected") and job.reason:
                        facts.reasons.append(f"{job.item_id} {job.status}: {job.reason}")
        return facts

    def count(self, *statuses: str) -> int:
        return sum(n for (_, status), n in self.calcs.items() if status in statuses)

    @property
    def empty(self) -> bool:
        return not (self.calcs or self.left_out or self.refused)

    def describe(self) -> str:
        """The facts in one paragraph."""
        levels = sorted({level for level, _ in self.calcs})
        parts = []
        for level in levels:
            by_status = {s: n for (lv, s), n in sorted(self.calcs.items()) if lv == level}
            sent = sum(by_status.values())
            parts.append(
                f"{sent} calculation(s) at {level}: " + ", ".join(f"{n} {s}" for s, n in by_status.items())
            )
        if not levels:
            parts.append("no calculation queued")
        if self.reasons:
            parts.append("not run or failed: " + "; ".join(self.reasons[:5]))
        if self.left_out:
            parts.append("left out by the guardrails: " + "; ".join(self.left_out[:5]))
        if self.refused:
            parts.append(f"{len(self.refused)} call(s) refused: " + "; ".join(self.refused[:3]))
        return "; ".join(parts) + "."

    def contradictions(self, text: str) -> list[str]:
        """Claims in ``text`` that the records contradict."""
        out = []
        lower = text.lower()
        sent = self.count("queued", "running", "done", "failed", "duplicate")
        computed = self.count("done", "duplicate")
        for what, verb, actual in (("queued", _QUEUED, sent), ("computed", _COMPUTED, computed)):
            claimed = {int(n) for n in re.findall(_NUMBER + verb + r"\b", lower)}
            claimed |= {int(n) for n in re.findall(verb + r"\s+(\d+)\b", lower)}
            if claimed - {actual}:
                said = ", ".join(map(str, sorted(claimed)))
                out.append(f"the answer says {said} {what}; the records say {actual}")
        if (self.left_out or self.refused) and re.search(
            r"\b(all|every\w*)\b[^.]{0,40}" + _QUEUED + r"|" + _QUEUED + r"[^.]{0,20}\b(all|every\w*)\b",
            lower,
        ):
            out.append(
                "the answer says everything was queued; the records show items left out or calls refused"
            )
        for symbol in sorted(self.excluded):
            name = Element(symbol).long_name.lower() if Element.is_valid_symbol(symbol) else symbol.lower()
            mention = rf"(\b{name}\b|\b{re.escape(symbol)}\b)"
            if re.search(rf"includ\w*[^.]{{0,40}}{mention}|{mention}[^.]{{0,40}}includ", text, re.I):
                out.append(
                    f"the answer says {name} was included; the guardrails kept every {symbol} item out"
                )
        return out

    def checked(self, answer: str) -> str:
        """``answer`` followed by the facts and the contradictions flagged (unchanged when the
        records hold nothing to state and the text claims nothing against them)."""
        flags = self.contradictions(answer)
        if self.empty and not flags:
            return answer
        out = f"{answer}\n\nFrom the records: {self.describe()}"
        if flags:
            out += "\nContradicted by the records: " + "; ".join(flags) + "."
        return out
