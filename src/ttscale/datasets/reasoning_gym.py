"""reasoning-gym tasks as datasets (``rg:TASK``) and their grader.

Problems carry what grading needs in ``Problem.metadata`` -- ``rg_task`` (the task name), ``rg_entry``
(the generated entry, made JSON-safe) and ``rg_seed`` / ``rg_size`` -- so a results file can be graded
later without regenerating the dataset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import cache
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


@cache
def _scorer(task: str, seed: int | None, size: int | None) -> Callable[[str | None, dict[str, Any]], float]:
    import reasoning_gym

    _check_task(task)
    try:
        return reasoning_gym.get_score_answer_fn(task)
    except Exception:  # the task's default config may not build; rebuild the one that made the entry
        kwargs: dict[str, Any] = {}
        if seed is not None:
            kwargs["seed"] = seed
        if size is not None:
            kwargs["size"] = size
        return reasoning_gym.create_dataset(task, **kwargs).score_answer


class ReasoningGymGrader:
    """Grades with the reasoning-gym task's own ``score_answer``: correct when the score reaches
    ``threshold``. Returns ``None`` for a problem without ``rg_task`` / ``rg_entry`` metadata."""

    name = "reasoning_gym"

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold
        self._warned: set[str] = set()

    def score(self, problem: Problem, answer: str | None) -> float | None:
        """The task's raw score for ``answer`` (``None`` when the problem has no task entry)."""
        meta = problem.metadata or {}
        task, entry = meta.get("rg_task"), meta.get("rg_entry")
        if not task or not isinstance(entry, dict):
            return None
        if answer is None:
            return 0.0
        fn = _scorer(str(task), meta.get("rg_seed"), meta.get("rg_size"))
        try:
            return float(fn(answer, entry))
        except Exception as e:
            if task not in self._warned:
                self._warned.add(str(task))
                log.warning("reasoning-gym scorer for %s failed (%s); counting the answer as wrong", task, e)
            return 0.0

    async def grade(self, problem: Problem, answer: str | None) -> bool | None:
        s = self.score(problem, answer)
        return None if s is None else s >= self.threshold
