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
- Host KV store (``kv_store_mib``, on by default; planning in :mod:`ttscale.engines.kv_slots`):
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
- Prompts are always sent as token ids: the chat template is rendered (``/apply-template``) and
  tokenised (``/tokenize``) once per distinct message list, and a continuation appends the prefix's
  token ids, so text the model produced is never re-tokenised.
- Blocking calls run on ``n_parallel`` worker threads fed by a priority queue (problems in the
  order they first came; see ``_PriorityPool``); each stream's callback checks a
  ``threading.Event`` that is set when the awaiting task is cancelled, and a request's ``monitor``,
  so both stop the backend generation at the next token. Monitors run on that worker thread (keep
  them quick and thread-safe); an exception in a monitor stops the sample and is raised by
  ``generate``.
- Token ids (and logprobs) come from the stream's ``logprobs`` (top-1 when the caller asked for
  none), so ``Completion.token_ids`` is always filled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import itertools
import math
import os
import queue
import shutil
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ttscale.core.errors import EngineError
from ttscale.core.registry import param
from ttscale.core.types import Completion, GenerationRequest, TokenLogprob
from ttscale.engines.base import engine
from ttscale.engines.kv_slots import SlotPlan, SlotPlanner, common_prefix
from ttscale.engines.model_files import DEFAULT_MODEL, params_count, resolve_model

SLOT_CTX = 4096
"""Default context per slot; llama.cpp divides ``n_ctx`` evenly among the ``n_parallel`` slots."""


def _cached_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens llama.cpp served from a slot's KV cache, from a response's ``usage``."""
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens", 0) or 0)


def _make_store_dir(where: str | None, need: int) -> str:
    """A private directory for slot snapshots: ``where``, else /dev/shm (RAM) when it has room
    for the store, else the temporary directory."""
    if where is None:
        shm = "/dev/shm"
        try:
            if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= need:
                where = shm
        except OSError:
            pass
    _remove_stale_stores(where or tempfile.gettempdir())
    try:
        return tempfile.mkdtemp(prefix=f"ttscale-kv-{os.getpid()}-", dir=where)
    except OSError as e:
        raise EngineError(f"embedded engine: cannot create the KV store directory in {where!r}: {e}") from e


def _remove_stale_stores(parent: str) -> None:
    """Delete KV store directories left by engines whose process died without closing them
    (tmpfs is RAM)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not name.startswith("ttscale-kv-") or len(parts) < 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except OSError:
            pass  # alive (another user's) or unknown: leave it


class _PriorityPool:
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


@dataclass
class _Stream:
    """What one streamed sample has produced so far (written by the backend's callback thread)."""

    cancel: threading.Event
    tokens: list[TokenLogprob] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    failure: BaseException | None = None
    cancelled: bool = False


class EmbeddedEngine:
    """llama.cpp in-process (see the module docstring). Thread-safe; one per model."""

    name = "embedded"
    supports_token_ids = True
    supports_logprobs = True

    def __init__(
        self,
        model: str | None = None,
        *,
        n_parallel: int = 8,
        n_ctx: int | None = None,
        threads: int | None = None,
        top_k: int = 0,
        min_p: float = 0.0,
        ignore_eos: bool = False,
        poll: int = 0,
        verbose: bool = False,
        share_prefix: bool = False,
        kv_store_mib: int = 1024,
        kv_min_gain: int = 16,
        kv_store_dir: str | None = None,
    ) -> None:
        try:
            import xllamacpp as xlc
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise EngineError("the embedded engine needs xllamacpp: pip install xllamacpp") from e
        self.model = model or DEFAULT_MODEL
        self.model_path: Path = resolve_model(self.model)
        self.params_count = params_count(self.model)
        self.n_parallel = max(1, int(n_parallel))
        self.n_ctx = int(n_ctx) if n_ctx else SLOT_CTX * self.n_parallel
        self.slot_ctx = self.n_ctx // self.n_parallel
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        self.top_k = top_k
        self.min_p = min_p
        self.ignore_eos = ignore_eos
        self.share_prefix = share_prefix

        p = xlc.CommonParams()
        p.model.path = str(self.model_path)
        p.n_ctx = self.n_ctx
        p.n_parallel = self.n_parallel
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        # llama.cpp's workers busy-wait between ops by default (poll=50); on a shared or small
        # machine spinning threads of several processes starve each other, so default to 0
        p.cpuparams.poll = poll
        p.cpuparams_batch.poll = poll
        p.cont_batching = True
        p.cache_prompt = True
        # every worker may block on an HTTP call (tokenize, slot save/restore) at once
        p.n_threads_http = self.n_parallel + 4
        # the host KV store (slot snapshots); off with share_prefix, where llama.cpp places requests
        store_bytes = 0 if share_prefix else max(0, int(kv_store_mib)) << 20
        self.kv_dir: str | None = None
        if store_bytes:
            self.kv_dir = _make_store_dir(kv_store_dir, store_bytes)
            weakref.finalize(self, shutil.rmtree, self.kv_dir, True)
            p.slot_save_path = self.kv_dir + os.sep
        if not verbose:
            p.verbosity = -1
        try:
            self._server: Any = xlc.Server(p)
        except Exception as e:
            raise EngineError(f"llama.cpp could not load {self.model_path}: {e}") from e
        self.base_url: str = self._server.listening_address
        self._http = httpx.Client(base_url=self.base_url, timeout=120.0, trust_env=False)
        self._pool = _PriorityPool(self.n_parallel, "ttscale-embedded")
        self._ranks: OrderedDict[str, int] = OrderedDict()
        self._next_rank = itertools.count()
        self._lock = threading.Lock()
        self._prompts: OrderedDict[Any, tuple[int, ...]] = OrderedDict()
        self._texts: dict[int, str] = {}  # token id -> its text (stop-string checks)
        self._live: set[threading.Event] = set()
        # slot affinity and the host KV store: what each slot's KV cache holds, who is busy
        self._slots = SlotPlanner(self.n_parallel, store_bytes=store_bytes, min_gain=kv_min_gain)
        self.prefills = 0
        self._closed = False
        # counters (read by tests and benchmarks)
        self.active_streams = 0
        self.generated_tokens = 0

    # --- tokens -------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = self._http.post(path, json=body)
        except httpx.HTTPError as e:
            raise EngineError(f"embedded engine: {path} failed: {e}") from e
        if r.status_code != 200:
            raise EngineError(f"embedded engine: {path} returned {r.status_code}: {r.text[:300]}")
        return r.json()

    def _cached(self, key: Any, make: Any) -> tuple[int, ...]:
        with self._lock:
            hit = self._prompts.get(key)
            if hit is not None:
                self._prompts.move_to_end(key)
                return hit
        ids = tuple(make())
        with self._lock:
            self._prompts[key] = ids
            while len(self._prompts) > 4096:
                self._prompts.popitem(last=False)
        return ids

    def tokenize(self, text: str, *, special: bool = False) -> tuple[int, ...]:
        """Token ids of ``text``; ``special`` adds BOS (if the model wants one) and parses special
        tokens such as ``<|im_start|>`` (how llama.cpp tokenises a rendered prompt)."""
        return self._cached(
            ("tok", special, text),
            lambda: self._post("/tokenize", {"content": text, "add_special": special,
                                             "parse_special": special})["tokens"],
        )

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._post("/detokenize", {"tokens": list(ids)})["content"])

    def render_chat(self, messages: Sequence[Any]) -> str:
        """The chat template applied to ``messages`` with the assistant generation prompt."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        return str(self._post("/apply-template", {"messages": msgs})["prompt"])

    def prompt_ids(self, req: GenerationRequest) -> tuple[int, ...]:
        """The token ids the backend is given for ``req`` (template + prefix)."""
        if req.raw_prompt is not None:
            base = self.tokenize(req.raw_prompt, special=True)
        else:
            key = ("chat", tuple((m["role"], m["content"]) for m in req.messages))
            base = self._cached(key, lambda: self.tokenize(self.render_chat(req.messages), special=True))
        if req.prefix_token_ids is not None:
            return base + tuple(req.prefix_token_ids)
        if req.prefix:
            return base + self.tokenize(req.prefix)
        return base

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
            "top_k": self.top_k,
            "min_p": self.min_p,
            "stream": True,
            "logprobs": max(1, req.logprobs or 0),
            "cache_prompt": True,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = (req.seed + i) % (2**32 - 1)
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body

    def _run(self, body: dict[str, Any], streams: Sequence[_Stream], req: GenerationRequest) -> None:
        """Run one backend request; its choices (``index``) fill ``streams`` (several with native ``n``)."""
        monitor = req.monitor if len(streams) == 1 else None
        k = req.logprobs or 0
        cancel = streams[0].cancel

        def on_chunk(chunk: Any) -> bool:
            if not isinstance(chunk, dict):
                return cancel.is_set()
            if "error" in chunk:
                err = chunk["error"]
                for st in streams:
                    st.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                return True
            new = 0
            st = streams[0]
            for ch in chunk.get("choices") or ():
                st = streams[int(ch.get("index") or 0) % len(streams)]
                lp = ch.get("logprobs") or {}
                for item in lp.get("content") or ():
                    top = tuple((t["token"], float(t["logprob"])) for t in (item.get("top_logprobs") or ())[:k])
                    st.tokens.append(TokenLogprob(item["token"], float(item["logprob"]), int(item["id"]), top))
                    st.ids.append(int(item["id"]))
                    new += 1
                st.text += ch.get("text") or ""
                if ch.get("finish_reason"):
                    st.finish = ch["finish_reason"]
            if chunk.get("usage"):
                st.usage = chunk["usage"]
            if cancel.is_set():
                for s in streams:
                    s.cancelled = s.finish is None
                return True
            if monitor is not None and new and st.finish is None:
                try:
                    stop = monitor(st.tokens, st.text)
                except BaseException as e:  # raised again in the awaiting task
                    st.failure = e
                    return True
                if stop:
                    st.cancelled = True
                    return True
            return False

        prompt = tuple(body["prompt"])
        with self._lock:
            self.active_streams += len(streams)
            # share_prefix: llama.cpp places native-n siblings itself, so no slot is booked
            plan = None if self.share_prefix else self._slots.plan(prompt)
        ok = False
        try:
            if plan is not None:
                self._apply(plan)
                body = {**body, "id_slot": plan.slot}
            if cancel.is_set():
                for st in streams:
                    st.cancelled = True
                return
            ret = self._server.handle_completions(body, on_chunk)
            if isinstance(ret, dict) and "error" in ret:
                err = ret["error"]
                for st in streams:
                    st.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            ok = not any(st.error for st in streams)
        finally:
            st = streams[0]
            keep = plan is not None and ok and self._slots.store_enabled and self._ended_at_stop(st, req.stop)
            with self._lock:
                self.active_streams -= len(streams)
                self.generated_tokens += sum(len(s.ids) for s in streams)
                if plan is not None:
                    self._slots.release(plan.slot, prompt + tuple(st.ids) if ok else None, continuable=keep)

    def _ended_at_stop(self, st: _Stream, stop: Sequence[str]) -> bool:
        """Whether a sample ended at one of its stop strings (llama.cpp streams the token holding
        it but blanks its text): a tree step or a thinking segment, likely to be continued."""
        if st.finish != "stop" or not stop or st.cancelled or not st.ids:
            return False
        try:
            tail = "".join(self._token_text(i) for i in st.ids[-4:])
        except EngineError:
            return False
        return any(s in tail for s in stop)

    def _token_text(self, token: int) -> str:
        with self._lock:
            text = self._texts.get(token)
        if text is None:
            text = self.detokenize([token])
            with self._lock:
                self._texts[token] = text
        return text

    # --- the host KV store (slot snapshots; see engines/kv_slots.py) ----------------------------
    def kv_stats(self) -> dict[str, int]:
        """Host KV store counters: snapshots saved and restored, fan-out prefills, snapshots and
        bytes held now."""
        with self._lock:
            s = self._slots
            return {"saves": s.saves, "restores": s.restores, "prefills": self.prefills,
                    "stored": s.stored, "stored_bytes": s.stored_bytes}

    def _apply(self, plan: SlotPlan) -> None:
        """Save the booked slot's content and/or restore a snapshot into it, as planned."""
        if plan.save is not None:
            self._save(plan.slot, plan.save)
        if plan.restore is not None:
            self._restore(plan.slot, plan.restore)

    def _slot_action(self, slot: int, action: str, name: str) -> dict[str, Any] | None:
        try:
            r = self._http.post(f"/slots/{slot}", params={"action": action}, json={"filename": name})
        except httpx.HTTPError as e:
            self._store_failed(f"slot {action} failed: {e}")
            return None
        if r.status_code != 200:
            self._store_failed(f"slot {action} returned {r.status_code}: {r.text[:200]}")
            return None
        return r.json()

    def _save(self, slot: int, ids: tuple[int, ...]) -> None:
        with self._lock:
            if not self._slots.store_enabled:
                return
            name = self._slots.new_name()
        got = self._slot_action(slot, "save", name)
        if got is None:
            return
        n = int(got.get("n_saved", len(ids)))
        with self._lock:
            evicted = self._slots.add(ids[:n], name, int(got.get("n_written", 0)))
        self._remove(evicted)

    def _restore(self, slot: int, key: tuple[int, ...]) -> None:
        with self._lock:
            name = self._slots.name_of(key)
        got = self._slot_action(slot, "restore", name) if name is not None else None
        with self._lock:
            if got is None:
                self._slots.set_content(slot, (), continuable=False)
                dropped = self._slots.drop(key)
            else:
                self._slots.restored(slot, key[: int(got.get("n_restored", len(key)))])
                dropped = None
        if dropped:
            self._remove([dropped])

    def _remove(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                os.remove(os.path.join(self.kv_dir or "", name))
            except OSError:
                pass

    def _store_failed(self, why: str) -> None:
        """A snapshot could not be saved or restored: warn once and go on without the store
        (requests still run; they recompute what they would have restored)."""
        with self._lock:
            was = self._slots.store_enabled
            self._slots.store_bytes = 0
        if was:
            warnings.warn(f"embedded engine: host KV store switched off: {why}", RuntimeWarning, stacklevel=2)

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
            self._apply(plan)
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
                computed = int(usage.get("prompt_tokens", len(prompt))) - _cached_tokens(usage)
                with self._lock:
                    self.prefills += 1
            content = prompt
            with self._lock:
                stored = self._slots.in_store(prompt)
            if not stored:
                self._save(plan.slot, prompt)
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
        streams = [_Stream(cancel=cancel) for _ in range(n)]
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
            out.append(self._completion(st, req, prompt, shared=j > 0))
        return out

    def _completion(self, st: _Stream, req: GenerationRequest, prompt: tuple[int, ...], *, shared: bool) -> Completion:
        usage = st.usage or {}
        if st.cancelled:
            finish = "cancelled"
        elif st.finish == "length":
            finish = "length"
        else:
            finish = "stop"
        cached = _cached_tokens(usage)
        return Completion(
            text=st.text,
            finish_reason=finish,  # type: ignore[arg-type]
            completion_tokens=len(st.ids) if st.cancelled or not usage else int(usage.get("completion_tokens", len(st.ids))),
            prompt_tokens=int(usage.get("prompt_tokens", len(prompt))),
            token_ids=tuple(st.ids),
            logprobs=tuple(st.tokens) if req.logprobs else None,
            # a native-n sibling's prompt is copied from the first one's KV cache, not decoded again
            cached_prompt_tokens=len(prompt) if shared else cached,
        )

    def _priority(self, req: GenerationRequest) -> int:
        """Queue priority: the order in which the request's problem first came (see _PriorityPool)."""
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
        return (self.share_prefix and 1 < req.n <= self.n_parallel and req.monitor is None
                and (req.prefix_token_ids is not None or bool(req.prefix)))

    async def generate(self, req: GenerationRequest) -> list[Completion]:
        if self._closed:
            raise EngineError("embedded engine is closed")
        prompt = await asyncio.to_thread(self.prompt_ids, req)
        if self._shares_prompt(req):
            return await self._sample(req, prompt, 0, req.n)
        computed = 0
        with self._lock:
            fan_out = not self.share_prefix and self._slots.needs_fanout(prompt, req.n)
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
        if self.kv_dir:
            shutil.rmtree(self.kv_dir, ignore_errors=True)


@dataclass(frozen=True)
class EmbeddedParams:
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


@engine("embedded", EmbeddedParams, "llama.cpp in-process (xllamacpp) on a local GGUF; the default")
def make_embedded(model: str | None, params: EmbeddedParams) -> EmbeddedEngine:
    return EmbeddedEngine(
        model or DEFAULT_MODEL,
        n_parallel=params.n_parallel,
        n_ctx=params.n_ctx or None,
        threads=params.threads or None,
        top_k=params.top_k,
        min_p=params.min_p,
        ignore_eos=params.ignore_eos,
        poll=params.poll,
        verbose=params.verbose,
        share_prefix=params.share_prefix,
        kv_store_mib=params.kv_store_mib,
        kv_min_gain=params.kv_min_gain,
    )
