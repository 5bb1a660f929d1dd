"""End-to-end: the real CLI on the real embedded engine (the tiny SmolLM2-135M model)."""

import json
import subprocess
import sys

import pytest

from ttscale.lab.runner import read_results


@pytest.mark.model
def test_cli_run_embedded_self_consistency_and_report(tmp_path):
    out = tmp_path / "r.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "ttscale.cli", "run", "--model", "smollm2-135m", "--limit", "2",
         "--param", "n=3", "--param", "max_tokens=48", "--engine-param", "n_parallel=4", "--out", str(out),
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "first 2" not in r.stdout  # an explicit --limit is not overridden
    records, _ = read_results(out)
    assert len(records) == 2
    for rec in records:
        assert rec["engine"] == "embedded" and rec["model"] == "smollm2-135m"
        assert len(rec["candidates"]) == 3 and rec["cost"]["generations"] == 3
        assert rec["cost"]["generated_tokens"] == sum(c["completion_tokens"] for c in rec["candidates"])
        assert 0 < rec["cost"]["generated_tokens"] <= 3 * 48
        assert rec["cost"]["prompt_tokens"] > 0 and rec["cost"]["flops"] > 0
        assert rec["correct"] in (True, False)
    rep = subprocess.run([sys.executable, "-m", "ttscale.cli", "report", str(out), "--json"],
                         capture_output=True, text=True, timeout=120)
    row = json.loads(rep.stdout)[0]
    assert row["problems"] == 2 and row["mean_generations"] == 3
