"""A meeting-scheduling puzzle whose answers are checked by code: generator, parser, checker,
evaluator (``meeting``), dataset loader and grader.

The puzzle. ``n`` people (4–6, from a fixed list of names) each need one one-hour meeting that
starts on the hour inside the working day (9:00–17:00, so starts 9..16). Constraints:

- ``window``: "Ana is available only from 10:00 to 13:00" (start in 10..12);
- ``apart``: "Ana's and Ben's meetings must not overlap" (different starts);
- ``before``: "Cara's meeting must end before Dan's meeting starts" (start(C) + 1 <= start(D)).

Generation (:func:`generate_meeting`) is deterministic in ``(seed, index)``: it draws a hidden
schedule first (distinct starts), then only constraints that the hidden schedule satisfies, so every
puzzle is solvable; the hidden schedule is the problem's reference ``answer`` (any schedule that
violates nothing is correct, though).

The answer format the problem text asks for is one line per person, ``Name: H`` (``H`` the start
hour on the 24-hour clock). :func:`parse_schedule` reads ``Name: H``, ``Name = H``, ``Name - H``,
``Name at H`` with optional ``:00`` and ``am``/``pm``, anywhere in the text (so a one-line
``\\boxed{Ana: 10, Ben: 12}`` works too), for the puzzle's names only; the *last* mention of a
name wins. :func:`check_schedule` lists the violated constraints in words (a missing person is one
violation, and constraints involving that person are then not checked); the evaluator's fitness is
``-len(violations)`` and the puzzle is solved at 0.

As a dataset: ``load_dataset("meeting", limit=..., seed=..., size=...)`` (problem ids
``meeting-<i>``, ``metadata["meeting"]`` the spec as plain JSON data, grader ``"meeting"``:
:class:`MeetingGrader`, which parses the final answer with the same parser and checks it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ttscale.core.errors import ConfigError
from ttscale.core.registry import NoParams
from ttscale.core.types import Problem
from ttscale.evaluators.base import Evaluation, evaluator

if TYPE_CHECKING:
    from ttscale.core.context import Context

NAMES = ("Ana", "Ben", "Cara", "Dan", "Eve", "Finn", "Gia", "Hugo")
DAY_START, DAY_END = 9, 17
DEFAULT_SIZE = 20

Kind = Literal["window", "apart", "before"]


@dataclass(frozen=True)
class Constraint:
    """``window``: ``a`` starts in ``[start, end - 1]``; ``apart``: ``a`` and ``b`` start at different
    hours; ``before``: ``a`` ends no later than ``b`` starts."""

    kind: Kind
    a: str
    b: str | None = None
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, "a": self.a}
        if self.kind == "window":
            d.update(start=self.start, end=self.end)
        else:
            d["b"] = self.b
        return d

    def describe(self) -> str:
        if self.kind == "window":
            return f"{self.a} is available only from {hhmm(self.start or 0)} to {hhmm(self.end or 0)}."
        if self.kind == "apart":
            return f"{self.a}'s and {self.b}'s meetings must not overlap."
        return f"{self.a}'s meeting must end before {self.b}'s meeting starts."


@dataclass(frozen=True)
class MeetingSpec:
    """One puzzle: who, the working day, and the constraints."""

    people: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    day_start: int = DAY_START
    day_end: int = DAY_END

    def to_dict(self) -> dict[str, Any]:
        return {
            "people": list(self.people),
            "day_start": self.day_start,
            "day_end": self.day_end,
            "constraints": [c.to_dict() for c in self.constraints],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeetingSpec:
        """The spec from its plain-data form (ConfigError naming what is wrong)."""
        try:
            people = tuple(str(p) for p in d["people"])
            cons = []
            for c in d.get("constraints") or ():
                kind = c["type"]
                if kind == "window":
                    cons.append(Constraint("window", str(c["a"]), start=int(c["start"]), end=int(c["end"])))
                elif kind in ("apart", "before"):
                    cons.append(Constraint(kind, str(c["a"]), str(c["b"])))
                else:
                    raise ConfigError(f"meeting spec: unknown constraint type {kind!r}")
            spec = cls(people, tuple(cons), int(d.get("day_start", DAY_START)), int(d.get("day_end", DAY_END)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"meeting spec is malformed ({type(e).__name__}: {e}): {dict(d)!r}") from e
        if not people or spec.day_end <= spec.day_start:
            raise ConfigError(f"meeting spec needs people and day_start < day_end: {dict(d)!r}")
        return spec

    def describe(self) -> str:
        """The problem text."""
        lines = [
            f"Schedule one one-hour meeting for each of these people: {', '.join(self.people)}.",
            f"Meetings start on the hour. The working day runs from {hhmm(self.day_start)} to "
            f"{hhmm(self.day_end)}, so the latest start is {hhmm(self.day_end - 1)}.",
            "Constraints:",
        ]
        lines += [f"{i}. {c.describe()}" for i, c in enumerate(self.constraints, 1)]
        lines.append(
            "Answer with one line per person in the form `Name: H`, where H is the start hour on the "
            f"24-hour clock (for example `{self.people[0]}: 13` means 13:00 to 14:00)."
        )
        return "\n".join(lines)


def hhmm(hour: int) -> str:
    return f"{hour}:00"


# --------------------------------------------------------------------------------------------------
# generator


def generate_meeting(seed: int, index: int, people: int | None = None) -> tuple[MeetingSpec, dict[str, int]]:
    """A solvable puzzle and its hidden schedule, deterministic in ``(seed, index)`` (see module
    docstring). ``people`` defaults to ``4 + index % 3``."""
    n = 4 + index % 3 if people is None else people
    if not 2 <= n <= len(NAMES):
        raise ConfigError(f"meeting puzzle: people must be in 2..{len(NAMES)}, got {n}")
    rng = random.Random(f"meeting:{seed}:{index}")
    chosen = set(rng.sample(NAMES, n))
    names = [x for x in NAMES if x in chosen]
    starts = rng.sample(range(DAY_START, DAY_END), n)
    hidden = dict(zip(names, starts, strict=True))
    cons: list[Constraint] = []
    for name in names:
        s = hidden[name]
        if rng.random() < 0.5:
            lo, hi = rng.randint(DAY_START, s), rng.randint(s + 1, DAY_END)
            if (lo, hi) != (DAY_START, DAY_END):
                cons.append(Constraint("window", name, start=lo, end=hi))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rng.shuffle(pairs)
    for a, b in pairs[:n]:
        if rng.random() < 0.5:
            first, second = (a, b) if hidden[a] < hidden[b] else (b, a)
            cons.append(Constraint("before", first, second))
        else:
            cons.append(Constraint("apart", a, b))
    return MeetingSpec(tuple(names), tuple(cons)), hidden


# --------------------------------------------------------------------------------------------------
# parser and checker


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"\b{re.escape(name)}\b\**\s*(?::|=|-|–|\bat\b)\s*\**\s*(\d{{1,2}})(?::00)?(?![:\d])\s*(am|pm)?",
        re.IGNORECASE,
    )


def parse_schedule(spec: MeetingSpec, text: str) -> dict[str, int]:
    """Start hour per person from a proposed schedule (see module docstring); people not mentioned
    in the format are absent. ``2pm`` = 14, ``12am`` = 0."""
    out: dict[str, int] = {}
    for name in spec.people:
        matches = list(_pattern(name).finditer(text))
        if not matches:
            continue
        m = matches[-1]
        hour, suffix = int(m.group(1)), (m.group(2) or "").lower()
        if suffix == "pm" and hour < 12:
            hour += 12
        elif suffix == "am" and hour == 12:
            hour = 0
        out[name] = hour
    return out


def format_schedule(spec: MeetingSpec, schedule: Mapping[str, int]) -> str:
    """The canonical one-line answer: ``"Ana: 10, Ben: 12"`` in the puzzle's order of people."""
    return ", ".join(f"{p}: {schedule[p]}" for p in spec.people if p in schedule)


def check_schedule(spec: MeetingSpec, schedule: Mapping[str, int]) -> list[str]:
    """Every violated constraint, in words, in a fixed order: missing people, meetings outside the
    day, then the constraints in their order. An empty list means the schedule is valid."""
    out = [f"{p} has no meeting time." for p in spec.people if p not in schedule]
    for p in spec.people:
        s = schedule.get(p)
        if s is not None and not spec.day_start <= s <= spec.day_end - 1:
            out.append(
                f"{p}'s meeting at {hhmm(s)} is outside the working day ({hhmm(spec.day_start)} to "
                f"{hhmm(spec.day_end)})."
            )
    for c in spec.constraints:
        sa = schedule.get(c.a)
        sb = schedule.get(c.b) if c.b is not None else None
        if sa is None or (c.kind != "window" and sb is None):
            continue
        if c.kind == "window" and not (c.start or 0) <= sa <= (c.end or 0) - 1:
            out.append(
                f"{c.a} is available only from {hhmm(c.start or 0)} to {hhmm(c.end or 0)}, but "
                f"{c.a}'s meeting is at {hhmm(sa)}."
            )
        elif c.kind == "apart" and sa == sb:
            out.append(f"{c.a}'s and {c.b}'s meetings overlap (both at {hhmm(sa)}).")
        elif c.kind == "before" and sb is not None and not sa + 1 <= sb:
            out.append(
                f"{c.a}'s meeting (at {hhmm(sa)}) must end before {c.b}'s meeting (at {hhmm(sb)}) starts."
            )
    return out


def spec_of(problem: Problem) -> MeetingSpec | None:
    """The puzzle spec in a problem's metadata (``metadata["meeting"]``), or None."""
    d = (problem.metadata or {}).get("meeting")
    return MeetingSpec.from_dict(d) if isinstance(d, Mapping) else None


# --------------------------------------------------------------------------------------------------
# evaluator, dataset, grader


class MeetingEvaluator:
    """Fitness = −violations, feedback = the violations one per line, solved at 0; its answer is
    the canonical form of the parsed schedule (None when no person's time was found)."""

    name = "meeting"
    gives_answers = True

    def evaluate_text(self, spec: MeetingSpec, text: str) -> Evaluation:
        sched = parse_schedule(spec, text)
        bad = check_schedule(spec, sched)
        return Evaluation(
            fitness=-float(len(bad)),
            feedback="\n".join(bad) if bad else "All constraints are satisfied.",
            solved=not bad,
            answer=format_schedule(spec, sched) or None,
            details={"violations": len(bad)},
        )

    async def evaluate(self, problem: Problem, text: str, ctx: Context | None = None) -> Evaluation:
        spec = spec_of(problem)
        if spec is None:
            raise ConfigError(
                f"evaluator 'meeting' needs a meeting puzzle (metadata['meeting']), but problem "
                f"{problem.id!r} has none; use --dataset meeting, or evaluator=math"
            )
        return self.evaluate_text(spec, text)


@evaluator("meeting", NoParams, "meeting-scheduling puzzle checked by code: fitness = -violations")
def make_meeting_evaluator(params: NoParams) -> MeetingEvaluator:
    return MeetingEvaluator()


def load_meeting(*, seed: int = 0, size: int | None = None) -> list[Problem]:
    """``size`` generated puzzles (default 20) as problems (see module docstring)."""
    size = DEFAULT_SIZE if size is None else int(size)
    if size < 1:
        raise ConfigError(f"meeting: size must be >= 1, got {size}")
    problems = []
    for i in range(size):
        spec, hidden = generate_meeting(seed, i)
        problems.append(
            Problem(
                id=f"meeting-{i}",
                prompt=spec.describe(),
                answer=format_schedule(spec, hidden),
                metadata={"meeting": spec.to_dict(), "meeting_seed": seed},
            )
        )
    return problems


class MeetingGrader:
    """Correct when the answer, parsed as a schedule, violates no constraint (any valid schedule
    counts, not only the reference). None for a problem without a puzzle; False for no answer."""

    name = "meeting"

    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        spec = spec_of(problem)
        if spec is None:
            return None
        if answer is None:
            return False
        return not check_schedule(spec, parse_schedule(spec, answer))
