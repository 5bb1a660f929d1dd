"""A thread pool whose queue runs the job of lowest priority first (the embedded engine's workers)."""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import queue
import threading
from typing import Any


class PriorityPool:
    """``n`` worker threads that run the queued job of lowest priority first (ties: submission
    order). The engine's priority is the order in which problems first reached it, so a problem's
    later requests (its verifier calls, its next tree step) go before the first requests of
    problems that started after it: problems finish one after another, as they would alone,
    instead of all at the end of a wave, and results reach disk as the run goes."""

    def __init__(self, n: int, name: str) -> None:
        self._q: queue.PriorityQueue[tuple[float, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while True:
            _, _, job = self._q.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to the awaiting task
                fut.set_exception(e)

    def submit(self, priority: float, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._q.put((priority, next(self._seq), (fut, fn, args)))
        return fut

    def shutdown(self) -> None:
        """Cancel what is queued, let running jobs end, stop the threads."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item[2] is not None:
                item[2][0].cancel()
        for _ in self._threads:
            self._q.put((math.inf, next(self._seq), None))
        for t in self._threads:
            t.join()
