"""The peers' side of ``bench/peers.py``: runs in the peers' own virtual environment (its_hub and
optillm installed there, never in ttscale's), calls one peer method on each problem through the
peer's public API, and appends ``{"id", "text", "error", "wall_s"}`` per problem to ``--out``
(problems already in ``--out`` are skipped, so a rerun resumes). Grading and token counting happen
in the bench: every call reaches the metering endpoint with the API key ``sk-<label>~<problem id>``,
which is how the endpoint charges each problem's tokens.

    python bench/peers_worker.py its_hub self_consistency --budget 4 --base-url URL ...
    python bench/peers_worker.py optillm bon --budget 4 --base-url OPTILLM_URL ...
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BOXED = r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="one peer method over a problems file")
    ap.add_argument("family", choices=["its_hub", "optillm"])
    ap.add_argument("method")
    ap.add_argument("--budget", type=int, required=True)
    ap.add_argument("--label", required=True, help="method label (the API key prefix)")
    ap.add_argument("--base-url", required=True, help="OpenAI-compatible base URL the peer talks to")
    ap.add_argument("--model", required=True)
    ap.add_argument("--problems", required=True, help="JSONL of {id, question}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--system-prompt", default="")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=12, help="its_hub step search: most steps")
    return ap.parse_args(argv)


class JudgeStepScorer:
    """its_hub's beam search and particle filtering need a process reward model; the one it ships
    (LocalVllmProcessRewardModel) needs vLLM and a PRM checkpoint. This scores a partial solution
    with its_hub's own LLMJudge (0-10 mapped into (0, 1)), through its public PRM interface."""

    def __init__(self, judge: Any, system_prompt: str) -> None:
        self.judge = judge
        self.system_prompt = system_prompt

    def _conv(self, prompt: Any, partial: str) -> list[Any]:
        from its_hub.api import ChatMessage

        text = prompt if isinstance(prompt, str) else str(prompt)
        msgs = [ChatMessage(role="system", content=self.system_prompt)] if self.system_prompt else []
        return [*msgs, ChatMessage(role="user", content=text), ChatMessage(role="assistant", content=partial)]

    async def ascore(self, prompt: Any, steps: list[str]) -> list[float]:
        scores = await self.judge.ascore([self._conv(prompt, s) for s in steps])
        return [min(0.99, max(0.01, float(s) / 10.0)) for s in scores]

    def score(self, prompt: Any, steps: list[str]) -> list[float]:
        import asyncio

        return asyncio.run(self.ascore(prompt, steps))


def its_hub_algorithm(a: argparse.Namespace, judge_lm: Any) -> Any:
    from its_hub import BestOfN, SelfConsistency
    from its_hub.core.algorithms.beam_search import BeamSearch
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering
    from its_hub.core.algorithms.self_consistency import create_regex_projection_function
    from its_hub.core.lms.step_generation import StepGeneration
    from its_hub.core.reward_models.llm_judge import LLMJudge

    if a.method == "self_consistency":
        return SelfConsistency(create_regex_projection_function(BOXED))
    if a.method == "best_of_n_judge":
        return BestOfN(LLMJudge(judge_lm))
    sg = StepGeneration(max_steps=a.max_steps, step_token="\n\n", stop_token="boxed", temperature=a.temperature,
                        include_stop_str_in_output=False)
    prm = JudgeStepScorer(LLMJudge(judge_lm), a.system_prompt)
    from its_hub.api import AbstractProcessRewardModel

    AbstractProcessRewardModel.register(JudgeStepScorer)
    if a.method == "beam_search_judge":
        return BeamSearch(sg, prm, beam_width=2)
    if a.method == "particle_filtering_judge":
        return ParticleFiltering(sg, prm)
    raise SystemExit(f"unknown its_hub method {a.method!r}")


def run_its_hub(a: argparse.Namespace, pid: str, question: str) -> str:
    from its_hub import OpenAICompatibleLanguageModel

    key = f"sk-{a.label}~{pid}"
    lm = OpenAICompatibleLanguageModel(endpoint=a.base_url, api_key=key, model_name=a.model,
                                       system_prompt=a.system_prompt or None,
                                       max_completion_tokens=a.max_tokens,
                                       temperature=a.temperature)
    judge_lm = OpenAICompatibleLanguageModel(endpoint=a.base_url, api_key=key, model_name=a.model,
                                             max_completion_tokens=256, temperature=0.0)
    out = its_hub_algorithm(a, judge_lm).infer(lm, question, a.budget, return_response_only=True)
    return _content(out)


def run_optillm(a: argparse.Namespace, pid: str, question: str) -> str:
    from openai import OpenAI

    client = OpenAI(api_key=f"sk-{a.label}~{pid}", base_url=a.base_url, timeout=3600, max_retries=0)
    msgs = [{"role": "system", "content": a.system_prompt}] if a.system_prompt else []
    resp = client.chat.completions.create(
        model=f"{a.method}-{a.model}", messages=[*msgs, {"role": "user", "content": question}],
        max_tokens=a.max_tokens, temperature=a.temperature, seed=a.seed)
    return resp.choices[0].message.content or ""


def _content(out: Any) -> str:
    if isinstance(out, dict):
        return str(out.get("content") or "")
    if isinstance(out, str):
        return out
    return str(getattr(out, "content", out))


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    problems = [json.loads(line) for line in Path(a.problems).read_text().splitlines() if line.strip()]
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()}
    todo = [p for p in problems if p["id"] not in done]
    call = run_its_hub if a.family == "its_hub" else run_optillm
    lock = threading.Lock()

    def one(p: dict[str, Any]) -> None:
        t0 = time.monotonic()
        text, err = "", None
        try:
            text = call(a, p["id"], p["question"])
        except Exception as exc:  # a peer failure is a result, reported as what happened
            err = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc(file=sys.stderr)
        row = {"id": p["id"], "text": text, "error": err, "wall_s": round(time.monotonic() - t0, 3)}
        with lock, out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{a.label}] {p['id']} {'ERROR ' + err if err else 'ok'} {row['wall_s']:.1f}s", file=sys.stderr,
              flush=True)

    with ThreadPoolExecutor(max_workers=max(1, a.concurrency)) as pool:
        list(pool.map(one, todo))


if __name__ == "__main__":
    main()
