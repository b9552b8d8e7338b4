"""What a teaching lab is: steps with a command, what to look at, and a check of the live lab."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from netlab.teach import probe


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: ``detail`` says what was found, or exactly what is missing."""

    ok: bool
    detail: str


def ok(detail: str) -> Outcome:
    return Outcome(True, detail)


def missing(detail: str) -> Outcome:
    return Outcome(False, detail)


@dataclass(frozen=True)
class Counter:
    """An iptables rule whose packet counter a check compares with its value at ``lab start``."""

    key: str
    target: str
    table: str
    needles: tuple[str, ...]


@dataclass
class Ctx:
    """One teaching lab on one live lab: its name, when it started, the start-time counters.

    ``journal`` holds the broken states ``lab check`` has seen (lab 6 needs to know a state was
    broken before it can say it was repaired); it is saved with the progress record.
    """

    lab: str
    number: int
    started: float
    workdir: str
    baseline: dict[str, int | None] = field(default_factory=dict)
    journal: list[str] = field(default_factory=list)
    counters: dict[str, Counter] = field(default_factory=dict)

    def now(self, key: str) -> int | None:
        c = self.counters[key]
        return probe.counter(self.lab, c.target, c.table, *c.needles)

    def delta(self, key: str) -> int | None:
        """Packets the rule matched since ``lab start`` (None: the rule is gone)."""
        now = self.now(key)
        if now is None:
            return None
        base = self.baseline.get(key)
        # rules re-created since the start (an in-pod re-enrollment) count from zero
        return now - base if base is not None and now >= base else now

    def rule_text(self, key: str) -> str:
        c = self.counters[key]
        return f"{c.target}: iptables -t {c.table} rule with {' '.join(c.needles)}"

    def access(self, node: str):  # -> list[probe.AccessLine]
        return probe.access_log(self.lab, node, self.started)


Check = Callable[[Ctx], Outcome]


@dataclass(frozen=True)
class Step:
    """One thing to do: ``command`` (placeholders ``{lab}``, ``{dir}``, ``{pid:NAME}``,
    ``{uid:POD}``, ``{veth:NODE:IP}`` are filled in from the live lab), what to look at in what it
    shows, and the check. ``kind="look"`` steps only read the lab: their check proves that what
    the page says is there is there, and ``lab check`` cannot know whether you looked."""

    title: str
    command: str
    look: str
    check: Check
    hint: str
    kind: Literal["do", "look"] = "do"
    settle: float = 4.0  # seconds ``lab run`` keeps re-checking (logs are written when connections end)


@dataclass(frozen=True)
class TeachingLab:
    number: int
    slug: str
    title: str
    topology: str
    mode: str
    goal: str
    steps: tuple[Step, ...]
    counters: tuple[Counter, ...] = ()
    companion_mode: str | None = None  # lab 5 also needs the other design, as <lab>-<mode>
    reset: bool = True  # ``start`` puts every pod back to the topology's enrollment
    notes: str = ""  # markdown closing the lab's page: what the lab showed, with numbers

    @property
    def default_name(self) -> str:
        return f"lab{self.number}"


def wait_for(check: Check, ctx: Ctx, seconds: float) -> Outcome:
    deadline = time.monotonic() + seconds
    while True:
        o = check(ctx)
        if o.ok or time.monotonic() >= deadline:
            return o
        time.sleep(0.3)
