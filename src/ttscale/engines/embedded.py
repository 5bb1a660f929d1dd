"""The embedded default engine: llama.cpp's own server, in-process, through ``xllamacpp``.

llama.cpp's server batches all running requests into one decode step (continuous batching over
``n_parallel`` slots), so many problems calling :meth:`EmbeddedEngine.generate` at once share the
batch. Design:

- Every sample is its own streamed request (``n`` samples → ``n`` requests with seeds ``seed``,
  ``seed + 1``, ...). llama.cpp's own ``n`` uses the same ``seed + i`` per child (same samples), but
  it needs ``n`` free slots at once (and refuses ``n > n_parallel``), which stalls the batch when
  samples end at different lengths; single-sample requests refill slots as they free up.
- Slot affinity: the engine remembers what each slot's KV cache holds and sends a request to the
  idle slot sharing the longest prefix with its prompt (``id_slot``), so a tree-search step
  continues in the slot where its parent was decoded. With more live beams than slots, parents
  are evicted before their children come; the host KV store brings them back.
- Host KV store (``kv_store_mib``, on by default; planning in :mod:`ttscale.engines.kv_slots`,
  snapshot files in :mod:`ttscale.engines.llama_kv_store`):
  llama.cpp's slot save/restore moves KV state between slots through files on tmpfs. A slot whose
  content ended at a stop string (a tree step, a thinking segment) is snapshotted before another
  request overwrites it; a request whose prefix is stored (by ``kv_min_gain`` tokens more than any
  idle slot holds) has it restored into a slot; and ``n > 1`` samples of a prompt that is not
  resident are fanned out: the prompt is made resident once, snapshotted, and restored into the
  other samples' slots. Restoring 600 tokens of SmolLM2-135M takes ~6 ms, recomputing them ~2 s on
  two cores: tree-search siblings and beams whose slot another problem took continue from cached
  KV (``bench/tree_vs_bon.py``: prefix hit rate 0.67 -> 0.96). Snapshots are evicted least
  recently used; the directory is removed on ``aclose`` (and at the next start if a process died).
- ``share_prefix=True`` sends a continuation with ``n > 1`` (tree-search siblings) as one
  native-``n`` request instead: the shared prefix is decoded once and copied to the siblings'
  slots (same samples: child ``i`` gets ``seed + i``), but llama.cpp then places the siblings
  itself, so slot affinity and the KV store are switched off.
- Prompts are always sent as token ids (:mod:`ttscale.engines.llama_tokens`): the chat template is
  rendered and tokenised once per distinct message list, and a continuation appends the prefix's
  token ids, so text the model produced is never re-tokenised.
- Blocking calls run on ``n_parallel`` worker threads fed by a priority queue (problems in the
  order they first came; :mod:`ttscale.engines.priority_pool`); each stream's callback
  (:mod:`ttscale.engines.llama_stream`) checks a ``threading.Event`` that is set when the awaiting
  task is cancelled, and a request's ``monitor``, so both stop the backend generation at the next
  token. Monitors run on that worker thread (keep
  them quick and thread-safe); an exception in a monitor stops the sample and is raised by
  ``generate``.
- Token ids (and logprobs) come from the stream's ``logprobs`` (top-1 when the caller asked for
  none), so ``Completion.token_ids`` is always filled.
- All settings are one :class:`EmbeddedParams` (the registry's parameters), given to the engine
  as they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ttscale.core.errors import EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest
from ttscale.engines.base import engine
from ttscale.engines.kv_slots import SlotPlanner, common_prefix
from ttscale.engines.llama_kv_store import SnapshotFiles, make_store_dir
from ttscale.engines.llama_stream import ChunkSink, Stream, cached_tokens, set_error, to_completion
from ttscale.engines.llama_tokens import LlamaTokens
from ttscale.engines.model_files import DEFAULT_MODEL, params_count, resolve_model
from ttscale.engines.priority_pool import PriorityPool

SLOT_CTX = 4096
"""Default context per slot; llama.cpp divides ``n_ctx`` evenly among the ``n_parallel`` slots."""


@dataclass(frozen=True)
class EmbeddedParams:
    """The embedded engine's settings (the registry lists and validates them from here)."""

    n_parallel: int = param(8, "llama.cpp slots: sequences decoded together in one batch")
    n_ctx: int = param(0, "total KV context, shared evenly by the slots (0 = 4096 per slot)")
    threads: int = param(0, "CPU threads (0 = all cores)")
    top_k: int = param(0, "top-k sampling (0 = off, as in the OpenAI API)")
    min_p: float = param(0.0, "min-p sampling (0 = off, as in the OpenAI API)")
    ignore_eos: bool = param(False, "benchmarking: always generate max_tokens")
    poll: int = param(0, "llama.cpp worker busy-wait level 0-100 (50 = llama.cpp default; 0 suits shared CPUs)")
    verbose: bool = param(False, "let llama.cpp log to stderr")
    share_prefix: bool = param(
        False, "continuations with n > 1 (tree-search siblings) as one native-n request: the shared prefix is "
        "decoded once, but llama.cpp places the siblings, so slot affinity and the KV store are off")
    kv_store_mib: int = param(
        1024, "host KV store: MiB of llama.cpp slot snapshots (tmpfs) kept so that continuations and fan-out "
        "samples restore a prefix instead of recomputing it (0 = off)")
    kv_min_gain: int = param(
        16, "KV store: restore/save only when it spares at least this many prompt tokens (CPU: a token of "
        "prompt costs ms, a restore ~5 ms; on a GPU raise it to a few hundred)")
    kv_store_dir: str | None = param(
        None, "directory for the KV store's snapshot files (default: /dev/shm when it has room, else the "
        "temporary directory)")


class EmbeddedEngine:
    """llama.cpp in-process (see the module docstring). Thread-safe; one per model."""

    name = "embedded"
    supports_token_ids = True
    supports_logprobs = True

    def __init__(self, model: str | None = None, params: EmbeddedParams | None = None) -> None:
        try:
            import xllamacpp as xlc
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise EngineError("the embedded engine needs xllamacpp: pip install xllamacpp") from e
        self.params = p = params or EmbeddedParams()
        self.model = model or DEFAULT_MODEL
        self.model_path: Path = resolve_model(self.model)
        self.params_count = params_count(self.model)
        # resolved settings (0 = default)
        self.n_parallel = max(1, int(p.n_parallel))
        self.n_ctx = int(p.n_ctx) if p.n_ctx else SLOT_CTX * self.n_parallel
        self.slot_ctx = self.n_ctx // self.n_parallel
        self.threads = int(p.threads) if p.threads else (os.cpu_count() or 1)
        # the host KV store (slot snapshots); off with share_prefix, where llama.cpp places requests
        store_bytes = 0 if p.share_prefix else max(0, int(p.kv_store_mib)) << 20
        kv_dir = make_store_dir(p.kv_store_dir, store_bytes) if store_bytes else None
        self._lock = threading.Lock()
        self._slots = SlotPlanner(self.n_parallel, store_bytes=store_bytes, min_gain=p.kv_min_gain)
        self._server: Any = self._start_server(xlc, kv_dir)
        self.base_url: str = self._server.listening_address
        self._http = httpx.Client(base_url=self.base_url, timeout=120.0, trust_env=False)
        self._snapshots = SnapshotFiles(self._http, self._slots, self._lock, kv_dir)
        self._tokens = LlamaTokens(self._http)
        self._pool = PriorityPool(self.n_parallel, "ttscale-embedded")
        self._ranks: OrderedDict[str, int] = OrderedDict()
        self._next_rank = itertools.count()
        self._live: set[threading.Event] = set()
        self._closed = False
        # counters (read by tests and benchmarks)
        self.prefills = 0
        self.active_streams = 0
        self.generated_tokens = 0

    def _start_server(self, xlc: Any, kv_dir: str | None) -> Any:
        p = self.params
        cp = xlc.CommonParams()
        cp.model.path = str(self.model_path)
        cp.n_ctx = self.n_ctx
        cp.n_parallel = self.n_parallel
        cp.cpuparams.n_threads = self.threads
        cp.cpuparams_batch.n_threads = self.threads
        # llama.cpp's workers busy-wait between ops by default (poll=50); on a shared or small
        # machine spinning threads of several processes starve each other, so default to 0
        cp.cpuparams.poll = p.poll
        cp.cpuparams_batch.poll = p.poll
        cp.cont_batching = True
        cp.cache_prompt = True
        # every worker may block on an HTTP call (tokenize, slot save/restore) at once
        cp.n_threads_http = self.n_parallel + 4
        if kv_dir is not None:
            cp.slot_save_path = kv_dir + os.sep
        if not p.verbose:
            cp.verbosity = -1
        try:
            return xlc.Server(cp)
        except Exception as e:
            if kv_dir is not None:
                shutil.rmtree(kv_dir, ignore_errors=True)
            raise EngineError(f"llama.cpp could not load {self.model_path}: {e}") from e

    @property
    def kv_dir(self) -> str | None:
        """The KV store's snapshot directory (``None`` when the store is off)."""
        return self._snapshots.directory

    # --- tokens (llama_tokens.py) -----------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        """Token ids of ``text``; ``special`` adds BOS (if the model wants one) and parses special
        tokens such as ``<|im_start|>`` (how llama.cpp tokenises a rendered prompt)."""
        return self._tokens.tokenize(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokens.detokenize(ids)

    def render_chat(self, messages: Sequence[Any]) -> str:
        """The chat template applied to ``messages`` with the assistant generation prompt."""
        return self._tokens.render_chat(messages)

    def prompt_ids(self, req: GenerationRequest) -> tuple[int, ...]:
        """The token ids the backend is given for ``req`` (template + prefix)."""
        return self._tokens.prompt_ids(req)

    def kv_stats(self) -> dict[str, int]:
        """Host KV store counters: snapshots saved and restored, fan-out prefills, snapshots and
        bytes held now."""
        with self._lock:
            s = self._slots
            return {"saves": s.saves, "restores": s.restores, "prefills": self.prefills,
                    "stored": s.stored, "stored_bytes": s.stored_bytes}

    # --- generation ---------------------------------------------------------------------------
    def _body(self, req: GenerationRequest, prompt: tuple[int, ...], i: int) -> dict[str, Any]:
        room = self.slot_ctx - len(prompt)
        if room < 1:
            raise EngineError(
                f"embedded engine: the prompt has {len(prompt)} tokens but a slot holds {self.slot_ctx} "
                f"(n_ctx={self.n_ctx} / n_parallel={self.n_parallel}); raise n_ctx"
            )
        body: dict[str, Any] = {
            "prompt": list(prompt),
            "max_tokens": min(req.max_tokens, room),
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_k": self.params.top_k,
            "min_p": self.params.min_p,
            "stream": True,
            "logprobs": max(1, req.logprobs or 0),
            "cache_prompt": True,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = (req.seed + i) % (2**32 - 1)
        if self.params.ignore_eos:
            body["ignore_eos"] = True
        return body

    def _run(self, body: dict[str, Any], streams: Sequence[Stream], req: GenerationRequest) -> None:
        """Run one backend request; its choices (``index``) fill ``streams`` (several with native ``n``)."""
        sink = ChunkSink(streams, req.monitor if len(streams) == 1 else None, req.logprobs or 0, req.on_tokens)
        prompt = tuple(body["prompt"])
        with self._lock:
            self.active_streams += len(streams)
            # share_prefix: llama.cpp places native-n siblings itself, so no slot is booked
            plan = None if self.params.share_prefix else self._slots.plan(prompt)
        ok = False
        try:
            if plan is not None:
                self._snapshots.apply(plan)
                body = {**body, "id_slot": plan.slot}
            if sink.cancel.is_set():
                for st in streams:
                    st.cancelled = True
                return
            ret = self._server.handle_completions(body, sink)
            if isinstance(ret, dict) and "error" in ret:
                set_error(streams, ret["error"])
            ok = not any(st.error for st in streams)
        finally:
            st = streams[0]
            keep = plan is not None and ok and self._slots.store_enabled and self._ended_at_stop(st, req.stop)
            with self._lock:
                self.active_streams -= len(streams)
                self.generated_tokens += sum(len(s.ids) for s in streams)
                if plan is not None:
                    self._slots.release(plan.slot, prompt + tuple(st.ids) if ok else None, continuable=keep)

    def _ended_at_stop(self, st: Stream, stop: Sequence[str]) -> bool:
        """Whether a sample ended at one of its stop strings (llama.cpp streams the token holding
        it but blanks its text): a tree step or a thinking segment, likely to be continued."""
        if st.finish != "stop" or not stop or st.cancelled or not st.ids:
            return False
        return self._tokens.ends_with_stop(st.ids, stop)

    def _prefill(self, prompt: tuple[int, ...]) -> int:
        """Fan-out: make ``prompt`` resident in one slot (restored or computed once, with no
        token generated) and snapshot it, so that its samples restore it instead of each
        recomputing it. Returns the prompt tokens computed."""
        with self._lock:
            plan = self._slots.plan(prompt)
        if plan is None:
            return 0
        computed = 0
        content: tuple[int, ...] | None = None
        try:
            self._snapshots.apply(plan)
            with self._lock:
                have = self._slots.content[plan.slot]
            if len(prompt) - common_prefix(have, prompt) > 1:
                usage: dict[str, Any] = {}

                def on_chunk(chunk: Any) -> bool:
                    if isinstance(chunk, dict) and chunk.get("usage"):
                        usage.update(chunk["usage"])
                    return False

                body = {"prompt": list(prompt), "max_tokens": 0, "stream": True, "temperature": 0.0,
                        "cache_prompt": True, "id_slot": plan.slot}
                ret = self._server.handle_completions(body, on_chunk)
                if isinstance(ret, dict) and "error" in ret:
                    return 0
                computed = int(usage.get("prompt_tokens", len(prompt))) - cached_tokens(usage)
                with self._lock:
                    self.prefills += 1
            content = prompt
            with self._lock:
                stored = self._slots.in_store(prompt)
            if not stored:
                self._snapshots.save(plan.slot, prompt)
        finally:
            with self._lock:
                self._slots.release(plan.slot, content, continuable=True)
        return max(0, computed)

    async def _sample(self, req: GenerationRequest, prompt: tuple[int, ...], i: int, n: int = 1) -> list[Completion]:
        """Samples ``i .. i+n-1`` of ``req`` in one backend request (llama.cpp's native ``n`` when
        ``n > 1``: the prompt is decoded once and its KV copied to the other slots)."""
        body = self._body(req, prompt, i)
        if n > 1:
            body["n"] = n
        cancel = threading.Event()
        streams = [Stream(cancel=cancel) for _ in range(n)]
        self._live.add(cancel)
        try:
            await asyncio.wrap_future(self._pool.submit(self._priority(req), self._run, body, streams, req))
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self._live.discard(cancel)
        out = []
        for j, st in enumerate(streams):
            if st.failure is not None:
                raise st.failure
            if st.error is not None:
                raise EngineError(f"embedded engine ({self.model}): {st.error}")
            out.append(to_completion(st, req, prompt, shared=j > 0))
        return out

    def _priority(self, req: GenerationRequest) -> int:
        """Queue priority: the order in which the request's problem first came (see PriorityPool)."""
        if req.problem_id is None:
            return next(self._next_rank)
        with self._lock:
            rank = self._ranks.get(req.problem_id)
            if rank is None:
                rank = self._ranks[req.problem_id] = next(self._next_rank)
                while len(self._ranks) > 100_000:
                    self._ranks.popitem(last=False)
            return rank

    def _shares_prompt(self, req: GenerationRequest) -> bool:
        """Siblings continuing one prefix (tree search) go as one native-``n`` request."""
        return (self.params.share_prefix and 1 < req.n <= self.n_parallel and req.monitor is None
                and (req.prefix_token_ids is not None or bool(req.prefix)))

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        if self._closed:
            raise EngineError("embedded engine is closed")
        prompt = await asyncio.to_thread(self.prompt_ids, req)
        if self._shares_prompt(req):
            return await self._sample(req, prompt, 0, req.n)
        computed = 0
        with self._lock:
            fan_out = not self.params.share_prefix and self._slots.needs_fanout(prompt, req.n)
        if fan_out:
            computed = await asyncio.wrap_future(self._pool.submit(self._priority(req), self._prefill, prompt))
        groups = await asyncio.gather(*(self._sample(req, prompt, i) for i in range(req.n)))
        out = [c for g in groups for c in g]
        if computed and out:  # the fan-out prefill's computed prompt tokens are the first sample's
            out[0] = dataclasses.replace(out[0], cached_prompt_tokens=max(0, out[0].cached_prompt_tokens - computed))
        return out

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ev in list(self._live):
            ev.set()
        await asyncio.to_thread(self._pool.shutdown)
        self._http.close()
        del self._server
        gc.collect()
        self._snapshots.close()


@engine("embedded", EmbeddedParams, "llama.cpp in-process (xllamacpp) on a local GGUF; the default")
def make_embedded(model: str | None, params: EmbeddedParams) -> EmbeddedEngine:
    return EmbeddedEngine(model, params)
