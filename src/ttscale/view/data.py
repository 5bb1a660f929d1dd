"""What ``ttscale view`` shows, read from disk: runs (results files, or one configuration of a sweep
table) and sweeps (a tidy table with its scaling curves and policy).

Inputs (:func:`open_inputs`): a ``ttscale run`` results file, a sweep output folder (its table plus
every ``runs/*.jsonl``), a sweep table (``.jsonl``/``.parquet``) and policy JSONs. Each input is
checked up front: a missing file, a file ending in a partial line (truncated), or a file of another
tool is a :class:`ConfigError` naming it.

Large files: a results file is read once into light rows (the fields of the problems table) and the
byte span of each line; a problem's full record is re-read from its span on demand. ``refresh``
reads only the bytes appended since the last look (the live view), and re-reads the whole file when
it shrank or was replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.policy import is_policy_file
from ttscale.lab.table_io import all_params_label, is_table_input

SORT_KEYS = ("index", "problem_id", "correct", "answer", "reference", "generated_tokens", "generations",
             "wall_time_s", "candidates", "sample_accuracy")
"""Columns the problems table can be sorted by."""
HEAD_BYTES = 256
"""First bytes of a results file remembered to notice it being rewritten in place."""


def light_row(rec: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The problems-table fields of one results record."""
    cost = rec.get("cost") or {}
    cands = rec.get("candidates") or []
    graded = [c.get("correct") for c in cands if c.get("correct") is not None]
    return {
        "index": index, "problem_id": str(rec.get("problem_id")), "correct": rec.get("correct"),
        "answer": rec.get("answer"), "reference": rec.get("reference"),
        "generated_tokens": int(cost.get("generated_tokens") or 0), "prompt_tokens": int(cost.get("prompt_tokens") or 0),
        "verifier_tokens": int(cost.get("verifier_prompt_tokens") or 0) + int(cost.get("verifier_generated_tokens") or 0),
        "generations": int(cost.get("generations") or 0), "wall_time_s": float(cost.get("wall_time_s") or 0.0),
        "flops": cost.get("flops"), "candidates": len(cands),
        "sample_accuracy": fmean(bool(g) for g in graded) if graded and len(graded) == len(cands) else None,
        "stopped_by_budget": bool(rec.get("stopped_by_budget")),
    }


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy, single-sample accuracy and cost over a run's light rows."""
    graded = [r for r in rows if r["correct"] is not None]
    sa = [r["sample_accuracy"] for r in rows if r["sample_accuracy"] is not None]
    flops = [r["flops"] for r in rows if r.get("flops") is not None]
    n = len(rows)
    return {
        "problems": n, "graded": len(graded), "correct": sum(bool(r["correct"]) for r in graded),
        "accuracy": fmean(bool(r["correct"]) for r in graded) if graded else None,
        "sample_accuracy": fmean(sa) if sa else None,
        "total_generated_tokens": sum(r["generated_tokens"] for r in rows),
        "mean_generated_tokens": fmean(r["generated_tokens"] for r in rows) if n else None,
        "mean_prompt_tokens": fmean(r["prompt_tokens"] for r in rows) if n else None,
        "mean_verifier_tokens": fmean(r["verifier_tokens"] for r in rows) if n else None,
        "mean_generations": fmean(r["generations"] for r in rows) if n else None,
        "mean_wall_time_s": fmean(r["wall_time_s"] for r in rows) if n else None,
        "total_flops": sum(flops) if flops else None,
        "stopped_by_budget": sum(bool(r["stopped_by_budget"]) for r in rows),
    }


def _sort_value(row: Mapping[str, Any], key: str) -> tuple[int, Any]:
    v = row.get(key)
    if v is None:
        return (1, 0)
    if isinstance(v, bool):
        return (0, int(v))
    if isinstance(v, int | float):
        return (0, v)
    s = str(v)
    return (0, (float(s), "") if _is_number(s) else (float("inf"), s))


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def page(rows: Sequence[Mapping[str, Any]], *, offset: int = 0, limit: int = 50, sort: str = "index",
         desc: bool = False, q: str = "", status: str = "all") -> dict[str, Any]:
    """One page of a problems table: filtered by ``status`` (all/correct/wrong/ungraded) and by
    ``q`` (a substring of the problem id, answer or reference), sorted by ``sort``."""
    if sort not in SORT_KEYS:
        raise ConfigError(f"cannot sort by {sort!r} (known: {', '.join(SORT_KEYS)})")
    if status not in ("all", "correct", "wrong", "ungraded"):
        raise ConfigError(f"status {status!r} is not one of all, correct, wrong, ungraded")
    want = {"correct": True, "wrong": False, "ungraded": None}.get(status, ...)
    ql = q.strip().lower()
    sel = [r for r in rows
           if (want is ... or r["correct"] is want)
           and (not ql or any(ql in str(r.get(k) or "").lower() for k in ("problem_id", "answer", "reference")))]
    nulls = [r for r in sel if r.get(sort) is None]
    vals = sorted((r for r in sel if r.get(sort) is not None), key=lambda r: _sort_value(r, sort), reverse=desc)
    ordered = vals + nulls  # problems without the value always last
    offset = max(0, offset)
    limit = max(1, min(limit, 1000))
    return {"total": len(rows), "matched": len(sel), "offset": offset, "limit": limit,
            "rows": ordered[offset:offset + limit]}


@dataclass
class Run:
    """A list of problems solved by one configuration."""

    id: str
    label: str
    kind: str  # "results" or "table"
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "kind": self.kind, **self.meta, **summarize_rows(self.rows)}

    def record(self, index: int) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def refresh(self) -> bool:
        return False


class ResultsRun(Run):
    """A ``ttscale run`` results file, read incrementally (module docstring)."""

    def __init__(self, rid: str, path: Path) -> None:
        super().__init__(id=rid, label=path.name, kind="results")
        self.path = path
        self.spans: list[tuple[int, int]] = []
        self.good = 0
        self.stamp: tuple[int, int, int] = (-1, -1, -1)
        self.head = b""
        self.refresh(strict=True)

    def _reset(self) -> None:
        self.rows, self.spans, self.good, self.meta, self.head = [], [], 0, {}, b""

    def refresh(self, strict: bool = False) -> bool:
        """Read what was appended since the last call; True when anything changed. A file that
        shrank, was replaced (another inode) or rewritten (its first bytes differ) is read again."""
        try:
            st = self.path.stat()
        except OSError as e:
            if strict:
                raise ConfigError(f"results file {self.path} does not exist") from e
            return False
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp == self.stamp:
            return False
        if st.st_size < self.good or (st.st_ino != self.stamp[2] and self.stamp[2] != -1):
            self._reset()
        with self.path.open("rb") as f:
            if self.head and f.read(len(self.head)) != self.head:
                self._reset()
            f.seek(self.good)
            data = f.read(st.st_size - self.good)
        pos = self.good
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                if strict:
                    raise ConfigError(
                        f"{self.path} ends in a partial line at byte {pos} (truncated: a crash mid-write? "
                        "`ttscale run` with the same --out drops it and resumes)")
                break
            if raw.strip():
                self._add(raw, pos)
            pos += len(raw)
            self.good = pos
        if len(self.head) < min(HEAD_BYTES, self.good):
            with self.path.open("rb") as f:
                self.head = f.read(min(HEAD_BYTES, self.good))
        self.stamp = (st.st_size, st.st_mtime_ns, st.st_ino) if self.good == st.st_size else (-1, -1, st.st_ino)
        return True

    def _add(self, raw: bytes, pos: int) -> None:
        where = f"{self.path} line {len(self.spans) + 1}"
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where} is not JSON: not a ttscale results file") from e
        if not isinstance(rec, dict) or "problem_id" not in rec or "cost" not in rec:
            raise ConfigError(f"{where} lacks problem_id/cost: not a ttscale results file "
                              "(expected `ttscale run` results, a sweep folder/table or a policy JSON)")
        if not self.meta:
            self.meta = run_meta(rec, str(self.path))
        self.rows.append(light_row(rec, len(self.spans)))
        self.spans.append((pos, len(raw)))

    def record(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.spans):
            raise KeyError(index)
        start, n = self.spans[index]
        with self.path.open("rb") as f:
            f.seek(start)
            return json.loads(f.read(n))

    def all_records(self) -> list[dict[str, Any]]:
        return [self.record(i) for i in range(len(self.spans))]


def run_meta(rec: Mapping[str, Any], path: str) -> dict[str, Any]:
    params = dict(rec.get("params") or {})
    return {"path": path, "strategy": str(rec.get("strategy", "")), "params": params,
            "config": all_params_label(str(rec.get("strategy", "")), params), "engine": str(rec.get("engine", "")),
            "model": str(rec.get("model", "")), "seed": rec.get("seed", 0), "budget": rec.get("budget") or {}}


class TableRun(Run):
    """One (dataset, model, config, seed) of a sweep table: rows without candidate texts."""

    def __init__(self, rid: str, rows: Sequence[Mapping[str, Any]], source: str) -> None:
        first = rows[0]
        params = first.get("params") or "{}"
        super().__init__(id=rid, label=f"{first['config']} (seed {first['seed']})", kind="table", meta={
            "path": source, "strategy": str(first["strategy"]),
            "params": json.loads(params) if isinstance(params, str) else dict(params),
            "config": str(first["config"]), "engine": str(first.get("engine", "")), "model": str(first["model"]),
            "seed": first.get("seed", 0), "dataset": str(first["dataset"]), "budget_n": first["budget_n"],
            "derived_from": first.get("derived_from") or ""})
        self.table_rows = [dict(r) for r in rows]
        for i, r in enumerate(rows):
            self.rows.append({
                "index": i, "problem_id": str(r["problem_id"]), "correct": r["correct"], "answer": r.get("answer"),
                "reference": r.get("reference"), "generated_tokens": int(r["generated_tokens"]),
                "prompt_tokens": int(r["prompt_tokens"]), "verifier_tokens": int(r["verifier_tokens"]),
                "generations": int(r["generations"]), "wall_time_s": float(r["wall_time_s"]),
                "flops": r.get("flops"), "candidates": len(r.get("cand_correct") or r.get("cand_answers") or []),
                "sample_accuracy": r.get("sample_accuracy"), "stopped_by_budget": False, "dataset": str(r["dataset"]),
            })

    def record(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.table_rows):
            raise KeyError(index)
        return self.table_rows[index]


@dataclass
class Sweep:
    """A sweep table (one model of it) with an optional policy."""

    id: str
    label: str
    source: str
    rows: list[dict[str, Any]]
    policy: dict[str, Any] | None
    run_for_config: dict[str, str]


def _first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                return raw
    return b""


def classify(path: Path) -> str:
    """``results``, ``table``, ``sweep`` (a folder) or ``policy``; a ConfigError for anything else."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if path.is_dir():
        if (path / "table.jsonl").exists() or (path / "table.parquet").exists() or (path / "runs").is_dir():
            return "sweep"
        raise ConfigError(f"{path} is a folder without table.jsonl, table.parquet or runs/ "
                          "(is it a `ttscale sweep` output folder?)")
    if path.suffix == ".parquet":
        return "table"
    if path.suffix == ".json" and is_policy_file(path):
        return "policy"
    try:
        first = _first_line(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    if not first:
        return "results"  # empty: a run that has not finished a problem yet (the live view fills it)
    try:
        rec = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if not first.endswith(b"\n"):
            raise ConfigError(f"{path} ends in a partial first line (truncated?)") from e
        raise ConfigError(f"{path} is not a ttscale file: its first line is not JSON") from e
    if isinstance(rec, dict) and is_table_input(path):
        return "table"
    if isinstance(rec, dict) and "problem_id" in rec and "cost" in rec:
        return "results"
    raise ConfigError(f"{path} is not a ttscale file: expected `ttscale run` results (problem_id, cost), a sweep "
                      "table (config, budget_n) or a policy JSON")


def table_runs(rows: Sequence[Mapping[str, Any]], source: str, ids: Iterable[str]) -> list[TableRun]:
    """One run per (model, config, seed) of a table, in first-seen order, with the ids given."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["config"]), int(r["seed"])), []).append(r)
    return [TableRun(rid, rs, source) for rid, rs in zip(ids, groups.values(), strict=False)]


def sweep_runs_dir(path: Path) -> list[Path]:
    runs = path / "runs"
    return sorted(runs.glob("*.jsonl")) if runs.is_dir() else []


def file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)
