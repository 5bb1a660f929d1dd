"""bench/peers.py pieces that need neither a model nor a peer: the token meter in front of a
scripted ``ttscale serve``, and the frontier / RESULT computation."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx
import openai
import pytest

from ttscale.core.types import Problem
from ttscale.datasets import Dataset
from ttscale.engines.scripted import ScriptedEngine
from ttscale.serve import ServeConfig, create_app
from ttscale.serve.command import serve_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers
from peers import Spec, run_peer, run_ttscale
from peers_report import Point, markdown_table, pareto, summarise, verdict, wilson
from token_meter import Meter, meter_app

MODEL = "tiny-upstream"


def _script(req, k):  # type: ignore[no-untyped-def]
    return f"reply {k} to: {req.messages[-1]['content']}"


def test_meter_charges_each_key_what_the_upstream_served() -> None:
    meter = Meter()
    app = create_app(ServeConfig(), engine=ScriptedEngine(_script, model=MODEL))
    with serve_in_thread(app) as upstream, serve_in_thread(meter_app(upstream, meter=meter)) as url:
        a = openai.OpenAI(base_url=url, api_key="sk-a~1", max_retries=0)
        r = a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "say hello"}], n=2,
                                      max_tokens=3)
        assert [c.message.content for c in r.choices] == ["reply 0 to:", "reply 1 to:"]
        assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 6)
        b = openai.OpenAI(base_url=url, api_key="sk-b~1", max_retries=0)
        for _ in range(2):
            b.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "say hello"}], max_tokens=2)
        # a client named by path, and a streamed call that did not ask for usage
        c = openai.OpenAI(base_url=url.replace("/v1", "/c/judge/v1"), api_key="ignored", max_retries=0)
        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "say hello"}],
                                                max_tokens=3, stream=True))
        assert all(ch.usage is None for ch in chunks)  # the usage chunk the meter asked for is not passed on
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "reply 0 to:"
        # a bad request is counted as an error, without tokens
        bad = httpx.post(f"{url}/chat/completions", json={"model": MODEL, "messages": "nope"},
                         headers={"Authorization": "Bearer sk-bad"})
        assert bad.status_code == 400
        counts = httpx.get(url.removesuffix("/v1") + "/meter").json()
    assert meter.tally("sk-a~1").prompt_tokens == 2 and meter.tally("sk-a~1").completion_tokens == 6
    assert (meter.tally("sk-b~1").requests, meter.tally("sk-b~1").total_tokens) == (2, 2 * (2 + 2))
    assert (meter.tally("judge").prompt_tokens, meter.tally("judge").completion_tokens) == (2, 3)
    assert (meter.tally("sk-bad").errors, meter.tally("sk-bad").total_tokens) == (1, 0)
    assert meter.tally("nobody").requests == 0
    assert counts["sk-a~1"]["completion_tokens"] == 6 and set(counts) == {"sk-a~1", "sk-b~1", "judge", "sk-bad"}


def _pt(label: str, family: str, correct: int, tokens: float, errors: int = 0, n: int = 10) -> Point:
    return Point(label, family, 4, n, correct, errors, tokens, 1.0)


def test_verdict_counts_dominated_peer_points_and_the_token_ratio() -> None:
    points = [
        _pt("ttscale:sc@4", "ttscale", 5, 1000),
        _pt("ttscale:adaptive@8", "ttscale", 7, 1500),
        _pt("its_hub:sc@4", "its_hub", 5, 1200),   # beaten: 5/10 at 1000 <= 1200
        _pt("optillm:bon@4", "optillm", 6, 1400),  # not: 7/10 needs 1500 > 1400
        _pt("optillm:moa@3", "optillm", 6, 3000),  # beaten by adaptive@8
        _pt("its_hub:pf@4", "its_hub", 0, 0, errors=10),  # failed everywhere: not compared
    ]
    v = verdict(points)
    assert (v.wins, v.compared) == (2, 3)
    assert v.lost_to == ("optillm:bon@4",)
    assert (v.best_ttscale_acc, v.best_peer_acc) == (0.7, 0.6)
    assert v.tokens_ratio == pytest.approx(1500 / 1400)  # cheapest ttscale >= 0.6 over cheapest peer at 0.6
    assert v.result_line() == ("RESULT frontier_wins=2/3 best_ttscale_acc=0.700 best_peer_acc=0.600 "
                               "tokens_ratio_at_best_peer_acc=1.071")
    # no ttscale point reaches the best peer accuracy: the ratio is 'none'
    v2 = verdict([_pt("ttscale:sc@4", "ttscale", 3, 100), _pt("optillm:bon@4", "optillm", 6, 1400)])
    assert (v2.wins, v2.compared, v2.tokens_ratio) == (0, 1, None)
    assert v2.result_line().endswith("tokens_ratio_at_best_peer_acc=none")
    assert verdict([]).result_line() == ("RESULT frontier_wins=0/0 best_ttscale_acc=none best_peer_acc=none "
                                         "tokens_ratio_at_best_peer_acc=none")


def test_summarise_counts_errors_as_wrong_and_averages_tokens() -> None:
    rows = [
        {"id": "a", "correct": True, "prompt_tokens": 100, "completion_tokens": 50},
        {"id": "b", "correct": False, "prompt_tokens": 80, "completion_tokens": 20},
        {"id": "c", "correct": None, "error": "APIError: boom", "prompt_tokens": 0, "completion_tokens": 0},
    ]
    p = summarise("its_hub:sc@4", "its_hub", 4, rows, 12.5, ["note"])
    assert (p.problems, p.correct, p.errors, p.tokens, p.accuracy) == (3, 1, 1, 250 / 3, pytest.approx(1 / 3))
    assert not p.failed and not p.is_ttscale
    lo, hi = wilson(1, 3)
    assert lo == pytest.approx(0.0615, abs=1e-3) and hi == pytest.approx(0.7923, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    table = markdown_table([p, _pt("its_hub:pf@4", "its_hub", 0, 0, errors=10)])
    assert "| its_hub:sc@4 | 4 | 0.333 [0.06, 0.79] (1/3) | 83 | 12 | 1/3 | note |" in table
    assert "| its_hub:pf@4 | 4 | failed |" in table


def test_pareto_keeps_only_undominated_points_by_tokens() -> None:
    pts = [_pt("a", "ttscale", 5, 100), _pt("b", "ttscale", 4, 200), _pt("c", "ttscale", 7, 300),
           _pt("d", "ttscale", 7, 400), _pt("e", "ttscale", 8, 50)]
    assert [p.label for p in pareto(pts)] == ["e"]
    pts = pts[:4]
    assert [p.label for p in pareto(pts)] == ["a", "c"]
    assert json.dumps([p.label for p in pareto([])]) == "[]"


def test_run_ttscale_charges_each_problem_its_endpoint_tokens_and_grades_it() -> None:
    """ttscale's side of the bench, through the meter on a scripted upstream: every problem gets
    one row with the graded answer and exactly the tokens the endpoint served for its key."""
    meter = Meter()
    app = create_app(ServeConfig(), engine=ScriptedEngine(lambda req, k: "so \\boxed{7}", model=MODEL))
    problems = (Problem(id="p1", prompt="3 + 4 = ?", answer="7"), Problem(id="p2", prompt="4 + 4 = ?", answer="8"))
    ds = Dataset(name="tiny", problems=problems)
    rows: list[dict] = []
    with serve_in_thread(app) as upstream, serve_in_thread(meter_app(upstream, meter=meter)) as url:
        ep = argparse.Namespace(url=url, model=MODEL,
                                tokens=lambda key: (meter.tally(key).prompt_tokens, meter.tally(key).completion_tokens))
        spec = Spec("ttscale", "self_consistency", 2,
                    {"strategy": "self_consistency", "n": 2, "max_tokens": 8, "temperature": 0.7})
        asyncio.run(run_ttscale(spec, list(problems), ds, ep, argparse.Namespace(concurrency=2, seed=0),  # type: ignore[arg-type]
                                set(), rows.append))
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"p1", "p2"}
    assert [by_id[i]["error"] for i in ("p1", "p2")] == [None, None]
    assert (by_id["p1"]["correct"], by_id["p2"]["correct"]) == (True, False)
    for pid in ("p1", "p2"):
        served = meter.tally(f"sk-{spec.key}~{pid}")
        assert served.requests >= 1 and served.completion_tokens == 2 * 2  # n=2 replies of 2 words
        assert (by_id[pid]["prompt_tokens"], by_id[pid]["completion_tokens"]) == (served.prompt_tokens, 4)


FAKE_WORKER = """#!{python}
# stands in for the venv's python running peers_worker.py: answers the problems in its list one by
# one (the answer is the problem's index), and kills itself after KILL_AFTER of them
import json, os, signal, sys, time
argv = sys.argv
problems = [json.loads(x) for x in open(argv[argv.index("--problems") + 1]) if x.strip()]
out = argv[argv.index("--out") + 1]
for i, p in enumerate(problems):
    if i == int(os.environ.get("KILL_AFTER", "99")):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    with open(out, "a") as fh:
        fh.write(json.dumps({{"id": p["id"], "text": "\\\\boxed{{" + p["id"][1:] + "}}", "error": None, "wall_s": 1.5}}) + "\\n")
    time.sleep(0.2)
"""


def test_run_peer_saves_each_finished_problem_so_a_killed_worker_resumes(tmp_path, monkeypatch) -> None:
    """A peer worker killed mid-way keeps the problems it finished (graded, with their endpoint
    tokens); the rerun gives the worker only the rest."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_WORKER.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setattr(peers, "POLL_S", 0.05)
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", answer="1") for i in range(1, 4)]
    ds = Dataset(name="tiny", problems=tuple(problems))
    ep = argparse.Namespace(url="http://127.0.0.1:9/v1", model=MODEL,
                            tokens=lambda key: (10 * int(key[-1]), int(key[-1])))
    a = argparse.Namespace(max_tokens=8, temperature=0.7, seed=0, concurrency=1)
    spec = Spec("its_hub", "self_consistency", 2)
    rows: list[dict] = []
    monkeypatch.setenv("KILL_AFTER", "2")
    with pytest.raises(RuntimeError, match="killed by signal 9 after 2 of 3"):
        asyncio.run(run_peer(spec, problems, ds, ep, a, set(), rows.append, fake, None, tmp_path))  # type: ignore[arg-type]
    assert [(r["id"], r["correct"], r["prompt_tokens"], r["completion_tokens"], r["wall_s"]) for r in rows] == [
        ("p1", True, 10, 1, 1.5), ("p2", False, 20, 2, 1.5)]
    monkeypatch.delenv("KILL_AFTER")
    asyncio.run(run_peer(spec, problems, ds, ep, a, {"p1", "p2"}, rows.append, fake, None, tmp_path))  # type: ignore[arg-type]
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"] and rows[2]["error"] is None
    assert [json.loads(x)["id"] for x in (tmp_path / f"{spec.key}.problems.jsonl").read_text().splitlines()] == ["p3"]
    # the peer's replies from both segments stay on disk, each once
    assert [json.loads(x)["id"] for x in (tmp_path / f"{spec.key}.raw.jsonl").read_text().splitlines()] == [
        "p1", "p2", "p3"]


def test_plot_keeps_crowded_labels_apart(tmp_path: Path) -> None:
    from peers_report import plot

    # four methods at one accuracy within a few tokens of one another: the labels start on top of each other
    pts = [Point(f"{fam}:method_{i}@4", fam, 4, 60, 20, 0, 1000.0 + 5 * i, 1.0)
           for i, fam in enumerate(["ttscale", "its_hub", "optillm", "ttscale"])]
    pts.append(Point("ttscale:single@1", "ttscale", 1, 60, 18, 0, 200.0, 1.0))
    out = tmp_path / "peers.png"
    boxes = plot(pts, str(out), "crowded")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(boxes) == len(pts)

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    clashes = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if overlap(boxes[i], boxes[j])]
    assert clashes == []
