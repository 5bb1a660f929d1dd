"""Small file and JSON helpers shared by every layer: one meaning each.

- :func:`slug`: a file-name-safe label for a model, dataset or strategy name (paths become their stem).
- :func:`jsonable`: a JSON-ready copy of any value (dataclasses as dicts, tuples and sets as lists,
  anything else JSON cannot hold as its ``str``).
- :func:`read_jsonl` / :func:`read_parquet`: rows of a file, with a :class:`ConfigError` naming the
  file (and the line) on any problem.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError

_DATA_SUFFIXES = (".jsonl", ".json", ".gguf", ".csv", ".parquet")


def slug(s: str) -> str:
    """``s`` as a file-name-safe label; a path (or a data/model file name) becomes its stem."""
    if "/" in s or s.endswith(_DATA_SUFFIXES):
        s = Path(s).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def _default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, tuple | set | frozenset):
        return list(o)
    return str(o)


def jsonable(obj: Any) -> Any:
    """A JSON-ready deep copy of ``obj`` (dataclasses as dicts, tuples/sets as lists, others as str)."""
    return json.loads(json.dumps(obj, default=_default))


def read_jsonl(path: str | Path) -> list[Any]:
    """The JSON values of a JSON-lines file, blank lines skipped; a bad line is a ConfigError naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    rows = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: line {no} is not valid JSON ({e.msg})") from e
    return rows


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file as dicts; an unreadable file is a ConfigError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(Path(path)).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"cannot read parquet file {path}: {e}") from e
