"""The generation cache (ttscale.engines.cache): seeded samples stored once, served again, exact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine, TokenIdEngine
from ttscale.core.types import Completion, GenerationRequest, TokenLogprob
from ttscale.engines.cache import CachingEngine, missing_runs


class SeedEcho:
    """An engine whose sample i of a request seeded s is 's{s+i}' (the embedded engine's rule)."""

    name = "echo"
    model = "m"
    params_count = None
    supports_token_ids = True
    supports_logprobs = True

    def __init__(self, finish: str = "stop") -> None:
        self.calls: list[tuple[int | None, int]] = []
        self.finish = finish
        self.closed = False

    def detokenize(self, ids: object) -> str:
        return "ids"

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        self.calls.append((req.seed, req.n))
        base = req.seed if req.seed is not None else 1000
        return [Completion(text=f"s{base + i}", finish_reason=self.finish, completion_tokens=3, prompt_tokens=5,
                           token_ids=(1, 2, 3), logprobs=(TokenLogprob("a", -0.5, 7, (("a", -0.5), ("b", -1.0))),))
                for i in range(req.n)]

    async def aclose(self) -> None:
        self.closed = True


def req(n: int, seed: int | None = 10, **kw: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": "q"},), n=n, seed=seed, **kw)  # type: ignore[arg-type]


def texts(out: list[Completion]) -> list[str]:
    return [c.text for c in out]


def test_samples_are_shared_across_request_sizes(tmp_path: Path) -> None:
    inner = SeedEcho()
    eng = CachingEngine(inner, tmp_path / "c.sqlite")
    assert isinstance(eng, Engine) and isinstance(eng, TokenIdEngine) and eng.detokenize([1]) == "ids"
    first = asyncio.run(eng.generate(req(4)))
    assert texts(first) == ["s10", "s11", "s12", "s13"] and inner.calls == [(10, 4)]
    assert texts(asyncio.run(eng.generate(req(2)))) == ["s10", "s11"] and len(inner.calls) == 1
    eight = asyncio.run(eng.generate(req(8)))
    assert texts(eight) == [f"s{s}" for s in range(10, 18)]
    assert inner.calls[1:] == [(14, 4)]  # only the missing seeds are generated
    # the seed-12 sample is sample 0 of a request seeded 12
    assert texts(asyncio.run(eng.generate(req(1, seed=12)))) == ["s12"] and len(inner.calls) == 2
    assert eng.stats() == {"hits": 2 + 4 + 1, "misses": 8}
    assert eight[0].logprobs == first[0].logprobs and eight[0].token_ids == (1, 2, 3)
    assert eight[0].completion_tokens == 3 and eight[0].prompt_tokens == 5  # cost stays charged


def test_gaps_become_runs_of_consecutive_seeds(tmp_path: Path) -> None:
    assert missing_runs([None, 1, None, None, 1, None]) == [(0, 1), (2, 2), (5, 1)]
    inner = SeedEcho()
    eng = CachingEngine(inner, tmp_path / "c.sqlite")
    asyncio.run(eng.generate(req(1, seed=11)))
    asyncio.run(eng.generate(req(1, seed=14)))
    out = asyncio.run(eng.generate(req(6, seed=10)))
    assert texts(out) == [f"s{s}" for s in range(10, 16)]
    assert sorted(inner.calls[2:]) == [(10, 1), (12, 2), (15, 1)]


def test_other_settings_miss_and_unseeded_or_monitored_requests_pass_through(tmp_path: Path) -> None:
    inner = SeedEcho()
    eng = CachingEngine(inner, tmp_path / "c.sqlite")
    asyncio.run(eng.generate(req(2)))
    for other in (req(2, temperature=0.2), req(2, max_tokens=9), req(2, stop=("x",)), req(2, prefix="p"),
                  req(2, logprobs=5), GenerationRequest(messages=({"role": "user", "content": "q2"},), n=2, seed=10)):
        asyncio.run(eng.generate(other))
    assert len(inner.calls) == 7
    asyncio.run(eng.generate(req(2, seed=None)))
    asyncio.run(eng.generate(req(2, monitor=lambda toks, text: False)))
    asyncio.run(eng.generate(req(2, monitor=lambda toks, text: False)))
    assert len(inner.calls) == 10 and eng.hits == 0


def test_cut_samples_are_not_stored_and_the_file_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.sqlite"
    cut = SeedEcho(finish="cancelled")
    eng = CachingEngine(cut, path)
    asyncio.run(eng.generate(req(2)))
    asyncio.run(eng.aclose())
    assert cut.closed
    fresh = SeedEcho()
    again = CachingEngine(fresh, path)
    asyncio.run(again.generate(req(2)))
    assert fresh.calls == [(10, 2)]  # nothing was kept from the cancelled samples
    asyncio.run(again.aclose())
    third = SeedEcho()
    reopened = CachingEngine(third, path)
    assert texts(asyncio.run(reopened.generate(req(2)))) == ["s10", "s11"] and third.calls == []


def test_a_bad_cache_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "notsqlite"
    bad.write_text("x" * 200)
    with pytest.raises(ConfigError, match="notsqlite"):
        CachingEngine(SeedEcho(), bad)


def test_strategies_share_samples_through_the_cli(tmp_path: Path) -> None:
    """best_of_n after self_consistency on the same seed reuses all its samples: same answers, no new
    generation, and the reuse is reported."""
    from typer.testing import CliRunner

    from ttscale.cli import app

    script = tmp_path / "script.json"
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"{i}+2?", "answer": str(i + 2)}) + "\n"
                            for i in range(3)))
    script.write_text(json.dumps({f"p{i}": [f"so \\boxed{{{i + 2}}}", "so \\boxed{9}", f"it is \\boxed{{{i + 2}}}"]
                                  for i in range(3)}))
    cache = tmp_path / "gen.sqlite"
    common = ["run", "--engine", "scripted", "--model", str(script), "--dataset", str(data), "--cache", str(cache),
              "--no-progress", "-p", "n=4"]
    r1 = CliRunner().invoke(app, [*common, "--strategy", "self_consistency", "--out", str(tmp_path / "a.jsonl")])
    assert r1.exit_code == 0, r1.output
    assert "generation cache" not in r1.output
    r2 = CliRunner().invoke(app, [*common, "--strategy", "best_of_n",
                                  "--out", str(tmp_path / "b.jsonl")])
    assert r2.exit_code == 0, r2.output
    assert "generation cache: 12 samples reused" in r2.output
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [[c["text"] for c in x["candidates"]] for x in a] == [[c["text"] for c in x["candidates"]] for x in b]
    assert [x["cost"]["generated_tokens"] for x in a] == [x["cost"]["generated_tokens"] for x in b]
