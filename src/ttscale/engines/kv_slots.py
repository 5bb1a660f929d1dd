"""Which llama.cpp slot runs a request, and when to move KV state through the host KV store.

Pure bookkeeping (no llama.cpp here; :mod:`ttscale.engines.llama_kv_store` does the I/O), so it is
unit-tested exactly. The engine keeps, per slot, the token ids its KV cache holds (as far as it
knows), whether a request is running there, when it was last used, and whether its content is
*continuable*: it ended at a stop string (a tree-search step, a thinking segment) or is a prompt
prefilled for fan-out, so a later request is likely to continue it.

The host KV store holds snapshots of slot state (llama.cpp's slot save/restore, files on tmpfs),
keyed by the token ids they hold, evicted least recently used beyond a byte budget. A request is
planned as:

1. the idle slot whose content shares the longest prefix with the prompt (ties: least recently
   used), as before;
2. unless a stored snapshot shares at least ``min_gain`` more tokens: then that snapshot is
   restored into the least useful idle slot (empty, or holding content that is stored, covered by
   another slot or not continuable; then least recently used) and the request runs there;
3. before a slot is overwritten, its content is saved to the store when it is continuable, not a
   prefix of the new prompt by ``min_gain`` tokens or more, and not already held by the store or
   another slot.

Fan-out: ``n > 1`` samples of one prompt that is neither stored nor resident in ``n`` idle slots
first have it made resident once (restored or computed, no token generated) and snapshotted, so
each sample restores it rather than recomputing it.

Restoring a snapshot of ~600 tokens of SmolLM2-135M takes ~6 ms against ~2 s to recompute it on
two CPU cores, so a tree search's siblings (one prefix, several slots) and beams whose slot another
problem took both continue from cached KV instead of recomputing the prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences (binary search over slices,
    so the comparisons run in C)."""
    m = min(len(a), len(b))
    if m == 0 or a[0] != b[0]:
        return 0
    if tuple(a[:m]) == tuple(b[:m]):
        return m
    lo, hi = 1, m  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tuple(a[lo:mid]) == tuple(b[lo:mid]):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class SlotPlan:
    """Run on ``slot``; first save its content (``save``: the ids, a store key) and/or restore
    the snapshot stored under ``restore``."""

    slot: int
    save: tuple[int, ...] | None = None
    restore: tuple[int, ...] | None = None


@dataclass
class _Entry:
    name: str
    nbytes: int


class SlotPlanner:
    """Slot contents, bookings and the host KV store's index (see the module docstring).
    Not thread-safe: the engine calls it under its lock."""

    def __init__(self, n_slots: int, *, store_bytes: int = 0, min_gain: int = 32) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.n = n_slots
        self.store_bytes = max(0, int(store_bytes))
        self.min_gain = max(1, int(min_gain))
        self.content: list[tuple[int, ...]] = [() for _ in range(n_slots)]
        self.busy = [False] * n_slots
        self.clock = [0] * n_slots
        self.continuable = [False] * n_slots
        self._tick = 0
        self._store: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._used = 0
        self._names = 0
        # counters (benchmarks, tests)
        self.saves = 0
        self.restores = 0

    @property
    def store_enabled(self) -> bool:
        return self.store_bytes > 0

    # --- the store ---------------------------------------------------------------------------
    def best_stored(self, ids: Sequence[int]) -> tuple[tuple[int, ...] | None, int]:
        """The stored key sharing the longest prefix with ``ids`` and that length."""
        best: tuple[int, ...] | None = None
        length = 0
        for key in self._store:
            k = common_prefix(key, ids)
            if k > length:
                best, length = key, k
        return best, length

    def in_store(self, ids: Sequence[int]) -> bool:
        """Whether a snapshot holds ``ids`` (all but the last token)."""
        return self.best_stored(ids)[1] >= len(ids) - 1

    def _covered(self, ids: tuple[int, ...], slot: int) -> bool:
        """Whether the store or another slot already holds ``ids`` (all but the last token)."""
        if self.in_store(ids):
            return True
        need = len(ids) - 1
        return any(i != slot and common_prefix(self.content[i], ids) >= need for i in range(self.n))

    def new_name(self) -> str:
        self._names += 1
        return f"kv{self._names}.bin"

    def add(self, key: tuple[int, ...], name: str, nbytes: int) -> list[str]:
        """Record a saved snapshot; returns the file names evicted to stay within the budget
        (never the new one)."""
        old = self._store.pop(key, None)
        evicted = [old.name] if old is not None and old.name != name else []
        if old is not None:
            self._used -= old.nbytes
        self._store[key] = _Entry(name, int(nbytes))
        self._used += int(nbytes)
        while self._used > self.store_bytes and len(self._store) > 1:
            k, e = next(iter(self._store.items()))
            del self._store[k]
            self._used -= e.nbytes
            evicted.append(e.name)
        self.saves += 1
        return evicted

    def name_of(self, key: tuple[int, ...]) -> str | None:
        e = self._store.get(key)
        if e is None:
            return None
        self._store.move_to_end(key)
        return e.name

    def drop(self, key: tuple[int, ...]) -> str | None:
        """Forget a snapshot (its file could not be restored); returns its file name."""
        e = self._store.pop(key, None)
        if e is None:
            return None
        self._used -= e.nbytes
        return e.name

    @property
    def stored(self) -> int:
        return len(self._store)

    @property
    def stored_bytes(self) -> int:
        return self._used

    # --- slots -------------------------------------------------------------------------------
    def _book(self, slot: int) -> None:
        self._tick += 1
        self.busy[slot] = True
        self.clock[slot] = self._tick

    def _spare(self, i: int) -> tuple[int, int]:
        """Sort key of an idle slot as a restore target: least useful content first."""
        c = self.content[i]
        if not c:
            return (0, self.clock[i])
        useless = not self.continuable[i] or self._covered(c, i)
        return (1 if useless else 2, self.clock[i])

    def plan(self, prompt: Sequence[int]) -> SlotPlan | None:
        """Book a slot for ``prompt`` (see the module docstring); ``None`` when none is idle."""
        prompt = tuple(prompt)
        idle = [i for i in range(self.n) if not self.busy[i]]
        if not idle:
            return None
        shared = {i: common_prefix(self.content[i], prompt) for i in idle}
        slot = min(idle, key=lambda i: (-shared[i], self.clock[i]))
        restore = None
        if self.store_enabled:
            key, k = self.best_stored(prompt)
            if key is not None and k >= shared[slot] + self.min_gain:
                restore = key
                slot = min(idle, key=self._spare)
        save = None
        c = self.content[slot]
        if (self.store_enabled and c and self.continuable[slot]
                and len(c) - common_prefix(c, prompt) >= self.min_gain and not self._covered(c, slot)):
            save = c
        self._book(slot)
        return SlotPlan(slot, save, restore)

    def set_content(self, slot: int, ids: Sequence[int], *, continuable: bool) -> None:
        self.content[slot] = tuple(ids)
        self.continuable[slot] = continuable

    def restored(self, slot: int, ids: Sequence[int]) -> None:
        """A snapshot holding ``ids`` was restored into ``slot``."""
        self.set_content(slot, ids, continuable=True)
        self.restores += 1

    def release(self, slot: int, ids: Sequence[int] | None = None, *, continuable: bool = False) -> None:
        """The request on ``slot`` ended; ``ids`` is what its KV cache now holds (``None``: unknown)."""
        self.content[slot] = tuple(ids) if ids is not None else ()
        self.continuable[slot] = bool(continuable) and ids is not None
        self.busy[slot] = False

    def needs_fanout(self, prompt: Sequence[int], n: int) -> bool:
        """Whether ``n`` samples of ``prompt`` should wait for it to be made resident once and
        snapshotted (fan-out): the store is on, it does not hold the prompt to within
        ``min_gain`` tokens, and fewer than ``n`` idle slots do."""
        if not self.store_enabled or n < 2:
            return False
        prompt = tuple(prompt)
        need = len(prompt) - self.min_gain
        if need <= 0 or self.best_stored(prompt)[1] >= need:
            return False
        warm = sum(1 for i in range(self.n) if not self.busy[i] and common_prefix(self.content[i], prompt) >= need)
        return warm < n
