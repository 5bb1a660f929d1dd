"""A metastable chain as a ttscale :class:`~ttscale.core.protocols.Engine`.

Text protocol (what every strategy sees):

- a solution is its steps joined by ``"\\n\\n"``; step ``i`` is one transition, written
  ``"s12 -> s37"``; the step that enters an answer state also holds the answer:
  ``"s12 -> a0 \\boxed{a0}"`` and the path ends there;
- the path starts at the chain's start state; ``req.prefix`` is the path so far as text (any text
  works: the current state is the target of the last ``-> NAME`` in it, else the start state);
- with ``"\\n\\n"`` in ``req.stop`` each sample is exactly one step (the stop string is not
  returned, as llama.cpp and the scripted engine do); without it a sample runs to an answer state or
  ``req.max_tokens`` steps (``finish_reason="length"``, no answer);
- continuing a path that already answered returns an empty step (end of sequence);
- tokens: one step = ``tokens_per_step`` tokens (default 1), so budgets in tokens are budgets in
  steps; the prompt costs 1 token plus ``tokens_per_step`` per step of the prefix;
- randomness: sample ``i`` of a request draws from ``numpy.random.default_rng([req.seed, i])``, so
  results depend only on the seeds the context hands out (reproducible runs).

Which chain: ``chains`` maps problem ids to chains (``req.problem_id``); a single chain serves every
problem. :func:`distilled_engine` is the same engine over the verifier-free distilled kernels.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

import numpy as np

from ttscale.core.errors import ConfigError
from ttscale.core.types import Completion, GenerationRequest, Problem
from ttscale.testbeds.metastable import MetastableChain

DELIMITER = "\n\n"
_ARROW = re.compile(r"->\s*([A-Za-z_][A-Za-z0-9_]*)")


def step_text(chain: MetastableChain, a: int, b: int) -> str:
    """The text of the step ``a -> b`` (with ``\\boxed{b}`` when ``b`` is an answer state)."""
    t = f"{chain.names[a]} -> {chain.names[b]}"
    return t + f" \\boxed{{{chain.names[b]}}}" if chain.answer[b] else t


def path_text(chain: MetastableChain, path: list[int]) -> str:
    """A whole path (start state first) as solution text."""
    return DELIMITER.join(step_text(chain, a, b) for a, b in itertools.pairwise(path))


def parse_path(chain: MetastableChain, text: str) -> list[int]:
    """The states of a solution text, start state first (every ``-> NAME`` in order)."""
    path = [chain.start]
    for name in _ARROW.findall(text):
        idx = chain.index.get(name)
        if idx is None:
            raise ConfigError(f"unknown state {name!r} in the path text")
        path.append(idx)
    return path


def problem_prompt(chain: MetastableChain) -> str:
    return (f"Walk the reasoning graph from {chain.names[chain.start]}; one transition per step, "
            "steps separated by a blank line; end with the final state as \\boxed{STATE}.")


def make_problem(pid: str, chain: MetastableChain, **metadata: object) -> Problem:
    """A :class:`Problem` for ``chain``: the reference answer is the goal state's name."""
    return Problem(id=pid, prompt=problem_prompt(chain), answer=chain.goal_name,
                   metadata={"crossings": int(chain.crossings_to_goal()[chain.start]), **metadata})


class ChainEngine:
    """Samples transitions of a :class:`MetastableChain` as text steps (module docstring)."""

    name = "metastable"
    supports_token_ids = False
    supports_logprobs = False
    params_count = None

    def __init__(self, chains: Mapping[str, MetastableChain] | MetastableChain, *, model: str = "base",
                 tokens_per_step: int = 1, delimiter: str = DELIMITER) -> None:
        self.chains = chains
        self.model = model
        self.tokens_per_step = tokens_per_step
        self.delimiter = delimiter
        self.requests = 0
        self.steps = 0

    def chain_for(self, problem_id: str | None) -> MetastableChain:
        if isinstance(self.chains, MetastableChain):
            return self.chains
        try:
            return self.chains[problem_id or ""]
        except KeyError:
            raise ConfigError(f"metastable engine: no chain for problem {problem_id!r}") from None

    def _sample(self, chain: MetastableChain, state: int, rng: np.random.Generator, one_step: bool,
                max_steps: int) -> tuple[str, int, str]:
        if chain.answer[state]:
            return "", 0, "stop"
        steps = chain.walk(state, rng, 1 if one_step else max_steps)
        path = [state, *steps]
        text = self.delimiter.join(step_text(chain, a, b) for a, b in itertools.pairwise(path))
        done = chain.answer[path[-1]]
        finish = "stop" if (done or one_step) else "length"
        return text, len(steps), finish

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        self.requests += 1
        chain = self.chain_for(req.problem_id)
        path = parse_path(chain, req.prefix)
        state = path[-1]
        one_step = self.delimiter in req.stop
        max_steps = max(1, req.max_tokens // self.tokens_per_step)
        prompt_tokens = 1 + self.tokens_per_step * (len(path) - 1)
        seed = 0 if req.seed is None else int(req.seed)
        out = []
        for i in range(req.n):
            rng = np.random.default_rng([seed, i])
            text, k, finish = self._sample(chain, state, rng, one_step, max_steps)
            self.steps += k
            out.append(Completion(text=text, finish_reason=finish,  # type: ignore[arg-type]
                                  completion_tokens=k * self.tokens_per_step,
                                  prompt_tokens=prompt_tokens if i == 0 else 0))
        return out

    async def aclose(self) -> None:
        return None


def distilled_engine(chains: Mapping[str, MetastableChain], tilt: np.ndarray, **kw: object) -> ChainEngine:
    """The verifier-free baseline: each problem's base kernel tilted by what correct traces do on
    average (:func:`~ttscale.testbeds.metastable.distill_tilt`), as an engine."""
    from ttscale.testbeds.metastable import apply_tilt

    return ChainEngine({pid: apply_tilt(c, tilt) for pid, c in chains.items()}, model="distilled", **kw)  # type: ignore[arg-type]
