"""Turn a dataset spec into a :class:`Dataset` of problems, and a dataset into its grader.

A spec is one of:

- ``default`` (or empty): the bundled ``gsm_symbolic_40`` set (40 reasoning-gym ``gsm_symbolic``
  problems with integer answers, graded by math equivalence);
- a file: ``.jsonl`` / ``.ndjson``, ``.json`` (a list of objects, or ``{"data"|"problems"|"rows": [...]}``),
  ``.csv`` or ``.parquet``. Recorded-sample files (``problem_num`` + ``gold_answer`` + ``all_answers``)
  and ttscale results files (``problem_id`` + ``reference`` + ``candidates``) load as datasets too;
- a preset: ``gsm8k``, ``math500``, ``aime24`` (Hugging Face, needs ``ttscale[hf]``);
- ``hf:NAME[:CONFIG][@SPLIT]``: any Hugging Face dataset;
- ``rg:TASK``: a reasoning-gym task generated offline (``seed``, ``size``), graded by the task's scorer;
- ``humaneval``: the 164 HumanEval problems (``ttscale[code]``), and any ``.jsonl``/``.jsonl.gz`` file of
  the same shape (``prompt``, ``entry_point``, ``test``): graded by running the gold tests in the
  sandbox (:mod:`ttscale.datasets.code`);
- ``meeting``: generated meeting-scheduling puzzles (``seed``, ``size``; default 20, or ``limit``),
  checked by code (:mod:`ttscale.evaluators.meeting`).

Data stays raw: no instructions are added to the questions (strategies add the system prompt).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.io import read_jsonl, read_parquet
from ttscale.core.protocols import Grader
from ttscale.core.types import Problem
from ttscale.datasets.presets import PRESETS, Preset, load_hf_rows, parse_hf_spec

QUESTION_FIELDS = ("question", "problem", "prompt", "input", "query")
ANSWER_FIELDS = ("answer", "gold_answer", "final_answer", "solution", "target", "expected_answer")
ID_FIELDS = ("id", "problem_id", "unique_id", "problem_num", "idx")
FILE_FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
GRADERS = ("math", "reasoning_gym", "meeting", "code")

DEFAULT_NAME = "gsm_symbolic_40"
DEFAULT_FILE = "gsm_symbolic_40.jsonl"

_PLAIN_NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?")


@dataclass(frozen=True)
class Dataset:
    """A named set of problems and the spec of the grader that judges answers to them
    (``"math"``: math equivalence with ``Problem.answer``; ``"reasoning_gym"``: the task's scorer)."""

    name: str
    problems: tuple[Problem, ...]
    grader: str = "math"
    fields: tuple[str, ...] = ()  # the source's fields (first row of a file or Hugging Face dataset)
    answer_field: str | None = None  # where reference answers came from (None: none found)
    answer_field_guessed: bool = False  # picked from ANSWER_FIELDS rather than named by the user

    @property
    def has_references(self) -> bool:
        return any(p.answer is not None for p in self.problems)

    def __len__(self) -> int:
        return len(self.problems)


def make_grader(dataset: Dataset | str, **params: Any) -> Grader:
    """The grader for a dataset (or a grader spec string)."""
    spec = dataset if isinstance(dataset, str) else dataset.grader
    if spec == "math":
        from ttscale.verifiers.math_answers import MathAnswers

        return MathAnswers(**params)
    if spec == "reasoning_gym":
        from ttscale.datasets.reasoning_gym import ReasoningGymGrader

        return ReasoningGymGrader(**params)
    if spec == "meeting":
        from ttscale.evaluators.meeting import MeetingGrader

        return MeetingGrader(**params)
    if spec == "code":
        from ttscale.datasets.code import make_code_grader

        return make_code_grader(**params)
    raise ConfigError(f"unknown grader {spec!r} (known: {', '.join(GRADERS)})")


# ----------------------------------------------------------------------------------------------------
# reading files


def _read_json(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        try:  # a JSON-lines file named .json
            return read_jsonl(path)
        except ConfigError:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict):
        for key in ("data", "problems", "rows", "examples", "questions"):
            if isinstance(data.get(key), list):
                return data[key]
        raise ConfigError(
            f"{path}: a JSON object needs a list under 'data', 'problems' or 'rows'; "
            f"it has keys: {', '.join(map(str, data)) or '(none)'}"
        )
    if isinstance(data, list):
        return data
    raise ConfigError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")


def _read_csv(path: Path) -> list[Any]:
    with path.open(encoding="utf-8", newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a data file as dicts (ConfigError naming the file on any problem)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ConfigError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(FILE_FORMATS)}"
        )
    if not path.exists():
        raise ConfigError(f"dataset file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"dataset path is not a file: {path}")
    reader = {
        ".jsonl": read_jsonl,
        ".ndjson": read_jsonl,
        ".json": _read_json,
        ".csv": _read_csv,
        ".parquet": read_parquet,
    }[suffix]
    try:
        rows = reader(path)
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"cannot read dataset file {path}: {e}") from e
    except Exception as e:  # pyarrow's errors
        raise ConfigError(f"cannot read dataset file {path}: {type(e).__name__}: {e}") from e
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(
                f"{path}: row {i} is a {type(row).__name__}, expected an object with named fields"
            )
    return rows


# ----------------------------------------------------------------------------------------------------
# rows -> problems


def _answer_str(value: Any) -> str | None:
    """A reference answer as text; GSM8K-style ``"... #### 42"`` keeps only what follows ``####``
    (thousands separators dropped from a plain number). MATH-style ``\\boxed{}`` solutions are kept
    whole: the grader extracts the boxed answer."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str):
        return str(value)
    text = value.strip()
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        if tail:
            return tail.replace(",", "") if _PLAIN_NUMBER.fullmatch(tail) else tail
    return text


def _messages(value: Any) -> tuple[dict[str, str], ...] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, Mapping) or "content" not in m:
            return None
        out.append({"role": str(m.get("role", "user")), "content": str(m["content"])})
    return tuple(out)


def _detect(keys: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {k.lower(): k for k in keys}
    for c in candidates:
        if c in keys:
            return c
        if c in lower:
            return lower[c]
    return None


def _fields_msg(keys: Sequence[str]) -> str:
    return ", ".join(map(str, keys)) or "(none)"


def is_recorded(row: Mapping[str, Any]) -> bool:
    return "gold_answer" in row and "all_answers" in row


def is_results(row: Mapping[str, Any]) -> bool:
    return "problem_id" in row and "candidates" in row


def answer_field_of(
    first: Mapping[str, Any], *, question_field: str | None = None, answer_field: str | None = None
) -> tuple[str | None, bool]:
    """The field :func:`rows_to_problems` takes reference answers from, given the first row, and
    whether it was guessed (picked from :data:`ANSWER_FIELDS`) rather than named."""
    if question_field is None and answer_field is None:
        if is_recorded(first):
            return "gold_answer", False
        if is_results(first):
            return "reference", False
    if answer_field is not None:
        return answer_field, False
    af = _detect(list(first.keys()), ANSWER_FIELDS)
    return af, af is not None


def rows_to_problems(
    rows: Sequence[Mapping[str, Any]],
    *,
    source: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Problem]:
    """Problems from rows of named fields; ``source`` (a file or dataset name) goes into errors."""
    if not rows:
        return []
    first = rows[0]
    keys = list(first.keys())

    if question_field is None and answer_field is None and is_recorded(first):
        return _recorded(rows, source)
    if question_field is None and answer_field is None and is_results(first):
        return _results(rows, source)

    has_messages = question_field is None and "messages" in first and _messages(first["messages"]) is not None
    if question_field is not None:
        if question_field not in first:
            raise ConfigError(
                f"{source}: question field {question_field!r} not found; fields are: {_fields_msg(keys)}"
            )
        qf: str | None = question_field
    else:
        qf = _detect(keys, QUESTION_FIELDS)
        if qf is None and not has_messages:
            raise ConfigError(
                f"{source}: no question field found (looked for {', '.join(QUESTION_FIELDS)} or messages); "
                f"fields are: {_fields_msg(keys)}. Name it with --question-field."
            )
    if answer_field is not None:
        if answer_field not in first:
            raise ConfigError(
                f"{source}: answer field {answer_field!r} not found; fields are: {_fields_msg(keys)}"
            )
        af: str | None = answer_field
    else:
        af = _detect(keys, ANSWER_FIELDS)
    if id_field is not None and id_field not in first:
        raise ConfigError(f"{source}: id field {id_field!r} not found; fields are: {_fields_msg(keys)}")
    idf = id_field or _detect(keys, ID_FIELDS)

    problems: list[Problem] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        pid = str(row[idf]) if idf and row.get(idf) not in (None, "") else str(i)
        if pid in seen:
            raise ConfigError(
                f"{source}: problem id {pid!r} (field {idf or 'row index'!r}) appears more than once"
            )
        seen.add(pid)
        msgs = _messages(row.get("messages")) if has_messages else None
        prompt = None
        if msgs is None:
            if qf is None or qf not in row:
                raise ConfigError(
                    f"{source}: row {i} has no question field {qf or 'messages'!r}; "
                    f"its fields are: {_fields_msg(list(row))}"
                )
            prompt = "" if row[qf] is None else str(row[qf])
        if af is not None and af not in row:
            raise ConfigError(
                f"{source}: row {i} has no answer field {af!r}; its fields are: {_fields_msg(list(row))}"
            )
        meta = row.get("metadata")
        meta = dict(meta) if isinstance(meta, Mapping) else {}
        problems.append(
            Problem(
                id=pid,
                messages=msgs or (),
                prompt=prompt,
                answer=_answer_str(row[af]) if af else None,
                metadata=meta,
            )
        )
    return problems


def _recorded(rows: Sequence[Mapping[str, Any]], source: str) -> list[Problem]:
    problems = []
    for i, row in enumerate(rows):
        if not is_recorded(row):
            raise ConfigError(
                f"{source}: row {i} is not a recorded sample (needs gold_answer and all_answers); "
                f"its fields are: {_fields_msg(list(row))}"
            )
        num = row.get("problem_num", row.get("id", i))
        problems.append(
            Problem(
                id=str(num),
                prompt=f"Recorded problem {num}",
                answer=_answer_str(row["gold_answer"]),
                metadata={"recorded": True},
            )
        )
    return problems


def _results(rows: Sequence[Mapping[str, Any]], source: str) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if "problem_id" not in row:
            raise ConfigError(
                f"{source}: row {i} has no problem_id; its fields are: {_fields_msg(list(row))}"
            )
        pid = str(row["problem_id"])
        if pid in seen:
            continue
        seen.add(pid)
        problems.append(
            Problem(
                id=pid,
                prompt=f"Problem {pid} (from a results file)",
                answer=_answer_str(row.get("reference")),
                metadata={"from_results": True},
            )
        )
    return problems


# ----------------------------------------------------------------------------------------------------
# entry point


def load_file(
    path: str | Path,
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    grader: str = "math",
) -> Dataset:
    """A dataset from a local file."""
    p = Path(path).expanduser()
    rows = read_rows(p)
    if not rows:
        raise ConfigError(f"dataset file {p} has no rows")
    problems = rows_to_problems(rows, source=str(p), question_field=question_field, answer_field=answer_field)
    af, guessed = answer_field_of(rows[0], question_field=question_field, answer_field=answer_field)
    return Dataset(name=p.stem, problems=tuple(problems), grader=grader, fields=tuple(map(str, rows[0])),
                   answer_field=af, answer_field_guessed=guessed)


def default_dataset_path() -> Path:
    """Where the bundled default dataset file is."""
    return Path(str(resources.files("ttscale") / "data" / DEFAULT_FILE))


def load_default() -> Dataset:
    ds = load_file(default_dataset_path())
    return dataclasses.replace(ds, name=DEFAULT_NAME, grader="math", answer_field_guessed=False)


def _load_hf(
    name: str,
    config: str | None,
    split: str | None,
    preset: Preset | None,
    *,
    question_field: str | None,
    answer_field: str | None,
    label: str,
) -> Dataset:
    rows = load_hf_rows(name, config, split)
    if not rows:
        raise ConfigError(f"Hugging Face dataset {name!r} split {split!r} has no rows")
    qf = question_field or (preset.question_field if preset else None)
    af = answer_field or (preset.answer_field if preset else None)
    problems = rows_to_problems(
        rows,
        source=f"Hugging Face dataset {name}" + (f"@{split}" if split else ""),
        question_field=qf,
        answer_field=af,
        id_field=preset.id_field if preset and preset.id_field and preset.id_field in rows[0] else None,
    )
    picked, guessed = answer_field_of(rows[0], question_field=qf, answer_field=af)
    return Dataset(name=label, problems=tuple(problems), grader="math", fields=tuple(map(str, rows[0])),
                   answer_field=picked, answer_field_guessed=guessed)


def _unknown(spec: str) -> ConfigError:
    return ConfigError(
        f"unknown dataset {spec!r}: not a file, preset or prefixed spec. Use a path to a "
        f"{'/'.join(f.lstrip('.') for f in FILE_FORMATS)} file, 'default', a preset "
        f"({', '.join(PRESETS)}, humaneval), hf:NAME[:CONFIG][@SPLIT] or rg:TASK (a reasoning-gym task)"
    )


def load_dataset(
    spec: str | Path | None = "default",
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    size: int | None = None,
) -> Dataset:
    """Load a dataset from a spec (see the module docstring). ``limit`` keeps the first N problems;
    ``seed`` and ``size`` apply to ``rg:`` tasks; ``split`` to Hugging Face datasets."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    s = "" if spec is None else str(spec).strip()
    low = s.lower()
    if low in ("", "default"):
        ds = load_default()
    elif low.startswith("rg:"):
        from ttscale.datasets.reasoning_gym import DEFAULT_SIZE, load_rg

        task = s[3:].strip()
        n = DEFAULT_SIZE if size is None else size
        problems = load_rg(task, seed=seed, size=n)
        ds = Dataset(name=f"rg:{task}-s{seed}-n{n}", problems=tuple(problems), grader="reasoning_gym")
    elif low == "meeting" and not Path(s).exists():
        from ttscale.evaluators.meeting import load_meeting

        problems = load_meeting(seed=seed, size=size if size is not None else (limit or None))
        ds = Dataset(name=f"meeting-s{seed}", problems=tuple(problems), grader="meeting")
    elif low == "humaneval" and not Path(s).exists():
        from ttscale.datasets.code import load_humaneval

        ds = Dataset(name="humaneval", problems=tuple(load_humaneval()), grader="code")
    elif low.startswith("hf:"):
        name, config, hf_split = parse_hf_spec(s[3:])
        ds = _load_hf(
            name,
            config,
            split or hf_split,
            None,
            question_field=question_field,
            answer_field=answer_field,
            label=f"hf:{name}" + (f":{config}" if config else ""),
        )
    elif low in PRESETS and not Path(s).exists():
        p = PRESETS[low]
        ds = _load_hf(
            p.hf_name,
            p.config,
            split or p.split,
            p,
            question_field=question_field,
            answer_field=answer_field,
            label=low,
        )
    else:
        path = Path(s).expanduser()
        from ttscale.datasets.code import is_code_file, load_code_file

        if path.exists() and is_code_file(path):
            ds = Dataset(name=path.name.split(".")[0], problems=tuple(load_code_file(path)), grader="code")
        elif path.suffix.lower() in FILE_FORMATS or path.exists():
            ds = load_file(path, question_field=question_field, answer_field=answer_field)
        else:
            raise _unknown(s)
    if limit is not None:
        ds = dataclasses.replace(ds, problems=ds.problems[:limit])
    return ds
