"""DeepPrune (Tu et al. 2025, "DeepPrune: Parallel Scaling without Inter-trace Redundancy"): prune
parallel traces that a judge predicts will reach the same final answer as one already kept.

Rule: online greedy clustering of partial traces by predicted final-answer equivalence. Each trace,
in sample order, is compared with the representative of every existing cluster (in creation order)
by an equivalence judge (:mod:`ttscale.strategies.judges`); the first cluster whose representative
it matches with similarity ≥ ``threshold`` takes it and the trace is pruned, otherwise it starts a
new cluster as its representative. Survivors are the representatives (plus up to
``keep_per_cluster − 1`` further members of each cluster, in arrival order); the answer is the
majority over the survivors' final answers, each survivor weighted by its cluster's size divided by
the cluster's survivors when ``weighted`` (so a cluster votes with its size), else 1. Ties go to the
answer seen first.

How pruned traces really stop. A stream monitor cannot pause a generation and resume it later, so
the trace is generated in two phases:

1. ``n`` prefixes are sampled with ``max_tokens = prefix_tokens``: every trace stops at the prefix
   length (the engine's own cap; only those tokens are generated and charged). A trace that ends on
   its own before that is already complete.
2. The prefixes are clustered (above); only the survivors cut at the prefix length are continued,
   each by a request with ``prefix`` = its text and ``prefix_token_ids`` = its token ids (when the
   engine returned them: the embedded engine continues from the exact ids; others re-tokenise the
   text) and ``max_tokens = max_tokens − prefix length``. Pruned traces are never continued: they
   cost exactly their prefix.

Judges (``judge``): ``answer`` (answer-so-far equality, free), ``ngram`` (word 3-gram Jaccard, free),
``embedding`` (optional sentence-transformers), ``llm`` (zero-shot P(yes) from the policy engine,
charged as verifier tokens). For a judge with another engine, call :func:`run_deepprune` with a
judge object. ``prefix_tokens`` and ``threshold`` are parameters: the paper's values are not pinned
down.

``Outcome.extra``: ``clusters`` (sizes), ``pruned``, ``survivors``, ``continued``, ``judge_calls``,
``votes``. Candidates: the survivors' full traces (``extra.cluster``), then the pruned prefixes
(``extra.pruned = True``; answer None unless the trace had finished by itself).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from ttscale.core.context import Context
from ttscale.core.errors import BudgetExhausted
from ttscale.core.registry import param
from ttscale.core.types import Candidate, GenerationRequest, Problem
from ttscale.strategies.base import Outcome, strategy
from ttscale.strategies.judges import EquivalenceJudge, make_judge
from ttscale.strategies.voting import vote


@dataclass(frozen=True)
class DeepPruneParams:
    n: int = param(16, "parallel traces")
    prefix_tokens: int = param(256, "tokens of each trace shown to the judge before pruning")
    judge: Literal["answer", "ngram", "embedding", "llm"] = param("answer", "equivalence judge")
    threshold: float = param(0.5, "a trace joins a cluster when its similarity to the representative is >= this")
    keep_per_cluster: int = param(1, "traces of each cluster carried to the end")
    weighted: bool = param(True, "weight each survivor's vote by its cluster's size")
    top_k: int = param(20, "llm judge: logprobs of its yes/no token")
    temperature: float = param(0.7, "sampling temperature")
    top_p: float = param(1.0, "nucleus sampling")
    max_tokens: int = param(1024, "max generated tokens per trace, prefix included")

    def __post_init__(self) -> None:
        if self.n < 1 or self.prefix_tokens < 1 or self.keep_per_cluster < 1:
            raise ValueError("n, prefix_tokens and keep_per_cluster must be >= 1")


@dataclass
class Cluster:
    rep: int
    """Index (in sample order) of the representative."""
    members: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)


async def cluster_greedy(texts: list[str], judge: EquivalenceJudge, ctx: Context, threshold: float,
                         keep_per_cluster: int = 1) -> tuple[list[Cluster], int]:
    """Greedy online clustering of ``texts`` in order (see module docstring); also returns the number
    of judge calls."""
    clusters: list[Cluster] = []
    calls = 0
    for i, t in enumerate(texts):
        home = None
        for cl in clusters:
            calls += 1
            if await judge.similarity(texts[cl.rep], t, ctx) >= threshold:
                home = cl
                break
        if home is None:
            clusters.append(Cluster(rep=i, members=[i], survivors=[i]))
        else:
            home.members.append(i)
            if len(home.survivors) < keep_per_cluster:
                home.survivors.append(i)
    return clusters, calls


async def run_deepprune(ctx: Context, p: DeepPruneParams, judge: EquivalenceJudge | None = None) -> Outcome:
    """DeepPrune with an explicit judge object (default: ``make_judge(p.judge)``)."""
    judge = judge or make_judge(p.judge, top_k=p.top_k)
    plen = min(p.prefix_tokens, p.max_tokens)
    try:
        prefixes = await ctx.sample(p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=plen)
    except BudgetExhausted:
        return Outcome(None, None, [], {"stop_reason": "budget"})
    clusters, calls = await cluster_greedy([c.text for c in prefixes], judge, ctx, p.threshold,
                                           p.keep_per_cluster)
    cluster_of = {i: k for k, cl in enumerate(clusters) for i in cl.members}
    surv = sorted(i for cl in clusters for i in cl.survivors)

    base = GenerationRequest(messages=ctx.messages(), temperature=p.temperature, top_p=p.top_p,
                             max_tokens=p.max_tokens)

    async def finish(i: int) -> Candidate:
        c = prefixes[i]
        left = p.max_tokens - c.completion_tokens
        if c.finish_reason != "length" or left < 1:
            return c
        req = base.with_(prefix=c.text, prefix_token_ids=c.token_ids, max_tokens=left)
        try:
            (comp,) = await ctx.generate(req)
        except BudgetExhausted:
            return c
        full = ctx.to_candidate(comp, prefix=c.text, parent=c.id)
        ids = c.token_ids + comp.token_ids if c.token_ids is not None and comp.token_ids is not None else None
        return full.with_(completion_tokens=c.completion_tokens + comp.completion_tokens, token_ids=ids)

    continued = sum(1 for i in surv if prefixes[i].finish_reason == "length" and p.max_tokens > prefixes[i].completion_tokens)
    finals = await asyncio.gather(*(finish(i) for i in surv))
    finals = [f.with_(extra={"cluster": cluster_of[i], "cluster_size": len(clusters[cluster_of[i]].members)})
              for f, i in zip(finals, surv, strict=True)]
    weights = [
        len(clusters[cluster_of[i]].members) / len(clusters[cluster_of[i]].survivors) if p.weighted else 1.0
        for i in surv
    ]
    v = await vote(ctx, finals, weights)
    chosen = v.chosen
    pruned = [
        prefixes[i].with_(answer=prefixes[i].answer if prefixes[i].finish_reason == "stop" else None,
                          extra={"pruned": True, "cluster": cluster_of[i]})
        for i in range(len(prefixes)) if i not in set(surv)
    ]
    extra = {"clusters": [len(cl.members) for cl in clusters], "pruned": len(pruned), "survivors": len(surv),
             "continued": continued, "judge": getattr(judge, "name", type(judge).__name__),
             "judge_calls": calls, "votes": v.votes}
    return Outcome(chosen.answer if chosen else None, chosen, [*finals, *pruned], extra)


@strategy("deepprune", DeepPruneParams,
          "prune parallel traces a judge predicts will repeat a kept trace's answer (Tu et al. 2025)")
async def deepprune(problem: Problem, ctx: Context, p: DeepPruneParams) -> Outcome:
    return await run_deepprune(ctx, p)
