"""What a run shows while it works: problems and samples done, tokens as they stream, tok/s.

Two forms, one source (:class:`ttscale.core.budget.LiveTally`, fed by the context as engines stream):

- on a terminal, a live bar refreshed twice a second, whose label says what is happening
  (``waiting for first tokens`` while the prompts are processed, then the strategy's name);
- otherwise (stdout redirected to a file or a pipe), one plain line at the start, one every
  ``interval_s`` seconds and one at the end, so a log shows the run is alive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttscale.core.budget import LiveTally


def _elapsed(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class RunProgress:
    """Progress of one run (see the module docstring). Use as an async context manager."""

    def __init__(
        self,
        name: str,
        *,
        total: int,
        done_before: int,
        live: LiveTally,
        mode: str = "auto",
        interval_s: float = 15.0,
        console: Console | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name = name
        self.total = total
        self.done = done_before
        self.live = live
        self.console = console or Console()
        if mode == "auto":
            mode = "bar" if self.console.is_terminal else "lines"
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be auto, bar, lines or off, got {mode!r}")
        self.mode = mode
        self.interval_s = interval_s
        self.clock = clock
        self.acc = "-"
        self.t0 = clock()
        self._bar: Progress | None = None
        self._task_id: int | None = None
        self._ticker: asyncio.Task[None] | None = None

    # --- what is shown ------------------------------------------------------------------------
    def stats(self) -> dict[str, str]:
        tokens, samples = self.live.read()
        first = self.live.first_token_at
        elapsed = self.clock() - first if first is not None else 0.0  # generation speed, from the first token
        tps = f"{tokens / elapsed:.1f}" if tokens and elapsed >= 1.0 else "-"
        return {"tokens": f"{tokens:,}", "samples": str(samples), "tps": tps, "acc": self.acc}

    def phase(self) -> str:
        return self.name if self.live.read()[0] else f"{self.name}: waiting for first tokens"

    def line(self) -> str:
        st = self.stats()
        return (f"[{_elapsed(self.clock() - self.t0)}] {self.phase()}: {self.done}/{self.total} problems, "
                f"{st['samples']} samples, {st['tokens']} tokens ({st['tps']} tok/s), acc {st['acc']}")

    # --- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> RunProgress:
        self.t0 = self.clock()
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[samples]} samples"), TextColumn("acc {task.fields[acc]}"),
                TextColumn("{task.fields[tokens]} tok"), TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self._task_id = self._bar.add_task(self.phase(), total=self.total, completed=self.done, **self.stats())
            self._bar.start()
        if self.mode != "off":
            self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._bar is not None:
            self.refresh()
            self._bar.stop()
        elif self.mode == "lines":
            self._print_line()

    async def _tick(self) -> None:
        if self.mode == "lines":
            self._print_line()
        every = 0.5 if self.mode == "bar" else self.interval_s
        while True:
            await asyncio.sleep(every)
            if self.mode == "bar":
                self.refresh()
            else:
                self._print_line()

    def _print_line(self) -> None:
        self.console.print(self.line(), soft_wrap=True, highlight=False, markup=False)

    def refresh(self) -> None:
        if self._bar is not None and self._task_id is not None:
            self._bar.update(self._task_id, description=self.phase(), completed=self.done, **self.stats())

    def problem_done(self, acc: str) -> None:
        """One more problem finished (``acc``: the accuracy so far, as shown)."""
        self.done += 1
        self.acc = acc
        if self.mode == "bar":
            self.refresh()
