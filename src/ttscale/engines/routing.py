"""Which replica serves a request: prefix-affinity routing, health and per-replica counters.

Used by :mod:`ttscale.engines.pool`. Every request carries an *affinity key*: the problem id when
the context set one (so every request of a problem, and every continuation of one of its tree
paths, lands on the replica that already holds that prompt in its prefix cache), otherwise a hash
of the prompt without the assistant prefix (API traffic through ``ttscale serve``: the same
conversation goes to the same replica).

- **affinity** (the default): a consistent-hash ring (``VNODES`` points per replica) over the
  healthy replicas; a replica going down moves only its own keys. When the ring's replica has
  ``saturation`` requests in flight, the least-loaded healthy replica takes the request instead.
- **round_robin**: replicas in turn (the baseline the bench compares against).
- **least_loaded**: the replica with the fewest requests in flight.

Health: a replica that refuses connections is marked down at once; one that fails ``max_failures``
times in a row (5xx after the engine's own retries) too. A down replica is probed every
``probe_s`` seconds and taken back when the probe succeeds.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ttscale.core.types import GenerationRequest

Policy = Literal["affinity", "round_robin", "least_loaded"]
POLICIES: tuple[str, ...] = ("affinity", "round_robin", "least_loaded")
VNODES = 64
"""Points per replica on the hash ring (spreads keys evenly over few replicas)."""


def _hash(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def affinity_key(req: GenerationRequest) -> str:
    """The key that keeps a request on the replica caching its prefix (see module docstring)."""
    if req.problem_id is not None:
        return f"p:{req.problem_id}"
    if req.raw_prompt is not None:
        return f"r:{_hash(req.raw_prompt)}"
    return f"m:{_hash(json.dumps([dict(m) for m in req.messages], sort_keys=True, default=str))}"


@dataclass
class ReplicaState:
    """One replica's health and counters (exposed by ``PoolEngine.replica_stats``)."""

    name: str
    healthy: bool = True
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    routed_by_affinity: int = 0
    consecutive_failures: int = 0
    down_since: float | None = None
    last_error: str = ""
    times_down: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        hit = self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None
        return {
            "replica": self.name, "healthy": self.healthy, "in_flight": self.in_flight,
            "requests": self.requests, "errors": self.errors, "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens, "generated_tokens": self.generated_tokens,
            "prefix_hit_rate": hit, "times_down": self.times_down, "last_error": self.last_error,
        }


class HashRing:
    """A consistent-hash ring over replica indices."""

    def __init__(self, members: Sequence[int], names: Sequence[str], vnodes: int = VNODES) -> None:
        points = sorted((_hash(f"{names[i]}#{v}"), i) for i in members for v in range(vnodes))
        self._keys = [p for p, _ in points]
        self._owners = [i for _, i in points]

    def owner(self, key: str) -> int | None:
        if not self._keys:
            return None
        pos = bisect.bisect(self._keys, _hash(key)) % len(self._keys)
        return self._owners[pos]


class Router:
    """Picks replicas and tracks their health (see module docstring). Not thread-safe: it is used
    from one event loop."""

    def __init__(self, names: Sequence[str], *, policy: str = "affinity", saturation: int = 0,
                 max_failures: int = 3, probe_s: float = 5.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, got {policy!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"replica names must be distinct, got {list(names)}")
        self.replicas = [ReplicaState(n) for n in names]
        self.policy = policy
        self.saturation = saturation
        self.max_failures = max(1, max_failures)
        self.probe_s = probe_s
        self._rr = 0
        self._ring_members: tuple[int, ...] = ()
        self._ring = HashRing((), names)

    def healthy(self) -> list[int]:
        return [i for i, r in enumerate(self.replicas) if r.healthy]

    def _ring_for(self, members: list[int]) -> HashRing:
        if tuple(members) != self._ring_members:
            self._ring_members = tuple(members)
            self._ring = HashRing(members, [r.name for r in self.replicas])
        return self._ring

    def pick(self, key: str, exclude: frozenset[int] = frozenset()) -> int | None:
        """The replica for a request with affinity ``key`` (``exclude``: replicas that already
        failed this request); None when no healthy replica is left."""
        live = [i for i in self.healthy() if i not in exclude]
        if not live:
            return None
        least = min(live, key=lambda i: (self.replicas[i].in_flight, self.replicas[i].requests))
        if self.policy == "least_loaded":
            return least
        if self.policy == "round_robin":
            self._rr += 1
            return live[self._rr % len(live)]
        owner = self._ring_for(live).owner(key)
        assert owner is not None
        if self.saturation and self.replicas[owner].in_flight >= self.saturation:
            return least
        self.replicas[owner].routed_by_affinity += 1
        return owner

    # --- outcomes ---------------------------------------------------------------------------
    def succeeded(self, i: int, *, prompt: int, cached: int, generated: int) -> None:
        r = self.replicas[i]
        r.consecutive_failures = 0
        r.prompt_tokens += prompt
        r.cached_prompt_tokens += cached
        r.generated_tokens += generated

    def failed(self, i: int, error: str, *, fatal: bool) -> bool:
        """Count a failure; ``fatal`` (connection refused) takes the replica down at once. Returns
        True when this call took it down."""
        r = self.replicas[i]
        r.errors += 1
        r.consecutive_failures += 1
        r.last_error = error
        if r.healthy and (fatal or r.consecutive_failures >= self.max_failures):
            r.healthy = False
            r.down_since = time.monotonic()
            r.times_down += 1
            return True
        return False

    def due_for_probe(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        return [i for i, r in enumerate(self.replicas)
                if not r.healthy and r.down_since is not None and now - r.down_since >= self.probe_s]

    def probe_result(self, i: int, ok: bool, now: float | None = None) -> None:
        r = self.replicas[i]
        if ok:
            r.healthy = True
            r.consecutive_failures = 0
            r.down_since = None
        else:
            r.down_since = time.monotonic() if now is None else now
