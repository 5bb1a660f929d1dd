"""A graceful stop for long runs and sweeps: no new problem starts, the ones in flight finish.

A killed run loses the problems in flight (with ``concurrency`` 8 and slow samples, that can be many
minutes of work). On a machine with a wall-clock limit (a Slurm job, a preemptible VM, a lease) it is
better to stop *starting* problems a little before the end: ``--stop-after 2h`` closes the gate two
hours after the command started, and ``kill -USR1 PID`` closes it at once. Every problem already
started is finished and saved; rerunning the same command resumes with the rest. The CLI then exits
with :data:`EXIT_STOPPED` (75, ``EX_TEMPFAIL``), so a job script can tell "stopped early, resume" from
"done" (0) and from a failure.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass

from ttscale.core.errors import ConfigError

EXIT_STOPPED = 75
"""Exit status of a run or sweep stopped by its gate with problems left (``EX_TEMPFAIL``: rerun to resume)."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, *, option: str = "--stop-after") -> float:
    """Seconds in ``text``: ``90`` (seconds), ``45s``, ``90m``, ``1.5h``, ``2h30m``, ``1d``."""
    s = str(text).strip().lower().replace(" ", "")
    try:
        seconds = float(s)
    except ValueError:
        parts = _PART.findall(s)
        if not parts or "".join(a + b for a, b in parts) != s:
            raise ConfigError(f"{option}: cannot read {text!r} as a duration; use e.g. 90m, 2h, 2h30m or "
                              "3600 (seconds)") from None
        seconds = sum(float(a) * _UNITS[b] for a, b in parts)
    if not seconds > 0:
        raise ConfigError(f"{option}: the duration must be > 0, got {text!r}")
    return seconds


@dataclass
class StopGate:
    """Open until :meth:`close` is called or ``deadline`` (``time.monotonic()``) passes."""

    deadline: float | None = None
    reason: str | None = None
    """Why the gate closed (None while open)."""
    _label: str = ""

    @classmethod
    def after(cls, seconds: float | None, label: str = "") -> StopGate:
        """A gate that closes ``seconds`` from now (never, for None); ``label`` names the option."""
        return cls(deadline=None if seconds is None else time.monotonic() + seconds, _label=label)

    def close(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def closed(self) -> bool:
        if self.reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = self._label or "the deadline passed"
        return self.reason is not None

    def close_on_sigusr1(self) -> None:
        """``kill -USR1 PID`` closes the gate (main thread only; the handler only sets a field)."""
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.close("SIGUSR1"))


def cli_gate(stop_after: str | None) -> StopGate:
    """The gate of a ``ttscale run``/``sweep`` command: ``--stop-after`` and SIGUSR1."""
    seconds = parse_duration(stop_after) if stop_after is not None else None
    gate = StopGate.after(seconds, f"--stop-after {stop_after}" if stop_after is not None else "")
    gate.close_on_sigusr1()
    return gate
