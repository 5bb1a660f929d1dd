"""Reading the tidy sweep table (``<out>/table.jsonl`` / ``<out>/table.parquet``) as plain dicts.

One row per (dataset, engine/model, configuration, seed, problem); the columns are listed in
:data:`REQUIRED` and :data:`OPTIONAL`. ``load_table`` accepts the sweep's output folder, the
``.jsonl`` or the ``.parquet``. ``rows_from_results`` turns ordinary ``ttscale run`` results records
into the same row shape (so the report and the plots read both), with ``cand_answers`` (the
candidates' extracted answers, needed for maj@k) filled in from the candidates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.io import read_jsonl, read_parquet

REQUIRED = ("dataset", "problem_id", "model", "strategy", "config", "budget_n", "correct")
"""Columns every analysis needs."""

OPTIONAL: dict[str, Any] = {
    "sweep": "", "engine": "", "params": "{}", "seed": 0, "derived_from": "", "answer": None,
    "reference": None, "generated_tokens": 0, "prompt_tokens": 0, "verifier_tokens": 0,
    "generations": 0, "flops": None, "wall_time_s": 0.0, "cand_correct": [], "cand_scores": [],
    "sample_accuracy": None, "mean_score": None, "cand_answers": None,
}
"""Columns filled with these defaults when a table lacks them (``cand_answers`` is an optional
extension: the candidates' answers, used for maj@k)."""


def all_params_label(strategy: str, params: Mapping[str, Any]) -> str:
    """``"strategy k=v ..."`` with every parameter, keys sorted, values as ``str`` (the label of a
    ``ttscale run`` results file's configuration; sweep rows use the shorter
    :func:`ttscale.lab.recipe.config_label`, which leaves out defaults)."""
    return " ".join([strategy, *(f"{k}={params[k]}" for k in sorted(params))])


def _normalise(row: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [c for c in REQUIRED if c not in row]
    if missing:
        raise ConfigError(f"{where}: not a tidy sweep table row (missing field {', '.join(missing)})")
    out = {**OPTIONAL, **row}
    out["problem_id"] = str(out["problem_id"])
    out["dataset"] = str(out["dataset"])
    out["model"] = str(out["model"])
    try:
        out["budget_n"] = int(out["budget_n"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: field budget_n={row['budget_n']!r} is not an integer") from e
    if out["correct"] is not None and not isinstance(out["correct"], bool):
        raise ConfigError(f"{where}: field correct={row['correct']!r} is not true/false/null")
    if isinstance(out["params"], Mapping):
        out["params"] = json.dumps(dict(out["params"]), sort_keys=True)
    for col in ("cand_correct", "cand_scores"):
        v = out[col]
        if v is None:
            out[col] = []
        elif not isinstance(v, list | tuple):
            raise ConfigError(f"{where}: field {col}={v!r} is not a list")
        else:
            out[col] = list(v)
    if out["cand_answers"] is not None:
        out["cand_answers"] = list(out["cand_answers"])
    for col in ("generated_tokens", "prompt_tokens", "verifier_tokens", "generations"):
        out[col] = int(out[col] or 0)
    out["wall_time_s"] = float(out["wall_time_s"] or 0.0)
    out["seed"] = int(out["seed"] or 0)
    return out


def load_table(path_or_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a tidy sweep table: a sweep output folder (its ``table.jsonl``, else its
    ``table.parquet``), a ``.jsonl`` file or a ``.parquet`` file. Missing optional columns get
    their defaults; a missing required column or a malformed value is a ConfigError naming the
    file, the line and the field."""
    p = Path(path_or_dir)
    if p.is_dir():
        for name in ("table.jsonl", "table.parquet"):
            if (p / name).exists():
                return load_table(p / name)
        raise ConfigError(f"{p} holds no table.jsonl or table.parquet (is it a `ttscale sweep` output folder?)")
    if not p.exists():
        raise ConfigError(f"table {p} does not exist")
    raw = read_parquet(p) if p.suffix == ".parquet" else read_jsonl(p)
    if not raw:
        raise ConfigError(f"table {p} holds no rows")
    return [_normalise(r, f"{p} row {i + 1}") for i, r in enumerate(raw)]


def _budget_n(r: Mapping[str, Any]) -> int:
    params = r.get("params") or {}
    for key in ("n", "max_samples"):
        if isinstance(params.get(key), int):
            return int(params[key])
    mg = (r.get("budget") or {}).get("max_generations")
    if mg:
        return int(mg)
    return max(1, int((r.get("cost") or {}).get("generations") or 0))


def rows_from_results(records: Iterable[Mapping[str, Any]], dataset: str = "") -> list[dict[str, Any]]:
    """Tidy rows from ``ttscale run`` results records. ``budget_n`` is the ``n`` (or
    ``max_samples``) parameter, else the budget's ``max_generations``, else the generations spent;
    ``config`` is :func:`all_params_label`; ``dataset`` is what the caller passes (:func:`load_any`
    uses the part of the file name before ``__``, the dataset slug of ``ttscale run``'s default
    names, else ``"results"``, so that one dataset's runs line up problem by problem)."""
    from ttscale.lab.sweep import run_row

    rows = []
    for r in records:
        row = run_row(r, sweep="", dataset=dataset)
        row["config"] = all_params_label(r.get("strategy", ""), dict(r.get("params") or {}))
        row["budget_n"] = _budget_n(r)
        rows.append(row)
    return rows


def is_table_input(path: str | Path) -> bool:
    """True for a sweep folder, a ``.parquet`` file, or a JSONL whose first row is a tidy row
    (has ``config`` and ``budget_n``); False for ``ttscale run`` results files."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        return True
    if not p.is_file():
        return False
    with p.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "config" in first and "budget_n" in first
    return False


def load_any(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Tidy rows from any mix of sweep tables and ``ttscale run`` results files."""
    from ttscale.lab.report import load_records

    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if is_table_input(p):
            rows.extend(load_table(p))
        else:
            recs = [r for _, r in load_records([p])]
            ds = p.stem.split("__")[0] if "__" in p.stem else "results"
            rows.extend(_normalise(r, str(p)) for r in rows_from_results(recs, dataset=ds))
    return rows
