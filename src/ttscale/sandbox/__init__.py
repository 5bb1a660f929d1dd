"""The one place untrusted text runs: model-written programs, and graders that may evaluate model text.

Every program runs in its own process, never in the ttscale process: a fresh temporary directory, no
network, a read-only file system with home directories hidden (bubblewrap, when present; see
:mod:`ttscale.sandbox.isolation` for what is used where it is not), resource limits (CPU seconds,
address space, file size, processes), a wall-clock timeout that kills the whole process group, a
minimal environment and captured, truncated output.

- :class:`SandboxExecutor`: the :class:`ttscale.core.execution.CodeExecutor` for strategies,
  verifiers and code graders (a bounded pool of such processes);
- :class:`SandboxWorker`: a long-lived sandboxed process that imports a library once and evaluates
  each call in a forked child (graders such as reasoning-gym's scorers).

Layer: imports only :mod:`ttscale.core`.
"""

from ttscale.sandbox.executor import SandboxExecutor, default_concurrency, results_from, shared_executor
from ttscale.sandbox.isolation import Isolation, detect
from ttscale.sandbox.process import Limits, ProcessOutput, run_sandboxed
from ttscale.sandbox.worker import SandboxWorker

__all__ = [
    "Isolation",
    "Limits",
    "ProcessOutput",
    "SandboxExecutor",
    "SandboxWorker",
    "default_concurrency",
    "detect",
    "results_from",
    "run_sandboxed",
    "shared_executor",
]
