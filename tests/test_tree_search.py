"""Step-wise tree searches on the scripted engine with a scripted step verifier: the exact beams
kept at each round, pruning, termination, parent ids, step scores and the budget."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Verifier
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.scripted import ScriptedEngine, ScriptedReply
from ttscale.strategies.ab_mcts import thompson
from ttscale.strategies.base import load_strategies
from ttscale.strategies.particle_filtering import particle_weights
from ttscale.strategies.tree import StepTree, TreeParams, counts_over
from ttscale.verifiers.llm_judge import LLMJudge
from ttscale.verifiers.math_answers import MathAnswers

from helpers import make_ctx

D = "\n\n"


def tree_script(table: dict[str, list[str]], greedy: dict[str, str] | None = None, default: str = "more"):
    """A callable script: the i-th request continuing ``prefix`` gets ``table[prefix][i % len]``
    (one per sample); T=0 requests get ``greedy[prefix]``. Prefixes are the steps joined by D + D."""
    seen: dict[str, int] = defaultdict(int)

    def script(req: GenerationRequest, k: int):
        if req.temperature == 0 and greedy is not None and req.prefix in greedy:
            return greedy[req.prefix]
        texts = table.get(req.prefix)
        if texts is None:
            return default
        i = seen[req.prefix]
        seen[req.prefix] += 1
        return texts[i % len(texts)]

    return script


class StepTable(Verifier):
    """Scripted PRM: a step's score is ``table[first word of the step]`` (0.5 if absent)."""

    name = "steps"

    def __init__(self, table: dict[str, float]):
        self.table = table
        self.calls = 0
        self.scored_steps = 0

    async def score(self, problem, candidates, ctx):
        return [self.table.get(c.steps[-1].split()[0], 0.5) if c.steps else 0.0 for c in candidates]

    async def score_steps(self, problem, candidates, ctx):
        self.calls += 1
        self.scored_steps += sum(len(c.steps) for c in candidates)
        return [[self.table.get(s.split()[0], 0.5) for s in c.steps] for c in candidates]


async def run(name, params, script, table, *, budget=None, engine=None, seed=0):
    eng = engine or ScriptedEngine(script)
    v = StepTable(table)
    entry = load_strategies().get(name)
    ctx = make_ctx(eng, MathAnswers(), budget=budget, verifiers={"steps": v}, seed=seed)
    out = await entry.target(ctx.problem, ctx, entry.make_params({"verifier": "steps", **params}))
    return out, ctx, eng, v


def last_step(out, node_id):
    row = next(r for r in out.extra["tree"] if r["id"] == node_id)
    return row["step"].split()[0] if row["step"] else ""


def path_steps(out, cand):
    rows = {r["id"]: r for r in out.extra["tree"]}
    steps, i = [], cand.id
    while i is not None:
        steps.append(rows[i]["step"].split()[0] if rows[i]["step"] else "")
        i = rows[i]["parent"]
    return steps[::-1]


# --- beam search ------------------------------------------------------------------------------
BEAM_TREE = {
    "": ["alpha", "beta", "gamma", "delta"],
    "alpha" + D: ["afin \\boxed{5}", "acont"],
    "gamma" + D: ["gcont", "gfin \\boxed{7}"],
    "gamma" + D + "gcont" + D: ["gx \\boxed{5}", "gy \\boxed{7}"],
    "alpha" + D + "acont" + D: ["az \\boxed{7}", ""],
}
BEAM_SCORES = {"alpha": 0.9, "beta": 0.2, "gamma": 0.8, "delta": 0.5, "afin": 0.7, "acont": 0.6,
               "gcont": 0.95, "gfin": 0.3, "gx": 0.9, "gy": 0.4, "az": 0.5}


async def test_beam_search_keeps_top_n_over_m_and_stops_when_n_finished():
    out, ctx, eng, v = await run("beam_search", {"n": 4, "beam_width": 2}, tree_script(BEAM_TREE), BEAM_SCORES)
    rounds = out.extra["rounds"]
    kept = [[last_step(out, i) for i in r["kept"]] for r in rounds]
    finished = [[last_step(out, i) for i in r["finished"]] for r in rounds]
    assert kept == [["alpha", "gamma"], ["gcont", "acont"], []]
    assert finished == [[], ["afin", "gfin"], ["gx", "gy", "az", ""]]
    # N=4 generations per round: 4 first steps, then 2 beams x 2, then 2 x 2
    assert ctx.meter.snapshot().generations == 12
    assert [(c.prefix, c.n) for c in eng.calls[1:3]] == [("alpha" + D, 2), ("gamma" + D, 2)]
    assert all(c.stop == (D,) for c in eng.calls)
    # weighted best-of-N (last step score): 5 = .7 + .9 beats 7 = .3 + .4 + .5
    assert out.answer == "5" and out.extra["weights"] == {"5": 1.6, "7": 1.2}
    assert path_steps(out, out.chosen) == ["gamma", "gcont", "gx"]
    assert out.chosen.step_scores == (0.8, 0.95, 0.9) and out.chosen.score == 0.9
    # the tree: parent ids chain to the root; the empty step ended by EOS keeps its parent's scores
    rows = {r["id"]: r for r in out.extra["tree"]}
    assert rows[out.chosen.parent]["step"] == "gcont" and rows[rows[out.chosen.parent]["parent"]]["parent"] is None
    eos = next(c for c in out.candidates if c.extra.get("end") == "eos")
    assert eos.step_scores == (0.9, 0.6) and eos.extra["depth"] == 3
    assert {c.extra["end"] for c in out.candidates} == {"answer", "eos"}
    # a verifier without score_last_steps scores whole paths (4x1 + 4x2 + 3x3; the EOS step is free)
    assert v.scored_steps == 21


async def test_beam_search_budget_stops_with_what_exists():
    out, ctx, _eng, _ = await run("beam_search", {"n": 4, "beam_width": 2}, tree_script(BEAM_TREE), BEAM_SCORES,
                                 budget=Budget(max_generations=6))
    assert ctx.meter.snapshot().generations == 6 and ctx.meter.stopped_by_budget
    assert out.extra["stopped_by_budget"] is True
    assert [c.text for c in out.candidates] == ["alpha" + D + "afin \\boxed{5}"]
    assert out.answer == "5"


async def test_beam_search_max_steps_ends_paths():
    script = tree_script({"": ["alpha", "beta"]}, default="more words")
    out, ctx, _, _ = await run("beam_search", {"n": 2, "beam_width": 1, "max_steps": 3}, script, {})
    assert len(out.extra["rounds"]) == 3
    assert {c.extra["end"] for c in out.candidates} == {"max_steps"}
    assert all(len(c.steps) == 3 for c in out.candidates)
    assert ctx.meter.snapshot().generations == 6


async def test_beam_search_path_token_cap():
    script = tree_script({}, default="one two three four five")
    out, _ctx, eng, _ = await run("beam_search", {"n": 2, "beam_width": 2, "max_tokens": 12}, script, {})
    # 5 + 5 tokens, then the third step may use only 2 -> cut by length, path ends
    assert [c.max_tokens for c in eng.calls] == [12, 7, 2]
    assert all(c.extra["end"] == "length" and c.completion_tokens == 12 for c in out.candidates)


# --- lookahead --------------------------------------------------------------------------------
async def test_lookahead_scores_steps_by_their_greedy_rollout():
    table = {"": ["alpha", "beta"], "beta" + D: ["bfin \\boxed{3}", "bother \\boxed{4}"]}
    greedy = {"alpha" + D: "aroll", "beta" + D: "broll"}
    scores = {"alpha": 0.9, "beta": 0.2, "aroll": 0.1, "broll": 0.8, "bfin": 0.7, "bother": 0.6}
    out, ctx, eng, _ = await run("lookahead", {"n": 2, "beam_width": 2, "lookahead": 1},
                                 tree_script(table, greedy), scores)
    r1 = out.extra["rounds"][0]
    assert [last_step(out, i) for i in r1["kept"]] == ["beta"]
    beta = next(r for r in out.extra["tree"] if r["step"] == "beta")
    assert beta["step_score"] == 0.8  # the value of its rollout, not its own 0.2
    # round 1 costs N*(k+1) = 4 generations; the rollouts are greedy
    assert [c.temperature for c in eng.calls[1:3]] == [0.0, 0.0]
    assert ctx.meter.snapshot().generations == 4 + 2
    assert out.answer == "3"
    assert {r.get("role") for r in out.extra["tree"]} == {None, "lookahead"}


# --- DVTS -------------------------------------------------------------------------------------
async def test_dvts_independent_greedy_subtrees():
    table = {
        "": ["alpha", "beta", "gamma", "delta"],
        "alpha" + D: ["afin \\boxed{5}", "aopen"],
        "delta" + D: ["dcont", "dfin \\boxed{7}"],
        "delta" + D + "dcont" + D: ["dx \\boxed{7}", "dy \\boxed{5}"],
    }
    scores = {"alpha": 0.9, "beta": 0.2, "gamma": 0.3, "delta": 0.7, "afin": 0.8, "aopen": 0.4,
              "dcont": 0.6, "dfin": 0.5, "dx": 0.9, "dy": 0.95}
    out, ctx, eng, _ = await run("dvts", {"n": 4, "beam_width": 2}, tree_script(table), scores)
    paths = [[last_step(out, i) for i in p] for p in out.extra["subtrees"]]
    assert paths == [["alpha", "afin"], ["delta", "dcont", "dy"]]
    # finished steps of each subtree's last expansion: afin | dy, dx
    assert sorted(c.steps[-1].split()[0] for c in out.candidates) == ["afin", "dx", "dy"]
    assert out.answer == "5" and out.extra["weights"] == {"5": 1.75, "7": 0.9}
    assert path_steps(out, out.chosen) == ["delta", "dcont", "dy"]
    assert ctx.meter.snapshot().generations == 2 + 2 + 2 + 2 + 2
    assert all(c.n == 2 for c in eng.calls)


# --- particle filtering -----------------------------------------------------------------------
async def test_particle_filtering_resamples_by_step_reward():
    table = {"": ["alpha", "beta", "gamma"], "beta" + D: ["bfin \\boxed{5}", "bopen", "bbad \\boxed{7}"]}
    scores = {"alpha": 0.0, "beta": 0.5, "gamma": 0.0, "bfin": 0.9, "bopen": 0.0, "bbad": 0.0}
    out, ctx, eng, _ = await run("particle_filtering", {"n": 3, "resample": "normalized"}, tree_script(table), scores)
    r = out.extra["rounds"]
    assert r[0]["weights"] == [0.0, 1.0, 0.0]
    assert [last_step(out, i) for i in r[0]["resampled"]] == ["beta"] * 3
    assert (eng.calls[1].prefix, eng.calls[1].n) == ("beta" + D, 3)  # copies share one request
    assert [last_step(out, i) for i in r[1]["resampled"]] == ["bfin"] * 3
    assert len(r) == 2 and out.answer == "5" and [c.steps[-1] for c in out.candidates] == ["bfin \\boxed{5}"]
    assert ctx.meter.snapshot().generations == 6


async def test_particle_filtering_is_seeded():
    table = {"": ["alpha", "beta", "gamma", "delta"]}
    scores = {"alpha": 0.3, "beta": 0.6, "gamma": 0.5, "delta": 0.9, "more": 0.5}
    runs = []
    for _ in range(2):
        out, *_ = await run("particle_filtering", {"n": 4, "max_steps": 4}, tree_script(table), scores, seed=3)
        runs.append(out.extra["rounds"])
    assert runs[0] == runs[1]


def test_particle_weights():
    assert particle_weights([0.5, 0.5], "softmax") == [0.5, 0.5]
    w = particle_weights([0.75, 0.5], "softmax")  # r/(1-r): 3 vs 1
    assert w == pytest.approx([0.75, 0.25])
    assert particle_weights([0.0, 0.0], "normalized") == [0.5, 0.5]


# --- MCTS -------------------------------------------------------------------------------------
async def test_mcts_uct_expands_and_selects():
    table = {"": ["alpha", "beta"], "beta" + D: ["bfin \\boxed{5}", "bbad \\boxed{7}"]}
    scores = {"alpha": 0.3, "beta": 0.8, "bfin": 0.9, "bbad": 0.4}
    out, ctx, eng, _ = await run("mcts", {"n": 4, "max_children": 2, "c_uct": 0.0}, tree_script(table), scores)
    assert [c.prefix for c in eng.calls] == ["", "", "beta" + D, "beta" + D]
    assert ctx.meter.snapshot().generations == 4
    assert out.answer == "5" and out.chosen.step_scores == (0.8, 0.9)
    visits = {last_step(out, int(i)): v for i, v in out.extra["visits"].items()}
    assert visits["beta"] == [3, pytest.approx((0.8 + 0.9 + 0.4) / 3, abs=1e-6)]
    assert visits["alpha"] == [1, 0.3]


async def test_mcts_budget():
    out, ctx, _, _ = await run("mcts", {"n": 20}, tree_script({}), {}, budget=Budget(max_generations=5))
    assert ctx.meter.snapshot().generations == 5 and out.extra["stopped_by_budget"]
    assert out.chosen is not None


# --- AB-MCTS ----------------------------------------------------------------------------------
def test_thompson_posteriors():
    import random

    rng = random.Random(0)
    hi = sum(thompson([0.9] * 20, "beta", rng) for _ in range(200)) / 200
    lo = sum(thompson([0.1] * 20, "beta", rng) for _ in range(200)) / 200
    assert hi > 0.8 and lo < 0.2
    prior = sum(thompson([], "beta", rng) for _ in range(2000)) / 2000
    assert abs(prior - 0.5) < 0.05  # Jeffreys Beta(0.5, 0.5)
    nig = sum(thompson([0.7] * 10, "nig", rng) for _ in range(500)) / 500
    assert abs(nig - 0.7 * 10 / 11) < 0.05  # posterior mean (κ=1, m=0)


async def test_ab_mcts_tree_budget_and_model_arms():
    def script(req, k):
        return "hot step" if req.temperature > 0.5 else "cold step"

    scores = {"hot": 0.95, "cold": 0.05}
    params = {"n": 30, "temperatures": "0.2,1.0", "max_steps": 100}
    out, ctx, _eng, _ = await run("ab_mcts", params, script, scores, seed=1)
    assert ctx.meter.snapshot().generations == 30 and len(out.extra["choices"]) == 30
    uses = out.extra["model_uses"]
    assert sum(uses) == 30 and uses[1] > uses[0]
    ids = {r["id"] for r in out.extra["tree"]}
    assert all(r["parent"] is None or r["parent"] in ids for r in out.extra["tree"])
    # every new node hangs where the search chose to generate
    for ch in out.extra["choices"]:
        row = next(r for r in out.extra["tree"] if r["id"] == ch["new"])
        assert row["parent"] == ch["at"]
    # it both widened (several root children) and deepened
    depths = [r["depth"] for r in out.extra["tree"]]
    assert max(depths) >= 3
    # same seed, same search
    out2, *_ = await run("ab_mcts", params, script, scores, seed=1)
    assert out2.extra["choices"] == out.extra["choices"]


async def test_ab_mcts_engines_as_model_arms():
    # the policy proposes weak steps, the "big" engine strong ones: the model arm learns to use big
    policy = ScriptedEngine(lambda req, k: "weak step", model="small")
    big = ScriptedEngine(lambda req, k: "strong step", model="big")
    v = StepTable({"weak": 0.05, "strong": 0.95})
    entry = load_strategies().get("ab_mcts")
    ctx = make_ctx(policy, MathAnswers(), verifiers={"steps": v}, seed=2)
    ctx.engines["big"] = big
    params = entry.make_params({"verifier": "steps", "n": 24, "engines": "policy,big", "max_steps": 100})
    out = await entry.target(ctx.problem, ctx, params)
    assert out.extra["models"] == ["policy@0.8", "big@0.8"]
    uses = out.extra["model_uses"]
    assert sum(uses) == 24 and uses[1] > uses[0] >= 1
    assert len(policy.calls) == uses[0] and len(big.calls) == uses[1]
    assert ctx.meter.snapshot().generations == 24  # both engines charged to the problem
    rows = {r["id"]: r for r in out.extra["tree"]}
    strong = [r for r in rows.values() if r["step"].startswith("strong")]
    assert strong and all(ctx_node.extra.get("engine") == "big" for ctx_node in out.candidates
                          if ctx_node.text.endswith("strong step"))
    # continuing another engine's path goes by text (no token ids across tokenizers)
    assert all(r.prefix_token_ids is None for r in big.calls + policy.calls)
    # an unknown engine name fails before generating
    bad = entry.make_params({"verifier": "steps", "engines": "policy,nope"})
    ctx2 = make_ctx(ScriptedEngine(lambda req, k: "x"), MathAnswers(), verifiers={"steps": v})
    with pytest.raises(ConfigError, match="unknown engine 'nope'"):
        await entry.target(ctx2.problem, ctx2, bad)
    assert not ctx2.engine.calls


async def test_ab_mcts_stops_at_budget_and_finished_paths():
    table = {"": ["alpha \\boxed{4}", "beta"], "beta" + D: ["bfin \\boxed{5}"]}
    out, ctx, _, _ = await run("ab_mcts", {"n": 50, "posterior": "nig"}, tree_script(table),
                               {"alpha": 0.2, "beta": 0.6, "bfin": 0.9}, budget=Budget(max_generations=7))
    assert ctx.meter.snapshot().generations == 7 and out.extra["stopped_by_budget"]
    assert out.answer in ("4", "5") and all(c.extra.get("end") for c in out.candidates)


# --- every search respects the budget ---------------------------------------------------------
@pytest.mark.parametrize("name", ["beam_search", "lookahead", "dvts", "particle_filtering", "mcts", "ab_mcts"])
@pytest.mark.parametrize("budget", [Budget(max_generations=5), Budget(max_generated_tokens=23)])
async def test_every_search_respects_the_budget(name, budget):
    script = tree_script({}, default="w1 w2 w3")
    out, ctx, _, _ = await run(name, {"n": 8}, script, {}, budget=budget)
    cost = ctx.meter.snapshot()
    if budget.max_generations:
        assert cost.generations <= 5 and ctx.meter.stopped_by_budget
    else:  # the token budget is shared by a request's samples: steps get cut, paths end by length
        assert cost.generated_tokens <= 23
    assert out.candidates and out.chosen is not None


# --- token ids and EOS detection --------------------------------------------------------------
DELIM_ID, EOS_ID = 1, 2


class IdEngine(ScriptedEngine):
    """A scripted engine that streams token ids like llama.cpp: one id per word plus the id of the
    token that held the stop string (DELIM_ID) or of EOS, and that can detokenize them."""

    supports_token_ids = True

    def __init__(self, script):
        super().__init__(script)
        self.vocab: dict[str, int] = {}

    async def generate(self, req):
        outs = []
        for c in await super().generate(req):
            raw = self.script(req, -1)
            hit = D in (raw.text if isinstance(raw, ScriptedReply) else raw)
            ids = tuple(self.vocab.setdefault(w, 100 + len(self.vocab)) for w in c.text.split())
            outs.append(Completion(text=c.text, finish_reason=c.finish_reason, completion_tokens=c.completion_tokens,
                                   prompt_tokens=c.prompt_tokens, token_ids=ids + ((DELIM_ID,) if hit else (EOS_ID,))))
        return outs

    def detokenize(self, ids):
        inv = {v: k for k, v in self.vocab.items()} | {DELIM_ID: D, EOS_ID: "<|im_end|>"}
        return " ".join(inv[i] for i in ids)


async def test_token_ids_continue_and_eos_ends_a_path():
    def script(req, k):
        return {"": "one two" + D, "one two" + D: "three" + D}.get(req.prefix, "the end")

    eng = IdEngine(script)
    out, _ctx, _, _ = await run("beam_search", {"n": 1, "beam_width": 1}, script, {}, engine=eng)
    assert [c.prefix_token_ids for c in eng.calls] == [None, (100, 101, DELIM_ID), (100, 101, DELIM_ID, 102, DELIM_ID)]
    (c,) = out.candidates
    assert c.extra["end"] == "eos" and c.steps == ("one two", "three", "the end")


# --- the generative step verifier (LLMJudge) scores only the new step ---------------------------
async def test_llm_judge_step_verifier_is_incremental():
    def script(req, k):
        content = req.messages[-1]["content"]
        if content.startswith("Here is a problem and the first steps"):
            good = content.rstrip().splitlines()[-3].split(": ", 1)[-1].startswith("good")
            return ScriptedReply("Yes" if good else "No", logprobs=[-0.05])
        return tree_script({"": ["good one", "bad one"], "good one" + D: ["good \\boxed{5}", "bad \\boxed{7}"]})(req, k)

    eng = ScriptedEngine(script)
    ctx = make_ctx(eng, MathAnswers(), verifiers={"llm_judge": LLMJudge()})
    entry = load_strategies().get("beam_search")
    out = await entry.target(ctx.problem, ctx, entry.make_params({"n": 2, "beam_width": 2}))
    judge_calls = [c for c in eng.calls if c.messages[-1]["content"].startswith("Here is a problem")]
    assert len(judge_calls) == 4  # 2 first steps + 2 second steps, one question each
    assert out.answer == "5" and out.chosen.step_scores == (1.0, 1.0)
    assert ctx.meter.snapshot().verifier_calls == 4


def test_counts_over_and_params():
    assert counts_over(8, 3) == [3, 3, 2] and counts_over(4, 2) == [2, 2]
    with pytest.raises(ValueError):
        TreeParams(aggregate="outcome")
    entry = load_strategies().get("ab_mcts")
    assert entry.make_params({"temperatures": "0.5,1.0"}).temperatures == [0.5, 1.0]


async def test_step_tree_prefix_and_root():
    eng = ScriptedEngine(tree_script({"": ["a b", "c"]}))
    ctx = make_ctx(eng, MathAnswers(), verifiers={"steps": StepTable({})})
    t = StepTree(ctx, TreeParams(verifier="steps", delimiter="\nStep:"))
    kids = await t.expand(None, 2)
    assert [k.text for k in kids] == ["a b", "c"] and eng.calls[0].stop == ("\nStep:",)
    assert t.prefix(kids[0]) == ("a b\nStep:", None) and ctx.step_delimiter == "\nStep:"


def test_cli_extra_engine_reaches_ab_mcts(tmp_path):
    from typer.testing import CliRunner

    from ttscale.cli import app
    from ttscale.lab.runner import read_results

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "4"}) + "\n")
    (tmp_path / "small.json").write_text(json.dumps({"q1": ["small step"]}))
    (tmp_path / "big.json").write_text(json.dumps({"q1": ["big step \\boxed{4}"]}))
    out = tmp_path / "r.jsonl"
    args = ["run", "--engine", "scripted", "--model", str(tmp_path / "small.json"), "--dataset", str(data),
            "--extra-engine", f"big=scripted:{tmp_path / 'big.json'}", "--strategy", "ab_mcts",
            "-p", "engines=policy,big", "-p", "n=6", "-p", "verifier=llm_judge", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (rec,), _ = read_results(out)
    assert rec["extra"]["models"] == ["policy@0.8", "big@0.8"] and sum(rec["extra"]["model_uses"]) == 6
    assert rec["cost"]["generations"] == 6
    bad = CliRunner().invoke(app, [*args[:7], "--extra-engine", "policy=scripted:x", *args[9:]])
    assert bad.exit_code != 0 and "the name 'policy' is taken" in str(bad.exception or bad.output)
