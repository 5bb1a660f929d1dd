"""Replay engine: answers from recorded samples instead of a model.

Reads two formats, one problem a line:
- recorded samples (``../shared/reference/recorded/*.jsonl``): ``problem_num``, ``gold_answer``,
  ``all_answers = [[final answer, generated tokens], ...]``;
- ttscale's own results files: ``problem_id`` and ``candidates`` (each with ``answer`` and
  ``completion_tokens``).

For each (problem, run seed) the engine fixes a random permutation of that problem's samples and
hands them out in that order: draws are without replacement, reproducible, and independent of how
a strategy splits its requests. Each sample is charged its recorded generated-token count; prompt
tokens are unknown in recorded data and charged as 0. Asking for more samples than were recorded
is an error, not a silent reuse.

Recorded samples are replayed whole: ``max_tokens`` is ignored (the samples were generated under
their own cap, often 16k+ tokens). A generated-token budget therefore bounds the number of draws
(no draw starts once it is spent) but the last draw may cross it.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.base import engine


@dataclass(frozen=True)
class RecordedSample:
    answer: str | None
    tokens: int
    text: str | None = None


def read_recorded(path: str | Path) -> dict[str, list[RecordedSample]]:
    """Samples per problem id from a recorded-samples file or a ttscale results file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"replay: cannot read {path}: {e.strerror}") from e
    out: dict[str, list[RecordedSample]] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"replay: {path}:{no} is not valid JSON ({e.msg})") from e
        if "all_answers" in row:
            pid = str(row.get("problem_num", row.get("id", no - 1)))
            try:
                samples = [RecordedSample(None if a is None else str(a), int(t)) for a, t in row["all_answers"]]
            except (TypeError, ValueError) as e:
                raise ConfigError(
                    f"replay: {path}:{no} field all_answers must be [[answer, tokens], ...]"
                ) from e
        elif "candidates" in row and "problem_id" in row:
            pid = str(row["problem_id"])
            samples = [
                RecordedSample(c.get("answer"), int(c.get("completion_tokens") or 0), c.get("text"))
                for c in row["candidates"]
            ]
        else:
            raise ConfigError(
                f"replay: {path}:{no} has neither all_answers (recorded samples) nor problem_id + "
                f"candidates (ttscale results); fields present: {', '.join(sorted(row))}"
            )
        out.setdefault(pid, []).extend(samples)
    if not out:
        raise ConfigError(f"replay: {path} holds no problems")
    return out


class ReplayEngine:
    """Serves recorded samples (see module docstring)."""

    name = "replay"
    supports_token_ids = False
    supports_logprobs = False

    def __init__(self, samples: dict[str, list[RecordedSample]], *, model: str = "replay",
                 params_count: float | None = None) -> None:
        self.samples = samples
        self.model = model
        self.params_count = params_count
        self._order: dict[tuple[str, int], list[int]] = {}
        self._cursor: dict[tuple[str, int], int] = defaultdict(int)

    @classmethod
    def from_file(cls, path: str | Path, **kw: object) -> ReplayEngine:
        return cls(read_recorded(path), model=str(path), **kw)  # type: ignore[arg-type]

    def order(self, problem_id: str, run_seed: int) -> list[int]:
        """The fixed draw order of a problem's samples for one run seed."""
        key = (problem_id, run_seed)
        if key not in self._order:
            idx = list(range(len(self.samples[problem_id])))
            random.Random(f"replay:{run_seed}:{problem_id}").shuffle(idx)
            self._order[key] = idx
        return self._order[key]

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        pid = req.problem_id
        if pid is None or pid not in self.samples:
            raise EngineError(f"replay: no recorded samples for problem {pid!r} in {self.model}")
        key = (pid, req.run_seed or 0)
        order = self.order(*key)
        start = self._cursor[key]
        if start + req.n > len(order):
            raise EngineError(
                f"replay: problem {pid!r} has {len(order)} recorded samples; {start} drawn already, "
                f"{req.n} more asked. Lower n or the budget."
            )
        self._cursor[key] = start + req.n
        out = []
        for i in order[start : start + req.n]:
            s = self.samples[pid][i]
            text = s.text if s.text is not None else f"The answer is \\boxed{{{s.answer}}}."
            out.append(Completion(text=text, completion_tokens=s.tokens, answer_hint=s.answer))
        return out

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class ReplayParams:
    params_count: float | None = param(None, "model size in parameters, for FLOPs (unknown by default)")


@engine("replay", ReplayParams, "recorded samples (recorded/*.jsonl or ttscale results) instead of a model")
def make_replay(model: str | None, params: ReplayParams) -> ReplayEngine:
    if not model:
        raise ConfigError("replay engine needs --model FILE (a recorded-samples or ttscale results JSONL file)")
    return ReplayEngine.from_file(model, params_count=params.params_count)
