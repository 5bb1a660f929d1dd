"""``ttscale view``: the data endpoints (FastAPI TestClient) on real results files made with the
scripted engine (tests/view_fixtures.py), a sweep table and folder, the live refresh, the export,
and bad input on the command line."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ttscale.core.errors import ConfigError
from ttscale.lab.sweep import run_row, write_table
from ttscale.view.app import create_app, export_html
from ttscale.view.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]
BEAM = ROOT / "tests" / "fixtures" / "beam_search.jsonl"
ADAPTIVE = ROOT / "tests" / "fixtures" / "adaptive.jsonl"
TABLE = ROOT / "docs" / "lab" / "embedded-gsm-table.jsonl"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def client(*paths) -> TestClient:
    return TestClient(create_app(Catalog(list(paths))))


def test_fixtures_are_what_the_generator_makes(tmp_path):
    from view_fixtures import make_adaptive_results, make_beam_results

    assert make_beam_results(tmp_path / "b.jsonl").read_text() == BEAM.read_text()
    assert make_adaptive_results(tmp_path / "a.jsonl").read_text() == ADAPTIVE.read_text()


def test_run_summary_and_problem_rows():
    c = client(BEAM)
    ix = c.get("/api/index").json()
    assert [r["id"] for r in ix["runs"]] == ["r1"] and ix["sweeps"] == []
    s = c.get("/api/runs/r1").json()
    assert (s["strategy"], s["problems"], s["graded"], s["correct"]) == ("beam_search", 3, 3, 2)
    assert s["accuracy"] == pytest.approx(2 / 3)
    # single-sample accuracy: per problem the share of correct final beams (2/6, 3/7, 2/7), averaged
    assert s["sample_accuracy"] == pytest.approx((2 / 6 + 3 / 7 + 2 / 7) / 3)
    assert s["mean_generations"] == 12 and s["total_generated_tokens"] == 46 + 35 + 40
    rows = c.get("/api/runs/r1/problems").json()["rows"]
    assert [(r["problem_id"], r["correct"], r["answer"], r["reference"], r["generated_tokens"], r["candidates"])
            for r in rows] == [("add-1", True, "5", "5", 46, 6), ("mul-2", True, "24", "24", 35, 7),
                               ("sub-3", False, "4", "3", 40, 7)]


def test_problems_sort_filter_and_pages():
    c = client(BEAM)

    def ids(**q):
        return [r["problem_id"] for r in c.get("/api/runs/r1/problems", params=q).json()["rows"]]

    assert ids(sort="generated_tokens", desc="true") == ["add-1", "sub-3", "mul-2"]
    assert ids(sort="generated_tokens") == ["mul-2", "sub-3", "add-1"]
    assert ids(sort="answer") == ["sub-3", "add-1", "mul-2"]  # numbers compare as numbers: 4 < 5 < 24
    assert ids(status="wrong") == ["sub-3"] and ids(status="correct") == ["add-1", "mul-2"]
    assert ids(q="MUL") == ["mul-2"] and ids(q="24") == ["mul-2"]
    pg = c.get("/api/runs/r1/problems", params={"limit": 1, "offset": 1}).json()
    assert (pg["total"], pg["matched"], [r["problem_id"] for r in pg["rows"]]) == (3, 3, ["mul-2"])
    bad = c.get("/api/runs/r1/problems", params={"sort": "nope"})
    assert bad.status_code == 400 and "cannot sort by 'nope'" in bad.json()["detail"]
    assert c.get("/api/runs/r9").status_code == 404
    assert c.get("/api/runs/r1/problems/3").status_code == 404


def test_beam_problem_tree_votes_and_candidates():
    rec = records(BEAM)[0]
    d = client(BEAM).get("/api/runs/r1/problems/0").json()
    t = d["tree"]
    assert t["source"] == "extra.tree" and len(t["nodes"]) == 12
    # per round, the counts the results file records
    want = [{"round": r["round"], "generated": len(r["generated"]), "kept": len(r["kept"]),
             "finished": len(r["finished"]), "pruned": len(r["generated"]) - len(r["kept"]) - len(r["finished"]),
             "other": 0} for r in rec["extra"]["rounds"]]
    assert t["rounds"] == want == [
        {"round": 1, "generated": 4, "kept": 2, "finished": 0, "pruned": 2, "other": 0},
        {"round": 2, "generated": 4, "kept": 2, "finished": 2, "pruned": 0, "other": 0},
        {"round": 3, "generated": 4, "kept": 0, "finished": 4, "pruned": 0, "other": 0}]
    status = {(n["step"].split() or [""])[0]: n["status"] for n in t["nodes"]}
    assert status["alpha"] == status["gamma"] == "kept" and status["beta"] == status["delta"] == "pruned"
    assert status["afin"] == "finished" and status["gx"] == "finished"
    path = sorted((n["depth"], n["step"].split()[0]) for n in t["nodes"] if n["on_chosen_path"])
    assert [s for _, s in path] == ["gamma", "gcont", "gx"]
    assert d["chosen"] == 8 and d["answer"] == "5" and d["correct"] is True and d["prompt"] is None
    assert [(v["answer"], v["count"], v["weight"], v["chosen"], v["correct"]) for v in d["votes"]] == [
        ("5", 2, 1.6, True, True), ("7", 3, 1.2, False, False), ("1", 1, 0.6, False, False)]
    cands = {c["id"]: c for c in d["candidates"]}
    assert cands[8]["chosen"] and cands[8]["step_scores"] == [0.8, 0.95, 0.9] and cands[8]["status"] == "finished"
    assert d["trace"] is None


def test_adaptive_vote_trace():
    d = client(ADAPTIVE).get("/api/runs/r1/problems/0").json()
    tr = d["trace"]
    assert (tr["kind"], tr["stop_at"], tr["stop_reason"], tr["max_samples"]) == ("votes", 7, "confident", 12)
    assert tr["series"] == {"5": [1, 1, 2, 3, 4, 5, 6], "7": [0, 1, 1, 1, 1, 1, 1]}
    assert [p["leader_votes"] for p in tr["points"]] == [1, 1, 2, 3, 4, 5, 6]
    assert d["tree"] is None and [(v["answer"], v["count"]) for v in d["votes"]] == [("5", 6), ("7", 1)]


def test_sweep_table_runs_curves_and_links():
    rows = records(TABLE)
    c = client(TABLE)
    ix = c.get("/api/index").json()
    groups = {(r["model"], r["config"], r["seed"]) for r in rows}
    assert len(ix["runs"]) == len(groups) == 13 and len(ix["sweeps"]) == 1
    s = c.get("/api/sweeps/s1").json()
    assert s["panels"][0]["title"] == "all problems" and len(s["panels"]) == 6  # + 5 quantile bins
    runs = {r["id"]: r for r in ix["runs"]}
    for p in s["panels"][0]["series"]:
        for pt in p["points"]:
            assert runs[pt["run"]]["config"] == pt["config"]
            mine = [r for r in rows if r["config"] == pt["config"]]
            assert pt["y"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))
    cell = s["policy"]["table"][0]["cells"][0]
    assert runs[cell["run"]]["config"] == cell["config"]
    # a table run: its problems and one problem's candidates (answers and scores, no texts)
    rid = s["panels"][0]["series"][0]["points"][-1]["run"]
    first = next(r for r in rows if r["config"] == runs[rid]["config"])
    d = c.get(f"/api/runs/{rid}/problems/0").json()
    assert d["problem_id"] == first["problem_id"] and d["texts_recorded"] is False
    assert [x["answer"] for x in d["candidates"]] == first["cand_answers"]
    assert sum(v["count"] for v in d["votes"]) == len(first["cand_answers"])
    assert c.get("/api/sweeps/s1/plot.png").content[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_folder_links_points_to_its_results_files(tmp_path):
    (tmp_path / "runs").mkdir()
    shutil.copy(BEAM, tmp_path / "runs" / "beam.jsonl")
    write_table([run_row(r, sweep="t", dataset="d") for r in records(BEAM)], tmp_path)
    cat = Catalog([tmp_path])
    assert [r.kind for r in cat.runs.values()] == ["results", "table"]
    sweep = cat.sweeps["s1"]
    assert list(sweep.run_for_config.values()) == ["r1"]  # the results file, not the table's copy


def test_live_refresh_reads_only_complete_appended_lines(tmp_path):
    lines = BEAM.read_text().splitlines(keepends=True)
    f = tmp_path / "live.jsonl"
    f.write_text(lines[0])
    cat = Catalog([f])
    c = TestClient(create_app(cat))
    v0 = c.get("/api/state").json()["version"]
    with f.open("a") as fh:
        fh.write(lines[1][:50])  # a line being written
    st = c.get("/api/state").json()
    assert st["runs"]["r1"]["problems"] == 1 and st["runs"]["r1"]["bytes"] == len(lines[0].encode())
    with f.open("a") as fh:
        fh.write(lines[1][50:] + lines[2])
    st = c.get("/api/state").json()
    assert st["version"] > v0 and st["runs"]["r1"]["problems"] == 3
    assert [r["problem_id"] for r in c.get("/api/runs/r1/problems").json()["rows"]] == ["add-1", "mul-2", "sub-3"]
    assert c.get("/api/runs/r1/problems/2").json()["problem_id"] == "sub-3"
    f.write_text(lines[2])  # rewritten shorter: read again from the start
    c.get("/api/state")
    assert [r["problem_id"] for r in c.get("/api/runs/r1/problems").json()["rows"]] == ["sub-3"]
    f.write_text(lines[1] + lines[0] + lines[2])  # rewritten in place, longer: read again too
    c.get("/api/state")
    assert [r["problem_id"] for r in c.get("/api/runs/r1/problems").json()["rows"]] == ["mul-2", "add-1", "sub-3"]


def test_empty_results_file_is_a_run_waiting_for_problems(tmp_path):
    f = tmp_path / "new.jsonl"
    f.write_text("")
    c = client(f)
    assert c.get("/api/runs/r1").json()["problems"] == 0
    f.write_text(BEAM.read_text().splitlines(keepends=True)[0])
    assert c.get("/api/state").json()["runs"]["r1"]["problems"] == 1


def test_large_file_pages_on_the_server(tmp_path):
    rec = records(BEAM)[0]
    big = tmp_path / "big.jsonl"
    with big.open("w") as f:
        for i in range(10_000):
            f.write(json.dumps({**rec, "problem_id": f"p{i:05d}", "correct": i % 3 != 0}) + "\n")
    t0 = time.perf_counter()
    c = client(big)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pg = c.get("/api/runs/r1/problems", params={"sort": "problem_id", "desc": "true", "status": "wrong",
                                                "limit": 50, "offset": 100}).json()
    page_s = time.perf_counter() - t0
    assert (pg["total"], pg["matched"], len(pg["rows"])) == (10_000, 3334, 50)
    assert pg["rows"][0]["problem_id"] == "p09699"  # wrong: every third, descending, 100 skipped
    d = c.get("/api/runs/r1/problems/9999").json()
    assert d["problem_id"] == "p09999" and len(d["tree"]["nodes"]) == 12
    print(f"10,000 problems: load {load_s:.2f}s, one page {page_s * 1000:.0f} ms")
    assert load_s < 30 and page_s < 5  # loose: the machine is shared


def test_export_is_one_self_contained_page(tmp_path):
    html = export_html(Catalog([BEAM, TABLE]))
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere
    assert 'src="static/' not in html and 'href="static/' not in html  # the assets are inlined
    m = re.search(r'<script id="ttscale-data" type="application/json">(.*?)</script>', html, re.S)
    data = json.loads(m.group(1))
    assert sorted(data["runs"]["r1"]) == ["details", "rows", "summary"]
    assert len(data["runs"]["r1"]["details"]) == 3 and "s1" in data["sweeps"]


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Catalog([tmp_path / "missing.jsonl"])
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(BEAM.read_bytes()[:-40])
    with pytest.raises(ConfigError, match=r"partial line at byte \d+ \(truncated"):
        Catalog([torn])
    other = tmp_path / "other.jsonl"
    other.write_text('{"problem_num": 0, "all_answers": [["5", 100]]}\n')
    with pytest.raises(ConfigError, match="not a ttscale file"):
        Catalog([other])
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="first line is not JSON"):
        Catalog([csv])
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(BEAM.read_text().splitlines(keepends=True)[0] + '{"hello": 1}\n')
    with pytest.raises(ConfigError, match="line 2 lacks problem_id/cost"):
        Catalog([mixed])
    with pytest.raises(ConfigError, match=r"without table\.jsonl"):
        Catalog([tmp_path])


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "ttscale.cli", "view", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out.html"
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(BEAM.read_bytes()[:-40])
    for args, msg in [((str(tmp_path / "nope.jsonl"),), "does not exist"),
                      ((str(torn),), "truncated"),
                      ((str(ROOT / "pyproject.toml"),), "not a ttscale file"),
                      ((), "give at least one results file")]:
        r = _cli(*args, "--export", str(out))
        assert r.returncode == 2 and msg in r.stderr, (args, r.stdout, r.stderr)
        assert not out.exists() and list(tmp_path.glob(".view-*")) == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = _cli(str(BEAM), "--port", str(port))
    assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    r = _cli(str(BEAM), "--export", str(out))
    assert r.returncode == 0 and out.exists() and "wrote" in r.stdout


@pytest.mark.parametrize(("strategy", "params"), [
    ("dvts", {"n": 4, "beam_width": 2, "max_steps": 6}),
    ("particle_filtering", {"n": 3, "max_steps": 6}),
    ("lookahead", {"n": 4, "beam_width": 2, "lookahead": 1, "max_steps": 6}),
    ("mcts", {"n": 6, "max_children": 2, "max_steps": 6}),
    ("ab_mcts", {"n": 6, "max_steps": 6}),
])
def test_tree_statuses_follow_what_each_search_records(tmp_path, strategy, params):
    from ttscale.view.detail import tree_view
    from view_fixtures import make_tree_results

    for rec in records(make_tree_results(tmp_path / f"{strategy}.jsonl", strategy, params)):
        t = tree_view(rec)
        ex = rec["extra"]
        status = {n["id"]: n["status"] for n in t["nodes"]}
        assert set(status) == {n["id"] for n in ex["tree"]}
        if strategy == "dvts":
            on = {i for path in ex["subtrees"] for i in path}
            assert {i for i, s in status.items() if s in ("kept", "finished")} == on
        elif strategy == "particle_filtering":
            drawn = {i for r in ex["rounds"] for i in r["resampled"]}
            assert {i for i, s in status.items() if s in ("kept", "finished")} == drawn
        elif strategy == "lookahead":
            assert {i for i, s in status.items() if s == "rollout"} == \
                {n["id"] for n in ex["tree"] if n.get("role") == "lookahead"}
            assert [(r["kept"], r["finished"]) for r in t["rounds"]] == \
                [(len(r["kept"]), len(r["finished"])) for r in ex["rounds"]]
        else:  # MCTS / AB-MCTS prune nothing
            parents = {n["parent"] for n in ex["tree"]}
            assert all(s == ("finished" if n["end"] else "expanded" if n["id"] in parents else "open")
                       for n in ex["tree"] for s in [status[n["id"]]])
        if strategy == "mcts":
            assert all([n["visits"], n["value"]] == ex["visits"][str(n["id"])] for n in t["nodes"])
        assert sum(r["generated"] for r in t["rounds"]) == sum(s != "rollout" for s in status.values())
        assert rec["chosen"] is None or status[rec["chosen"]] in ("finished", "kept", "expanded", "open")


def test_tree_rebuilt_from_candidate_parent_links():
    from ttscale.view.detail import tree_view

    rec = records(BEAM)[0]
    rec["extra"] = {}
    t = tree_view(rec)
    assert t["source"] == "candidates" and "only final candidates" in t["note"]
    missing = sorted(n["id"] for n in t["nodes"] if n["status"] == "missing")
    assert missing == sorted({c["parent"] for c in rec["candidates"]}) == [0, 2, 5, 6]
    assert {n["id"] for n in t["nodes"] if n["status"] == "finished"} == {c["id"] for c in rec["candidates"]}


def test_deepconf_confidence_trace(tmp_path):
    from view_fixtures import make_deepconf_results

    d = client(make_deepconf_results(tmp_path / "dc.jsonl")).get("/api/runs/r1/problems/0").json()
    tr = d["trace"]
    assert tr["kind"] == "confidence" and tr["threshold"] == pytest.approx(1.75) and tr["stop_at"] == 6
    assert [p["cut"] for p in tr["points"]] == [False] * 4 + [True, False]
    assert [p["warmup"] for p in tr["points"]] == [True] * 4 + [False] * 2
    assert [c["status"] for c in d["candidates"]][4] == "cancelled"


def test_a_given_policy_is_used_for_the_panels_and_table():
    pol = json.loads((ROOT / "docs" / "lab" / "embedded-gsm-policy.json").read_text())
    c = client(TABLE, ROOT / "docs" / "lab" / "embedded-gsm-policy.json")
    s = c.get("/api/sweeps/s1").json()
    assert s["policy_note"] == "from the policy file given"
    assert [p["title"] for p in s["panels"]] == ["all problems", "bin 0: easy (>50%) (3 problems)",
                                                 "bin 1: medium (10-50%) (11 problems)", "bin 2: hard (<10%) (2 problems)"]
    assert [[cell["config"] for cell in r["cells"]] for r in s["policy"]["table"]] == \
        [[e["config"] for e in pol["table"] if e["bin"] == b] for b in range(3)]
    with pytest.raises(ConfigError, match="a policy JSON alone"):
        Catalog([ROOT / "docs" / "lab" / "embedded-gsm-policy.json"])
