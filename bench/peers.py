"""Side by side with the peers: ttscale vs its_hub and optillm on the same model, problems and grader.

One endpoint serves everyone: ``ttscale serve`` in pass-through mode on the embedded llama.cpp model
(loopback), behind a counting pass-through (``bench/token_meter.py``) that charges every prompt and
generated token it serves to the API key of the call. Each method calls with the key
``sk-<method>~<problem id>``, so a peer's internal calls (judges, step generation, ratings) are
charged even though the peer reports no usage. ttscale's strategies reach the endpoint through its
``openai`` engine, exactly like the peers.

The peers run through their public APIs, pinned (``its-hub[lm]==1.2.0``, ``optillm==0.4.0``), in
their own virtual environment (``--venv``, created and filled on first use; never a ttscale
dependency) by ``bench/peers_worker.py``; optillm as its proxy (one per configuration) whose
approaches are chosen by model-name prefix. Every answer text is graded by ttscale: the final
answer is extracted by ``MathAnswers`` and graded by the dataset's grader.

Results go to ``--out-dir`` as one ``<method>.jsonl`` (one row per problem) and ``<method>.meta.json``
per method; a finished method is not rerun, so the bench resumes where it stopped.

Usage: python bench/peers.py --dataset rg:leg_counting --limit 60 [--model qwen2.5-coder-0.5b]
       [--budgets 4,8] [--methods LABEL,...] [--max-tokens 320] [--doc docs/peers.md]
Ends with: RESULT frontier_wins=<k>/<m> best_ttscale_acc=<a> best_peer_acc=<b> tokens_ratio_at_best_peer_acc=<r>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from peers_report import Point, markdown_table, plot, summarise, verdict
from token_meter import Meter, meter_app

from ttscale.core.io import read_jsonl, slug
from ttscale.core.types import Problem
from ttscale.datasets import Dataset, load_dataset, make_grader
from ttscale.lab.runner import DEFAULT_SYSTEM_PROMPT
from ttscale.verifiers.math_answers import MathAnswers

HERE = Path(__file__).resolve().parent
PEER_PINS = ("its-hub[lm]==1.2.0", "optillm==0.4.0")
DEFAULT_VENV = Path.home() / ".cache" / "ttscale" / "peers-venv"
POLL_S = 5.0  # how often a running peer worker's finished problems are saved
MAX_STEPS = 8  # step-search rounds, for ttscale's and its_hub's beam search / particle filtering


@dataclass(frozen=True)
class Spec:
    """One method at one budget. ``params`` are the ttscale strategy's or the peer's options."""

    family: str
    method: str
    budget: int
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.family}:{self.method}@{self.budget}"

    @property
    def key(self) -> str:
        return slug(f"{self.family}-{self.method}-{self.budget}")


def method_specs(budgets: list[int], max_tokens: int, temperature: float) -> list[Spec]:
    """Every method the bench knows, at every budget (peers' fixed-budget approaches once)."""
    gen = {"max_tokens": max_tokens, "temperature": temperature}
    specs = [Spec("ttscale", "single", 1, {"strategy": "self_consistency", "n": 1, **gen}, "pass@1 reference")]
    for n in budgets:
        specs += [
            Spec("ttscale", "self_consistency", n, {"strategy": "self_consistency", "n": n, **gen}),
            Spec("ttscale", "best_of_n_judge", n, {"strategy": "best_of_n", "n": n, "verifier": "llm_judge", **gen}),
            Spec("ttscale", "adaptive_consistency", n,
                 {"strategy": "adaptive_consistency", "max_samples": n, "batch": 2, **gen}, "adaptive stopping"),
            Spec("ttscale", "weighted_confidence", n,
                 {"strategy": "weighted_best_of_n", "n": n, "verifier": "confidence", "logprobs": 20, **gen},
                 "weighted best-of-N, confidence weights"),
            Spec("ttscale", "beam_search_judge", n,
                 {"strategy": "beam_search", "n": n, "beam_width": 2, "verifier": "llm_judge", "max_steps": MAX_STEPS,
                  "max_step_tokens": max_tokens // 2, "max_tokens": max_tokens, "temperature": temperature}),
            Spec("its_hub", "self_consistency", n),
            Spec("its_hub", "best_of_n_judge", n, note="BestOfN + LLMJudge"),
            Spec("its_hub", "beam_search_judge", n,
                 note="BeamSearch(width 2); PRM = LLMJudge through its PRM interface (no vLLM PRM here)"),
            Spec("its_hub", "particle_filtering_judge", n,
                 note="ParticleFiltering; PRM = LLMJudge through its PRM interface (no vLLM PRM here)"),
            Spec("optillm", "bon", n, {"proxy_args": ["--best-of-n", str(n)]}, "optillm bon, --best-of-n"),
        ]
    specs += [
        Spec("optillm", "self_consistency", 5, note="optillm self_consistency: 5 samples, fixed"),
        Spec("optillm", "moa", 3, note="optillm moa: 3 candidates + critique + final, fixed"),
    ]
    return specs


# ----------------------------------------------------------------------------------------------------
# environment and endpoint


def setup_venv(venv: Path) -> Path:
    """The peers' virtual environment (system site packages visible, peers pinned inside it)."""
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    check = ("import importlib.metadata as m, its_hub.core.lms.openai_lm, optillm; "
             "print(m.version('its-hub'), m.version('optillm'))")
    have = subprocess.run([str(py), "-c", check], capture_output=True, text=True)
    if have.returncode != 0 or have.stdout.split() != ["1.2.0", "0.4.0"]:
        print(f"installing {' '.join(PEER_PINS)} into {venv} (a few minutes the first time)", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Endpoint:
    """``ttscale serve`` (pass-through, embedded model) behind the token meter, both on loopback."""

    def __init__(self, a: argparse.Namespace) -> None:
        from contextlib import ExitStack

        from ttscale.serve.app import create_app
        from ttscale.serve.command import serve_in_thread
        from ttscale.serve.config import ServeConfig

        self.meter = Meter()
        eparams: dict[str, Any] = {"n_parallel": a.n_parallel}
        if a.threads:
            eparams["threads"] = a.threads
        cfg = ServeConfig(engine="embedded", model=a.model, engine_params=eparams, default_max_tokens=a.max_tokens,
                          max_concurrency=4096, timeout_s=7200, seed=a.seed, log_level="warning")
        self._stack = ExitStack()
        upstream = self._stack.enter_context(serve_in_thread(create_app(cfg), startup_timeout_s=600))
        self.url = self._stack.enter_context(serve_in_thread(meter_app(upstream, meter=self.meter)))
        models = httpx.get(f"{upstream}/models", timeout=60).json()["data"]
        self.model = models[0]["id"]

    def tokens(self, key: str) -> tuple[int, int]:
        t = self.meter.tally(key)
        return t.prompt_tokens, t.completion_tokens

    def close(self) -> None:
        self._stack.close()


# ----------------------------------------------------------------------------------------------------
# running one method


async def run_ttscale(spec: Spec, problems: list[Problem], ds: Dataset, ep: Endpoint, a: argparse.Namespace,
                      done: set[str], write: Any) -> None:
    from ttscale.core.plugins import make_engine
    from ttscale.lab.runner import Runner
    from ttscale.verifiers import make_verifier

    grader = make_grader(ds)
    params = {k: v for k, v in spec.params.items() if k != "strategy"}
    sem = asyncio.Semaphore(a.concurrency)

    async def one(p: Problem) -> None:
        key = f"sk-{spec.key}~{p.id}"
        async with sem:
            eng = make_engine("openai", ep.model, {"base_url": ep.url, "api_key": key, "max_retries": 2,
                                                   "read_timeout_s": 3600.0, "deadline_s": 0.0})
            t0 = time.monotonic()
            try:
                runner = Runner(engine=eng, strategy=spec.params["strategy"], params=params, answers=MathAnswers(),
                                grader=grader, seed=a.seed, system_prompt=DEFAULT_SYSTEM_PROMPT, progress=False,
                                make_verifier=lambda n: make_verifier(n, eng))
                res = await runner.solve(p)
                row = {"id": p.id, "answer": res.answer, "correct": res.correct, "error": None}
            except Exception as exc:  # reported, not hidden
                row = {"id": p.id, "answer": None, "correct": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
            finally:
                await eng.aclose()
        pt, ct = ep.tokens(key)
        write({**row, "prompt_tokens": pt, "completion_tokens": ct, "wall_s": round(time.monotonic() - t0, 3)})

    await asyncio.gather(*(one(p) for p in problems if p.id not in done))


class OptillmProxies:
    """One optillm proxy per distinct set of proxy flags, started on demand, stopped at the end."""

    def __init__(self, venv_py: Path, upstream: str, log_dir: Path) -> None:
        self.bin = venv_py.parent / "optillm"
        self.upstream = upstream
        self.log_dir = log_dir
        self.procs: dict[tuple[str, ...], tuple[subprocess.Popen[bytes], str]] = {}

    def url(self, args: list[str]) -> str:
        key = tuple(args)
        if key in self.procs:
            return self.procs[key][1]
        port = free_port()
        env = {**os.environ, "OPENAI_API_KEY": "sk-optillm-proxy"}
        log = (self.log_dir / f"optillm-{port}.log").open("wb")
        proc = subprocess.Popen([str(self.bin), "--base-url", self.upstream, "--port", str(port),
                                 "--host", "127.0.0.1", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"optillm proxy exited with {proc.returncode}; see {log.name}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(1)
        self.procs[key] = (proc, url)
        return url

    def close(self) -> None:
        for proc, _ in self.procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def run_peer(spec: Spec, problems: list[Problem], ds: Dataset, ep: Endpoint, a: argparse.Namespace,
                   done: set[str], write: Any, venv_py: Path, proxies: OptillmProxies, work: Path) -> None:
    todo = [p for p in problems if p.id not in done]
    if not todo:
        return
    pfile = work / f"{spec.key}.problems.jsonl"
    pfile.write_text("".join(json.dumps({"id": p.id, "question": p.prompt or p.messages[-1]["content"]}) + "\n"
                             for p in todo))
    raw = work / f"{spec.key}.raw.jsonl"  # appended across reruns: earlier segments' replies are kept
    try:
        base = proxies.url(list(spec.params.get("proxy_args", []))) if spec.family == "optillm" else ep.url
    except RuntimeError as exc:
        for p in todo:
            write({"id": p.id, "answer": None, "correct": False, "error": str(exc), "prompt_tokens": 0,
                   "completion_tokens": 0, "wall_s": 0.0})
        return
    cmd = [str(venv_py), str(HERE / "peers_worker.py"), spec.family, spec.method, "--budget", str(spec.budget),
           "--label", spec.key, "--base-url", base, "--model", ep.model, "--problems", str(pfile), "--out", str(raw),
           "--system-prompt", DEFAULT_SYSTEM_PROMPT, "--max-tokens", str(a.max_tokens),
           "--temperature", str(a.temperature), "--seed", str(a.seed), "--concurrency", str(a.concurrency),
           "--max-steps", str(MAX_STEPS)]
    grader, answers = make_grader(ds), MathAnswers()
    by_id = {p.id: p for p in todo}
    saved: set[str] = set()

    async def save(r: dict[str, Any]) -> None:
        """One finished problem: grade it and charge it the endpoint's count for its key (final, since
        the worker writes a problem's line only after all of its calls have returned)."""
        p = by_id[r["id"]]
        ans = answers.extract(r.get("text") or "")
        correct = await grader.grade(p, ans)
        pt, ct = ep.tokens(f"sk-{spec.key}~{p.id}")
        write({"id": p.id, "answer": ans, "correct": bool(correct), "error": r.get("error"), "prompt_tokens": pt,
               "completion_tokens": ct, "wall_s": r.get("wall_s", 0)})
        saved.add(p.id)

    async def ingest() -> None:
        for r in finished_lines(raw):
            if r.get("id") in by_id and r["id"] not in saved:
                await save(r)

    with (work / f"{spec.key}.worker.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log)
        try:
            while True:  # save problems as the worker finishes them, so that a stopped run keeps them
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=POLL_S)
                    break
                except TimeoutError:
                    await ingest()
        finally:
            if proc.returncode is None:  # the bench itself is stopping: do not leave the worker behind
                proc.kill()
                await proc.wait()
    await ingest()
    if proc.returncode is not None and proc.returncode < 0:  # stopped from outside: rerun to resume the rest
        raise RuntimeError(f"{spec.label}: worker killed by signal {-proc.returncode} after {len(saved)} of "
                           f"{len(todo)} problems; rerun to resume")
    for p in todo:
        if p.id not in saved:
            await save({"id": p.id, "text": "", "error": f"worker exited {proc.returncode} without an answer",
                        "wall_s": 0})


def finished_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file another process is still appending to (a last line without
    its newline is being written and is left for the next read)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


async def run_method(spec: Spec, problems: list[Problem], ds: Dataset, ep: Endpoint, a: argparse.Namespace,
                     ctx: dict[str, Any]) -> Point | None:
    """Run (or resume) one method; its point from the rows on disk (None: unfinished, report only)."""
    out_dir: Path = ctx["out_dir"]
    rows_path, meta_path = out_dir / f"{spec.key}.jsonl", out_dir / f"{spec.key}.meta.json"
    wanted = {p.id for p in problems}
    rows = [r for r in read_jsonl(rows_path) if r["id"] in wanted] if rows_path.exists() else []
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"wall_s": 0.0}
    done = {r["id"] for r in rows}
    if len(done) < len(wanted) and a.report_only:
        return None
    if len(done) < len(wanted):
        print(f"== {spec.label}: {len(wanted) - len(done)} problems", file=sys.stderr, flush=True)
        fh = rows_path.open("a")

        def write(row: dict[str, Any]) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows.append(row)

        t0 = time.monotonic()
        try:
            if spec.family == "ttscale":
                await run_ttscale(spec, problems, ds, ep, a, done, write)
            else:
                await run_peer(spec, problems, ds, ep, a, done, write, ctx["venv_py"], ctx["proxies"], out_dir)
        finally:
            fh.close()
            meta["wall_s"] = float(meta["wall_s"]) + time.monotonic() - t0
            meta_path.write_text(json.dumps({**meta, "label": spec.label, "note": spec.note}, indent=1))
    notes = [spec.note] if spec.note else []
    errs = sorted({str(r["error"]).split("\n")[0][:120] for r in rows if r.get("error")})
    notes += [f"error: {e}" for e in errs[:2]]
    point = summarise(spec.label, spec.family, spec.budget, rows, float(meta["wall_s"]), notes)
    print(f"   {spec.label}: acc={point.accuracy:.3f} tokens/problem={point.tokens:,.0f} "
          f"wall={point.wall_s:,.0f}s errors={point.errors}", file=sys.stderr, flush=True)
    return point


def select(specs: list[Spec], wanted: str | None) -> list[Spec]:
    """``--methods``: comma-separated labels or label prefixes (``its_hub:``, ``ttscale:single``)."""
    if not wanted:
        return specs
    keys = [w.strip() for w in wanted.split(",") if w.strip()]
    chosen: list[Spec] = []
    for k in keys:  # in the order given (so that a short run does the most telling methods first)
        chosen += [s for s in specs if (s.label == k or s.label.startswith(k)) and s not in chosen]
    if not chosen:
        raise SystemExit(f"--methods {wanted!r} matches none of: {', '.join(s.label for s in specs)}")
    return chosen


def write_doc(path: Path, a: argparse.Namespace, ds: Dataset, model: str, points: list[Point], result: str,
              figure: Path, unfinished: list[str]) -> None:
    cmd = (f"python bench/peers.py --dataset {a.dataset} --limit {a.limit} --seed {a.seed} --model {a.model} "
           f"--budgets {a.budgets} --max-tokens {a.max_tokens} --temperature {a.temperature} "
           f"--concurrency {a.concurrency}" + (f" --methods {a.methods}" if a.methods else "") + f" --doc {path}")
    lost = verdict(points).lost_to
    text = DOC.format(dataset=ds.name, n=len(ds.problems), model=model, max_tokens=a.max_tokens,
                      temperature=a.temperature, seed=a.seed, budgets=a.budgets, concurrency=a.concurrency,
                      table=markdown_table(points), result=result, figure=figure.name, command=cmd,
                      lost=", ".join(lost) if lost else "none", reduced=a.reduced_note or "",
                      unfinished=", ".join(unfinished) if unfinished else "none")
    path.write_text(text)


DOC = """# ttscale side by side with its_hub and optillm

{reduced}

Same model, problems, grader and endpoint for everyone: `{model}` (embedded llama.cpp, served on loopback
by `ttscale serve` in pass-through mode behind a token-counting pass-through), {n} problems of
`{dataset}`, max tokens {max_tokens}, temperature {temperature}, seed {seed}, budgets {budgets},
{concurrency} problems in flight per method. Every answer is graded by ttscale (`MathAnswers` extracts
the final answer, the dataset's grader checks it). *Endpoint tokens* are the prompt + generated tokens
the endpoint served for the method's calls (counted per call by API key, so a peer's internal judge,
rating and step calls are charged even when the peer reports no usage).

{table}

*Wall time*: seconds to finish the method's problems with `--concurrency` problems in flight, summed
over the sessions that ran it (a killed session's time is lost, so a resumed method can show less).

![accuracy vs endpoint tokens]({figure})

```
{result}
```

Peer points that no ttscale point matches (>= accuracy with <= tokens): {lost}.
Methods not finished in this run (left out of the table): {unfinished}.

## How ttscale was run

- Through its `openai` engine on the same endpoint, one API key per problem, with the same system
  prompt, max tokens and temperature. `self_consistency`: N samples, majority over equivalent answers.
  `best_of_n_judge`: N samples, the highest `llm_judge` P(yes) wins (the judge is the same model, one
  1-token call with logprobs per sample). `weighted_confidence`: N samples with top-20 logprobs, votes
  weighted by the `confidence` verifier (no extra calls). `beam_search_judge`: step-level beam search
  (width 2, steps at a blank line) with `llm_judge` scoring each new step.
- `adaptive_consistency`: Adaptive-Consistency's Beta rule (threshold 0.95) with at most N samples in
  waves of 2. At N = 4 the Beta rule cannot fire (it needs 4 unanimous votes), so what saves tokens is
  its cap-aware stop: once the samples left cannot change the majority (2 agreeing samples of 4, ties
  going to the answer seen first) it stops, with the answer that all N samples would have given.

## How the peers were run

- **its_hub 1.2.0** (`its-hub[lm]`, its own venv): `OpenAICompatibleLanguageModel` on the endpoint
  (system prompt as its `system_prompt`, `max_tokens`, `temperature`); `SelfConsistency` with its
  documented regex projection on `\\boxed{{...}}`; `BestOfN(LLMJudge(judge_lm))` (judge at temperature 0,
  256 tokens, its default prompt and JSON response format); `BeamSearch(StepGeneration(...), prm,
  beam_width=2)` and `ParticleFiltering(StepGeneration(...), prm)` with steps split at a blank line.
  Its shipped process reward model (`LocalVllmProcessRewardModel`) needs vLLM and a PRM checkpoint,
  which this CPU box cannot host; the closest configuration it supports is a PRM object of its own
  interface that scores the partial solution with its `LLMJudge` (0-10 mapped to (0, 1)).
- **optillm 0.4.0** (same venv): its proxy (`optillm --base-url <endpoint>`), one per configuration;
  the approach is the model-name prefix (`bon-<model>`, `self_consistency-<model>`, `moa-<model>`).
  `bon`'s N is the proxy's `--best-of-n`; `self_consistency` (5 samples) and `moa` (3 candidates)
  have fixed budgets. optillm samples its candidates at its own temperatures (1.0, rating 0.1), as
  its code intends; the request's `max_tokens` is passed on.
- Peers' code is not patched; a peer failure is the row's error, counted as a wrong answer.

## Reproduce

```
{command}
```

Results are resumable (`--out-dir`, one `<method>.jsonl` + `.meta.json` each); rerunning the same command
skips finished methods and finished problems (a peer's problem is saved, with its endpoint tokens, as
soon as its worker reports it). `--methods` picks methods by label prefix, in the order given.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="rg:leg_counting", help="dataset spec (a file, default, rg:TASK, ...)")
    ap.add_argument("--limit", type=int, default=60, help="problems")
    ap.add_argument("--seed", type=int, default=0, help="dataset and sampling seed")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="embedded model (smollm2-135m: quick)")
    ap.add_argument("--budgets", default="4,8", help="comma-separated sample budgets N")
    ap.add_argument("--methods", default=None, help="comma-separated method labels or prefixes (default: all)")
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--concurrency", type=int, default=4, help="problems in flight per method")
    ap.add_argument("--n-parallel", type=int, default=8, help="llama.cpp slots")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp CPU threads (0 = default)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peers' virtual environment")
    ap.add_argument("--out-dir", type=Path, default=None, help="results (default runs/peers/<dataset>-<model>)")
    ap.add_argument("--doc", type=Path, default=None, help="write the report here (e.g. docs/peers.md)")
    ap.add_argument("--reduced-note", default=None, help="a line for the top of the report")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: report the finished methods in --out-dir (unfinished ones are left out)")
    return ap.parse_args(argv)


async def amain(a: argparse.Namespace) -> str:
    budgets = [int(b) for b in a.budgets.split(",") if b.strip()]
    specs = select(method_specs(budgets, a.max_tokens, a.temperature), a.methods)
    size = max(50, a.limit) if a.dataset.lower().startswith("rg:") else None  # rg:TASK generates 50 by default
    ds = load_dataset(a.dataset, limit=a.limit, seed=a.seed, size=size)
    if len(ds.problems) < a.limit:
        raise SystemExit(f"{a.dataset} has {len(ds.problems)} problems, fewer than --limit {a.limit}")
    out_dir = a.out_dir or Path("runs") / "peers" / slug(f"{ds.name}-{a.model}-t{a.max_tokens}")
    out_dir.mkdir(parents=True, exist_ok=True)
    peers = any(s.family != "ttscale" for s in specs) and not a.report_only
    venv_py = setup_venv(a.venv) if peers else Path(sys.executable)
    ep: Any = None if a.report_only else Endpoint(a)
    proxies = OptillmProxies(venv_py, ep.url if ep else "", out_dir)
    ctx = {"out_dir": out_dir, "venv_py": venv_py, "proxies": proxies}
    points, unfinished = [], []
    try:
        for spec in specs:
            point = await run_method(spec, list(ds.problems), ds, ep, a, ctx)
            if point is None:
                unfinished.append(spec.label)
            else:
                points.append(point)
    finally:
        proxies.close()
        if ep is not None:
            ep.close()
    if unfinished:
        print(f"not finished (left out): {', '.join(unfinished)}", file=sys.stderr)
    result = verdict(points).result_line()
    print(markdown_table(points))
    figure = (a.doc.parent if a.doc else out_dir) / "peers.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot(points, str(figure), f"{ds.name}, {len(ds.problems)} problems, {a.model}")
    if a.doc:
        write_doc(a.doc, a, ds, a.model, points, result, figure, unfinished)
    return result


def main(argv: list[str] | None = None) -> None:
    result = asyncio.run(amain(parse_args(argv)))
    print(result)


if __name__ == "__main__":
    main()
