"""Everything ``ttscale view`` was given: runs and sweeps by id, refreshed for the live view.

Ids are short and stable while the server runs: ``r1, r2, ...`` for runs (in the order met) and
``s1, s2, ...`` for sweeps (one per model of a table). A sweep folder contributes its table (when
written) and each ``runs/*.jsonl``; files that appear in it later are picked up by :meth:`refresh`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.policy import load_policy
from ttscale.lab.table_io import load_table
from ttscale.view.data import (
    ResultsRun,
    Run,
    Sweep,
    TableRun,
    classify,
    file_stamp,
    sweep_runs_dir,
    table_runs,
)


def _open_results(rid: str, path: Path) -> ResultsRun:
    """A results file; a partial last line gets one more look (a run may be mid-write)."""
    try:
        return ResultsRun(rid, path)
    except ConfigError as e:
        if "partial line" not in str(e):
            raise
        time.sleep(0.3)
        return ResultsRun(rid, path)


def _sweep_config(run: ResultsRun) -> str | None:
    """The sweep-table config label of a results file's first record (how a sweep names it)."""
    from ttscale.lab.sweep import run_row

    if not run.rows:
        return None
    return str(run_row(run.record(0), sweep="", dataset="")["config"])


class Catalog:
    """Runs and sweeps of the inputs (module docstring)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        if not paths:
            raise ConfigError("give at least one results file, sweep folder or table to view")
        self.runs: dict[str, Run] = {}
        self.sweeps: dict[str, Sweep] = {}
        self.version = 0
        self._rids = (f"r{i}" for i in itertools.count(1))
        self._sids = (f"s{i}" for i in itertools.count(1))
        self._lock = threading.Lock()
        self._tables: dict[Path, tuple[int, int]] = {}
        self._dirs: list[Path] = []
        self._files: dict[Path, str] = {}
        kinds = [(Path(p), classify(Path(p))) for p in paths]
        policies = [p for p, k in kinds if k == "policy"]
        if len(policies) > 1:
            raise ConfigError(f"give at most one policy JSON (got {', '.join(map(str, policies))})")
        self.policy = load_policy(policies[0]) if policies else None
        if len(kinds) == len(policies):
            raise ConfigError("a policy JSON alone has nothing to show: add the sweep folder or table it was fitted on")
        for p, k in kinds:
            if k == "results":
                self._add_results(p)
            elif k == "table":
                self._add_table(p)
            elif k == "sweep":
                self._dirs.append(p)
                self._scan_dir(p)
        self.inputs = [{"path": str(p), "kind": k} for p, k in kinds]

    # --- building -------------------------------------------------------------------------------
    def _add_results(self, path: Path) -> ResultsRun:
        key = path.resolve()
        if key in self._files:
            return self.runs[self._files[key]]  # type: ignore[return-value]
        run = _open_results(next(self._rids), path)
        self.runs[run.id] = run
        self._files[key] = run.id
        return run

    def _add_table(self, path: Path) -> None:
        stamp = file_stamp(path)
        rows = load_table(path)
        self._tables[path] = stamp
        src = str(path)
        for rid in [r.id for r in self.runs.values() if isinstance(r, TableRun) and r.meta.get("path") == src]:
            del self.runs[rid]
        for s in [s for s in self.sweeps.values() if s.source == src]:
            del self.sweeps[s.id]
        for run in table_runs(rows, src, self._rids):
            self.runs[run.id] = run
        by_model: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_model.setdefault(str(r["model"]), []).append(r)
        for model, mrows in by_model.items():
            links = self._config_links(src, model)
            sid = next(self._sids)
            pol = self.policy if self.policy and str(self.policy.get("fit", {}).get("model")) == model else None
            self.sweeps[sid] = Sweep(id=sid, label=f"{path.name} · {model}", source=src, rows=mrows,
                                     policy=pol, run_for_config=links)

    def _config_links(self, src: str, model: str) -> dict[str, str]:
        """config label -> the run to open for it: the sweep's results file where there is one,
        else the table's own rows of that config (first seed)."""
        links: dict[str, str] = {}
        for r in self.runs.values():
            if isinstance(r, TableRun) and r.meta["path"] == src and r.meta["model"] == model:
                links.setdefault(str(r.meta["config"]), r.id)
        root = Path(src).parent
        for r in self.runs.values():
            if isinstance(r, ResultsRun) and r.path.parent == root / "runs" and r.meta.get("model") == model:
                cfg = _sweep_config(r)
                if cfg is not None and cfg in links and self.runs[links[cfg]].kind == "table":
                    links[cfg] = r.id
        return links

    def _scan_dir(self, d: Path) -> bool:
        changed = False
        for f in sweep_runs_dir(d):
            if f.resolve() not in self._files:
                self._add_results(f)
                changed = True
        for name in ("table.jsonl", "table.parquet"):
            t = d / name
            if t.exists():
                if self._tables.get(t) != file_stamp(t):
                    self._add_table(t)
                    changed = True
                break
        return changed

    # --- live -----------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Pick up appended results, new sweep files and rewritten tables; returns the version
        (bumped when anything changed). A file that became unreadable keeps its last state."""
        with self._lock:
            changed = False
            for run in list(self.runs.values()):
                try:
                    changed |= run.refresh()
                except (ConfigError, OSError):
                    continue
            for d in self._dirs:
                try:
                    changed |= self._scan_dir(d)
                except (ConfigError, OSError):
                    continue
            for t, stamp in list(self._tables.items()):
                if t.parent not in self._dirs and file_stamp(t) != stamp and file_stamp(t)[0] > 0:
                    try:
                        self._add_table(t)
                        changed = True
                    except ConfigError:
                        self._tables[t] = file_stamp(t)
            if changed:
                self.version += 1
            return self.version

    def state(self) -> dict[str, Any]:
        """What the live view polls: the version and each run's size."""
        return {"version": self.version,
                "runs": {rid: {"problems": len(r.rows), **({"bytes": r.good} if isinstance(r, ResultsRun) else {})}
                         for rid, r in self.runs.items()}}

    def index(self) -> dict[str, Any]:
        return {"version": self.version, "inputs": self.inputs,
                "runs": [r.summary() for r in self.runs.values()],
                "sweeps": [{"id": s.id, "label": s.label, "source": s.source, "rows": len(s.rows),
                            "configs": len({r["config"] for r in s.rows}), "policy_given": s.policy is not None}
                           for s in self.sweeps.values()]}

    def run(self, rid: str) -> Run:
        try:
            return self.runs[rid]
        except KeyError:
            raise KeyError(f"no run {rid!r}") from None

    def sweep(self, sid: str) -> Sweep:
        try:
            return self.sweeps[sid]
        except KeyError:
            raise KeyError(f"no sweep {sid!r}") from None
