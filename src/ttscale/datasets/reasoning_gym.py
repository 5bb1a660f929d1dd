"""reasoning-gym tasks as datasets (``rg:TASK``) and their grader.

Problems carry what grading needs in ``Problem.metadata`` -- ``rg_task`` (the task name), ``rg_entry``
(the generated entry, made JSON-safe) and ``rg_seed`` / ``rg_size`` -- so a results file can be graded
later without regenerating the dataset.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.core.types import Problem

log = logging.getLogger(__name__)

DEFAULT_SIZE = 50


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data (tuples become lists, sets sorted lists, other objects ``str``)."""

    def default(o: Any) -> Any:
        if isinstance(o, set | frozenset):
            return sorted(o, key=repr)
        if hasattr(o, "tolist"):  # numpy arrays and scalars
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def task_names() -> list[str]:
    """The registered reasoning-gym task names."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def _check_task(task: str) -> None:
    names = task_names()
    if task not in names:
        import difflib

        close = difflib.get_close_matches(task, names, n=5, cutoff=0.5)
        examples = close or ["gsm_symbolic", "basic_arithmetic", "chain_sum", "leg_counting", "word_sorting"]
        raise ConfigError(
            f"unknown reasoning-gym task {task!r}; try one of: {', '.join(examples)} "
            f'({len(names)} tasks in all, e.g. `python -c "from reasoning_gym.factory import DATASETS; '
            f'print(sorted(DATASETS))"`)'
        )


def load_rg(task: str, *, seed: int = 0, size: int | None = None) -> list[Problem]:
    """Generate ``size`` problems of a reasoning-gym task (offline, deterministic for ``seed``)."""
    import reasoning_gym

    task = task.strip()
    if not task:
        raise ConfigError("rg: needs a task name, e.g. rg:gsm_symbolic")
    _check_task(task)
    size = DEFAULT_SIZE if size is None else int(size)
    if size < 1:
        raise ConfigError(f"rg:{task}: size must be >= 1, got {size}")
    try:
        ds = reasoning_gym.create_dataset(task, seed=seed, size=size)
    except Exception as e:  # config validation of the task
        raise ConfigError(f"rg:{task}: reasoning-gym could not build the task: {e}") from e
    problems = []
    for i in range(size):
        entry = ds[i]
        answer = entry.get("answer")
        problems.append(
            Problem(
                id=f"{task}-{i}",
                prompt=str(entry["question"]),
                answer=None if answer is None else str(answer),
                metadata={"rg_task": task, "rg_entry": jsonable(entry), "rg_seed": seed, "rg_size": size},
            )
        )
    return problems


_SETUP = """
import functools

import reasoning_gym


@functools.cache
def scorer(task, seed, size):
    try:
        return reasoning_gym.get_score_answer_fn(task)
    except Exception:  # the task's default config may not build; rebuild the one that made the entry
        kwargs = {}
        if seed is not None:
            kwargs["seed"] = seed
        if size is not None:
            kwargs["size"] = size
        return reasoning_gym.create_dataset(task, **kwargs).score_answer
"""
_CALL = "float(scorer(task, seed, size)(answer, entry))"
_WARM = "scorer(task, seed, size)"  # built once in the worker (no model text), inherited by each call


class ReasoningGymGrader:
    """Grades with the reasoning-gym task's own ``score_answer``: correct when the score reaches
    ``threshold``. Returns ``None`` for a problem without ``rg_task`` / ``rg_entry`` metadata.

    Several scorers ``eval()`` the answer or parse it with sympy, so scoring runs in the sandbox
    (:class:`ttscale.sandbox.SandboxWorker`: no network, read-only file system, a fresh forked
    process per answer, killed after ``timeout`` seconds); a scorer that fails or runs out of time
    counts the answer as wrong."""

    name = "reasoning_gym"

    def __init__(self, threshold: float = 1.0, timeout: float = 10.0) -> None:
        from ttscale.sandbox import SandboxWorker

        self.threshold = threshold
        self.timeout = float(timeout)
        self._warned: set[str] = set()
        self._worker = SandboxWorker(_SETUP)

    def _request(self, problem: Problem, answer: str | None) -> dict[str, Any] | float | None:
        meta = problem.metadata or {}
        task, entry = meta.get("rg_task"), meta.get("rg_entry")
        if not task or not isinstance(entry, dict):
            return None
        if answer is None:
            return 0.0
        _check_task(str(task))
        return {"task": str(task), "seed": meta.get("rg_seed"), "size": meta.get("rg_size"),
                "answer": str(answer), "entry": entry}

    def _value(self, task: str, reply: dict[str, Any]) -> float:
        if reply.get("status") == "pass" and isinstance(reply.get("value"), int | float):
            return float(reply["value"])
        if task not in self._warned:
            self._warned.add(task)
            log.warning("reasoning-gym scorer for %s: %s (%s); counting the answer as wrong",
                        task, reply.get("status"), reply.get("message", ""))
        return 0.0

    @staticmethod
    def _warm(req: dict[str, Any]) -> dict[str, Any]:
        return {"warm": _WARM, "warm_data": {k: req[k] for k in ("task", "seed", "size")}}

    def score(self, problem: Problem, answer: str | None) -> float | None:
        """The task's raw score for ``answer`` (``None`` when the problem has no task entry)."""
        req = self._request(problem, answer)
        if not isinstance(req, dict):
            return req
        return self._value(req["task"], self._worker.call_sync(_CALL, req, self.timeout, **self._warm(req)))

    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        req = self._request(problem, answer)
        if not isinstance(req, dict):
            s = req
        else:
            s = self._value(req["task"], await self._worker.call(_CALL, req, self.timeout, **self._warm(req)))
        return None if s is None else s >= self.threshold

    def close(self) -> None:
        """Stop the sandboxed scorer process (it also stops with this process)."""
        self._worker.close()
