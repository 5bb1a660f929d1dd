import json
import re

import pytest
from typer.testing import CliRunner

from test_policy import make_rows
from ttscale.cli import app
from ttscale.core.errors import ConfigError
from ttscale.lab.html_report import build_html
from ttscale.lab.plots import plot_table
from ttscale.lab.policy import fit_policy

PNG = b"\x89PNG\r\n\x1a\n"


def write_table(tmp_path, rows):
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_plot_file_written_with_and_without_policy(tmp_path):
    rows = make_rows()
    out = plot_table(rows, tmp_path / "a" / "fig.png")
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    out2 = plot_table(rows, tmp_path / "fig2.png", fit_policy(rows, bins="absolute"))
    assert out2.read_bytes().startswith(PNG)
    with pytest.raises(ConfigError, match="no rows"):
        plot_table([], tmp_path / "x.png")


def test_html_report_is_self_contained_and_has_every_section():
    rows = make_rows(models=("small", "big"))
    page = build_html(rows, title="t <1>")
    assert "http://" not in page and "https://" not in page
    assert 'src="file' not in page and "<link" not in page and "<script" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)  # tokens, then N
    for heading in ("Summary per configuration", "pass@k and maj@k", "Compute-optimal policy",
                    "Difficulty bins", "Generations best-of-N needs to match the policy",
                    "FLOPs-matched comparison", "Accuracy vs compute", "Accuracy vs generation budget N"):
        assert heading in page
    assert "t &lt;1&gt;" in page  # escaped
    assert "257.75" in page and "63.37" in page and "15.77" in page
    assert "majority n=4" in page and "budget multiple to match" in page
    # absolute policy passed in: its bins are shown
    page2 = build_html(make_rows(), policy=fit_policy(make_rows(), bins="absolute"))
    assert "easy (&gt;50%)" in page2 and "not reached" in page2


def test_cli_fit_policy_plot_and_report(tmp_path):
    table = write_table(tmp_path, make_rows())
    runner = CliRunner()
    pol = tmp_path / "policy.json"
    res = runner.invoke(app, ["fit-policy", str(table), "--out", str(pol), "--bins", "absolute"])
    assert res.exit_code == 0, res.output
    saved = json.loads(pol.read_text())
    assert saved["fit"]["bins"] == "absolute" and saved["fit"]["difficulty"] == "oracle"
    assert "best-of-N to match the policy at N=4: 9.2 generations (2.30x)" in res.output
    fig = tmp_path / "fig.png"
    res = runner.invoke(app, ["plot", str(table / "table.jsonl"), "--policy", str(pol), "--out", str(fig)])
    assert res.exit_code == 0, res.output
    assert fig.read_bytes().startswith(PNG)
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(table), str(pol), "--html", str(html)])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "from the policy file given" in page and "http://" not in page
    assert "best_of_n n=16" in res.output  # the table summary is printed too
    res = runner.invoke(app, ["report", str(table), "--json"])
    summ = json.loads(res.output)
    assert {s["config"]: s["accuracy"] for s in summ}["best_of_n n=16"] == pytest.approx(0.85)


def test_cli_fit_policy_bad_option(tmp_path):
    table = write_table(tmp_path, make_rows())
    res = CliRunner().invoke(app, ["fit-policy", str(table), "--bins", "deciles"])
    assert isinstance(res.exception, ConfigError) and "--bins 'deciles'" in str(res.exception)


def test_report_results_files_keep_table_and_write_html(tmp_path):
    recs = []
    for i in range(6):
        cands = [{"id": j, "answer": "5" if (i + j) % 3 else "7", "correct": bool((i + j) % 3), "score": None}
                 for j in range(4)]
        recs.append({"problem_id": str(i), "answer": "5", "reference": "5", "correct": i % 2 == 0,
                     "strategy": "self_consistency", "params": {"n": 4}, "seed": 0, "budget": {},
                     "engine": "scripted", "model": "m",
                     "cost": {"prompt_tokens": 5, "generated_tokens": 40, "generations": 4, "wall_time_s": 0.1},
                     "candidates": cands, "extra": {}})
    f = tmp_path / "gsm__sc.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(f), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["accuracy"] == 0.5 and row["strategy"] == "self_consistency"  # the old summary
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(f), "--html", str(html)])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "self_consistency n=4" in page and "maj@k" in page and "http://" not in page
