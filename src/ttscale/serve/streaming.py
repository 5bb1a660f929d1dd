"""The SSE body of a streaming request: the strategy runs as a task; each engine call it makes and
a heartbeat every ``heartbeat_s`` become chunks with an empty delta that carry
``ttscale_progress``; then the chosen text streams as ordinary deltas, a finish chunk, an optional
usage chunk (``stream_options.include_usage``) and ``[DONE]``. A timeout or a failure of the job
becomes an error event followed by ``[DONE]``; a client that goes away cancels the task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ttscale.serve.errors import error_for, timeout_error
from ttscale.serve.jobs import Answer, Job, consume, settle
from ttscale.serve.plan import Plan
from ttscale.serve.render import DONE, choice_logprobs, sse, text_pieces, usage_fields
from ttscale.serve.state import ServeState


class _Chunks:
    """Chunk bodies of one streaming response."""

    def __init__(self, plan: Plan, created: int) -> None:
        self.plan = plan
        self.created = created
        self.chat = plan.kind == "chat"
        self.object = "chat.completion.chunk" if self.chat else "text_completion"

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        p = self.plan
        return sse({"id": p.id, "object": self.object, "created": self.created, "model": p.model,
                    "system_fingerprint": None, "choices": choices, **extra})

    def empty(self, i: int = 0) -> dict[str, Any]:
        if self.chat:
            return {"index": i, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}
        return {"index": i, "text": "", "logprobs": None, "finish_reason": None}

    def progress(self, progress: dict[str, Any]) -> str:
        return self.chunk([self.empty()], ttscale_progress=progress)

    def opening(self) -> str:
        """The chat stream's first chunk: the assistant role for every choice."""
        return self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None} for i in range(self.plan.n)])

    def delta(self, i: int, piece: str, lp: dict[str, Any] | None) -> dict[str, Any]:
        ch: dict[str, Any] = {"index": i, "logprobs": lp, "finish_reason": None}
        if self.chat:
            ch["delta"] = {"content": piece}
        else:
            ch["text"] = piece
        return ch

    def finish(self, i: int, reason: str) -> dict[str, Any]:
        done: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": reason}
        if self.chat:
            done["delta"] = {}
        else:
            done["text"] = ""
        return done

    def answer(self, ans: Answer) -> Iterator[str]:
        """The chosen texts as deltas, a finish chunk per choice (the last carries usage and the
        ttscale summary) and the optional usage chunk."""
        extra = {**usage_fields(ans.cost)}
        usage = extra.pop("usage")
        for i, c in enumerate(ans.choices):
            lp = choice_logprobs(self.plan, c)
            pieces = [c.text] if lp is not None else text_pieces(c.text)
            for j, piece in enumerate(pieces):
                yield self.chunk([self.delta(i, piece, lp if j == 0 else None)])
            last = i == len(ans.choices) - 1
            yield self.chunk([self.finish(i, c.finish_reason)], **({**extra, "ttscale": ans.info} if last else {}))
        if self.plan.include_usage:
            yield self.chunk([], usage=usage)


async def stream_events(plan: Plan, state: ServeState, created: int) -> AsyncIterator[str]:
    """The SSE body of a streaming request (see the module docstring)."""
    cfg = state.config
    out = _Chunks(plan, created)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    job = Job(plan, state, on_progress=queue.put_nowait)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.timeout_s
    task = asyncio.create_task(job.run())
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    finished = False
    try:
        if out.chat:
            yield out.opening()
        yield out.progress(job.progress("start"))
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                state.metrics.cancel("timeout")
                await settle(task)
                yield sse(timeout_error(cfg.timeout_s).body())
                yield DONE
                finished = True
                return
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(cfg.heartbeat_s, remaining))
            except TimeoutError:
                if loop.time() < deadline:
                    yield out.progress(job.progress("heartbeat"))
                continue
            if item is None:
                break
            yield out.progress(item)
        try:
            ans: Answer = task.result()
        except Exception as e:
            yield sse(error_for(e).body())
            yield DONE
            finished = True
            return
        state.metrics.charge(plan.strategy or "passthrough", ans.cost)
        for piece in out.answer(ans):
            yield piece
        yield DONE
        finished = True
    finally:
        if not task.done():
            if not finished:
                state.metrics.cancel("disconnect")
            task.cancel()
            task.add_done_callback(consume)
