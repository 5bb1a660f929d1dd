"""Datasets: file formats, field detection, recorded and results files, presets, rg: tasks, default."""

from __future__ import annotations

import builtins
import csv
import json
import re
import sys
import types
from pathlib import Path

import pytest

from ttscale.core.errors import ConfigError
from ttscale.core.types import Problem
from ttscale.datasets import Dataset, ReasoningGymGrader, load_dataset, make_grader
from ttscale.datasets.presets import PRESETS, parse_hf_spec

ROWS = [
    {"id": "a", "question": "What is 2+3?", "answer": "5"},
    {"id": "b", "question": "What is 10-4?", "answer": "6"},
    {"id": "c", "question": "What is 3*3?", "answer": "9"},
]
CUSTOM = [{"task": r["question"], "gold": r["answer"], "key": r["id"]} for r in ROWS]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {
    "jsonl": write_jsonl,
    "json": lambda p, rows: (p.write_text(json.dumps(rows)), p)[1],
    "json_data": lambda p, rows: (p.write_text(json.dumps({"data": rows})), p)[1],
    "csv": write_csv,
    "parquet": write_parquet,
}


def _path(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"set.{fmt.split('_')[0]}"


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_file_formats_autodetect(tmp_path, fmt):
    p = WRITERS[fmt](_path(tmp_path, fmt), ROWS)
    ds = load_dataset(str(p))
    assert isinstance(ds, Dataset)
    assert ds.name == "set" and ds.grader == "math"
    assert [q.id for q in ds.problems] == ["a", "b", "c"]
    assert [q.answer for q in ds.problems] == ["5", "6", "9"]
    assert ds.problems[0].question == "What is 2+3?"
    assert ds.problems[0].chat() == [{"role": "user", "content": "What is 2+3?"}]


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_file_formats_explicit_fields(tmp_path, fmt):
    p = WRITERS[fmt](_path(tmp_path, fmt), CUSTOM)
    ds = load_dataset(str(p), question_field="task", answer_field="gold")
    # no id-like field: ids are row indices
    assert [q.id for q in ds.problems] == ["0", "1", "2"]
    assert [q.prompt for q in ds.problems] == [r["question"] for r in ROWS]
    assert [q.answer for q in ds.problems] == ["5", "6", "9"]


def test_alternative_field_names_and_numbers(tmp_path):
    rows = [
        {"problem_id": 7, "problem": "p", "final_answer": 12.0},
        {"problem_id": 8, "problem": "q", "final_answer": 3},
    ]
    ds = load_dataset(str(write_jsonl(tmp_path / "x.jsonl", rows)))
    assert [(q.id, q.prompt, q.answer) for q in ds.problems] == [("7", "p", "12"), ("8", "q", "3")]


def test_gsm8k_answers(tmp_path):
    rows = [
        {"question": "q1", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72"},
        {"question": "q2", "answer": "So 1,000 + 200 = 1,200\n#### 1,200"},
    ]
    ds = load_dataset(str(write_jsonl(tmp_path / "gsm.jsonl", rows)))
    assert [q.answer for q in ds.problems] == ["72", "1200"]


def test_math_solution_kept_whole(tmp_path):
    rows = [{"problem": "x?", "solution": "We get $x=\\boxed{\\frac{1}{2}}$."}]
    ds = load_dataset(str(write_jsonl(tmp_path / "m.jsonl", rows)))
    assert ds.problems[0].answer == "We get $x=\\boxed{\\frac{1}{2}}$."


def test_messages_rows(tmp_path):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    ds = load_dataset(str(write_jsonl(tmp_path / "chat.jsonl", [{"id": 1, "messages": msgs, "answer": "4"}])))
    p = ds.problems[0]
    assert p.prompt is None and p.question == "2+2?" and p.chat() == msgs and p.answer == "4"


def test_metadata_passed_through(tmp_path):
    rows = [{"id": "m", "question": "q", "answer": "1", "metadata": {"level": 3}}]
    assert load_dataset(str(write_jsonl(tmp_path / "meta.jsonl", rows))).problems[0].metadata == {"level": 3}


def test_recorded_file(tmp_path):
    rows = [
        {
            "problem_num": 0,
            "total_answers": 3,
            "answer_counts": {"33": 2, "2": 1},
            "gold_answer": "33",
            "majority_answer": "33",
            "all_answers": [["33", 100], ["33", 120], ["2", 90]],
        },
        {
            "problem_num": 1,
            "total_answers": 2,
            "answer_counts": {"23": 2},
            "gold_answer": "23",
            "majority_answer": "23",
            "all_answers": [["23", 50], ["23", 60]],
        },
    ]
    ds = load_dataset(str(write_jsonl(tmp_path / "analysis_aime.jsonl", rows)))
    assert [(p.id, p.answer) for p in ds.problems] == [("0", "33"), ("1", "23")]
    assert ds.problems[0].prompt == "Recorded problem 0"
    assert all(p.metadata == {"recorded": True} for p in ds.problems)


def test_shared_recorded_file_if_present():
    files = sorted(Path("/work/shared/reference/recorded").glob("*.jsonl"))
    if not files:
        pytest.skip("no shared recorded files here")
    ds = load_dataset(str(files[0]))
    assert ds.problems and all(p.metadata.get("recorded") for p in ds.problems)


def test_results_file(tmp_path):
    rows = [
        {
            "problem_id": "q0",
            "answer": "5",
            "reference": "5",
            "correct": True,
            "candidates": [{"answer": "5"}],
        },
        {"problem_id": "q1", "answer": "7", "reference": "8", "correct": False, "candidates": []},
        {"problem_id": "q1", "answer": "7", "reference": "8", "correct": False, "candidates": []},
    ]
    ds = load_dataset(str(write_jsonl(tmp_path / "run.jsonl", rows)))
    assert [(p.id, p.answer) for p in ds.problems] == [("q0", "5"), ("q1", "8")]


def test_missing_question_field_names_file_and_fields(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"text": "q", "label": "1"}])
    with pytest.raises(ConfigError) as e:
        load_dataset(str(p))
    msg = str(e.value)
    assert "bad.jsonl" in msg and "question" in msg and "text" in msg and "label" in msg


def test_explicit_missing_field(tmp_path):
    p = write_jsonl(tmp_path / "bad2.jsonl", ROWS)
    with pytest.raises(ConfigError) as e:
        load_dataset(str(p), answer_field="gold")
    msg = str(e.value)
    assert "bad2.jsonl" in msg and "'gold'" in msg and "question" in msg and "answer" in msg
    with pytest.raises(ConfigError, match="'prob'"):
        load_dataset(str(p), question_field="prob")


def test_row_missing_field(tmp_path):
    p = write_jsonl(tmp_path / "ragged.jsonl", [*ROWS, {"id": "d", "question": "no answer here"}])
    with pytest.raises(ConfigError, match=r"row 3 .*'answer'"):
        load_dataset(str(p))


def test_unknown_spec_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset") as e:
        load_dataset("no-such-thing")
    assert "gsm8k" in str(e.value) and "rg:" in str(e.value)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="not found") as e:
        load_dataset(str(missing))
    assert str(missing) in str(e.value)


def test_unreadable_files(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl.*line 2"):
        load_dataset(str(bad))
    pq = tmp_path / "broken.parquet"
    pq.write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=r"broken\.parquet"):
        load_dataset(str(pq))
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"foo": []}))
    with pytest.raises(ConfigError, match="foo"):
        load_dataset(str(obj))
    txt = tmp_path / "x.txt"
    txt.write_text("hi")
    with pytest.raises(ConfigError, match="unsupported"):
        load_dataset(str(txt))


def test_duplicate_ids(tmp_path):
    p = write_jsonl(tmp_path / "dup.jsonl", [ROWS[0], ROWS[0]])
    with pytest.raises(ConfigError, match="more than once"):
        load_dataset(str(p))


def test_limit(tmp_path):
    p = write_jsonl(tmp_path / "lim.jsonl", ROWS)
    assert [q.id for q in load_dataset(str(p), limit=2).problems] == ["a", "b"]
    assert len(load_dataset("default", limit=5).problems) == 5
    with pytest.raises(ConfigError):
        load_dataset(str(p), limit=-1)


def test_default_dataset():
    for spec in ("default", "", None):
        ds = load_dataset(spec)
        assert ds.name == "gsm_symbolic_40" and ds.grader == "math"
        assert len(ds.problems) == 40
    assert len({p.id for p in ds.problems}) == 40
    for p in ds.problems:
        assert re.fullmatch(r"-?\d+", p.answer or "")
        assert p.prompt and "Give the result as your final answer" in p.prompt
        assert p.metadata["rg_task"] == "gsm_symbolic" and p.metadata["rg_entry"]["answer"] == p.answer


async def test_default_dataset_also_grades_with_reasoning_gym():
    ds = load_dataset("default", limit=3)
    g = ReasoningGymGrader()
    for p in ds.problems:
        assert await g.grade(p, p.answer) is True
        assert await g.grade(p, str(int(p.answer) + 1)) is False


async def test_rg_task_and_grader():
    ds = load_dataset("rg:gsm_symbolic", seed=3, size=5)
    assert ds.grader == "reasoning_gym" and len(ds.problems) == 5
    again = load_dataset("rg:gsm_symbolic", seed=3, size=5)
    assert ds.problems == again.problems  # deterministic
    p = ds.problems[0]
    json.dumps(p.to_dict())  # results files can carry it
    grader = make_grader(ds)
    assert isinstance(grader, ReasoningGymGrader)
    assert await grader.grade(p, p.answer) is True
    assert await grader.grade(p, "definitely wrong") is False
    assert await grader.grade(p, None) is False
    assert await grader.grade(Problem(id="x", prompt="x", answer="1"), "1") is None
    # graded from a serialised problem, as from a results file
    back = Problem(**{**p.to_dict(), "messages": ()})
    assert await grader.grade(back, p.answer) is True
    assert len(load_dataset("rg:gsm_symbolic", limit=4).problems) == 4
    assert len(load_dataset("rg:chain_sum").problems) == 50


async def test_rg_non_numeric_task():
    ds = load_dataset("rg:word_sorting", size=2, seed=1)
    g = ReasoningGymGrader()
    p = ds.problems[0]
    assert await g.grade(p, p.answer) is True
    assert await g.grade(p, "zzz") is False


def test_rg_unknown_task():
    with pytest.raises(ConfigError, match="unknown reasoning-gym task") as e:
        load_dataset("rg:gsm_symbolik")
    assert "gsm_symbolic" in str(e.value)
    with pytest.raises(ConfigError):
        load_dataset("rg:")


def test_make_grader_specs():
    with pytest.raises(ConfigError, match="unknown grader"):
        make_grader(Dataset(name="x", problems=(), grader="nope"))
    assert isinstance(make_grader("reasoning_gym"), ReasoningGymGrader)


def test_make_grader_math(monkeypatch):
    try:
        import ttscale.verifiers.math_answers as ma
    except ImportError:  # written elsewhere; stand in for it
        ma = types.ModuleType("ttscale.verifiers.math_answers")

        class MathAnswers:
            async def grade(self, problem, answer):
                return answer == problem.answer

        ma.MathAnswers = MathAnswers
        monkeypatch.setitem(sys.modules, "ttscale.verifiers.math_answers", ma)
    g = make_grader(load_dataset("default", limit=1))
    assert isinstance(g, ma.MathAnswers)


def _hide_datasets(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("spec", ["gsm8k", "math500", "aime24", "hf:openai/gsm8k:main@test"])
def test_preset_without_datasets_library(monkeypatch, spec):
    _hide_datasets(monkeypatch)
    with pytest.raises(ConfigError, match=r"pip install 'ttscale\[hf\]'"):
        load_dataset(spec)


def _fake_datasets(monkeypatch, rows=None, error=None):
    calls = []
    mod = types.ModuleType("datasets")

    def load(name, config=None, split=None):
        calls.append((name, config, split))
        if error:
            raise error
        return rows if split else {"train": rows[:1], "test": rows}

    mod.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", mod)
    return calls


def test_preset_offline_error(monkeypatch):
    _fake_datasets(monkeypatch, error=ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub"))
    with pytest.raises(ConfigError) as e:
        load_dataset("gsm8k")
    msg = str(e.value)
    assert "openai/gsm8k" in msg and "unreachable" in msg and "HF_DATASETS_OFFLINE=1" in msg and "path" in msg


def test_presets_with_fake_hub(monkeypatch):
    gsm = [{"question": "q1", "answer": "work\n#### 18"}, {"question": "q2", "answer": "w\n#### 3"}]
    calls = _fake_datasets(monkeypatch, rows=gsm)
    ds = load_dataset("gsm8k", limit=1)
    assert calls[-1] == ("openai/gsm8k", "main", "test")
    assert ds.name == "gsm8k" and ds.grader == "math"
    assert [(p.id, p.prompt, p.answer) for p in ds.problems] == [("0", "q1", "18")]

    math = [{"problem": "x?", "solution": "...", "answer": "\\frac12", "unique_id": "test/algebra/1.json"}]
    calls = _fake_datasets(monkeypatch, rows=math)
    ds = load_dataset("math500")
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")
    assert [(p.id, p.answer) for p in ds.problems] == [("test/algebra/1.json", "\\frac12")]

    aime = [{"id": 60, "problem": "p", "solution": "s", "answer": "204", "url": "u", "year": "2024"}]
    calls = _fake_datasets(monkeypatch, rows=aime)
    ds = load_dataset("aime24", split="train")
    assert calls[-1] == ("HuggingFaceH4/aime_2024", None, "train")
    assert [(p.id, p.prompt, p.answer) for p in ds.problems] == [("60", "p", "204")]

    calls = _fake_datasets(monkeypatch, rows=[{"q": "a", "a": "1"}, {"q": "b", "a": "2"}])
    ds = load_dataset("hf:me/data", question_field="q", answer_field="a")
    assert calls[-1] == ("me/data", None, None)  # no split: test is picked from the splits
    assert [p.answer for p in ds.problems] == ["1", "2"]


def test_parse_hf_spec():
    assert parse_hf_spec("openai/gsm8k:main@test") == ("openai/gsm8k", "main", "test")
    assert parse_hf_spec("a/b@train") == ("a/b", None, "train")
    assert parse_hf_spec("a/b") == ("a/b", None, None)
    assert set(PRESETS) == {"gsm8k", "math500", "aime24"}
