"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Everything is updated from the server's event loop, so plain dicts suffice; a lock guards reads
from other threads (tests, the bench) anyway.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ttscale.core.types import Cost

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


LabelKey = tuple[tuple[str, str], ...]


class Metrics:
    """Counters, one gauge and one latency histogram of the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.in_flight = 0
        self.max_concurrency = 0
        self.requests: dict[LabelKey, float] = defaultdict(float)  # endpoint, status
        self.rejected: dict[LabelKey, float] = defaultdict(float)  # reason
        self.cancelled: dict[LabelKey, float] = defaultdict(float)  # reason
        self.strategy_requests: dict[LabelKey, float] = defaultdict(float)  # strategy
        self.tokens: dict[LabelKey, float] = defaultdict(float)  # kind
        self.generations = 0.0
        self.engine_calls = 0.0
        self.verifier_calls = 0.0
        self._hist_counts: dict[LabelKey, list[int]] = {}
        self._hist_sum: dict[LabelKey, float] = defaultdict(float)

    # --- updates ------------------------------------------------------------------------------
    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("endpoint", endpoint), ("status", str(status)))] += 1
            key = (("endpoint", endpoint),)
            counts = self._hist_counts.setdefault(key, [0] * (len(_BUCKETS) + 1))
            for i, b in enumerate(_BUCKETS):
                if seconds <= b:
                    counts[i] += 1
            counts[-1] += 1
            self._hist_sum[key] += seconds

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[(("reason", reason),)] += 1

    def cancel(self, reason: str) -> None:
        with self._lock:
            self.cancelled[(("reason", reason),)] += 1

    def charge(self, strategy: str, cost: Cost) -> None:
        with self._lock:
            self.strategy_requests[(("strategy", strategy),)] += 1
            self.tokens[(("kind", "prompt"),)] += cost.prompt_tokens
            self.tokens[(("kind", "generated"),)] += cost.generated_tokens
            self.tokens[(("kind", "verifier_prompt"),)] += cost.verifier_prompt_tokens
            self.tokens[(("kind", "verifier_generated"),)] += cost.verifier_generated_tokens
            self.generations += cost.generations
            self.engine_calls += cost.engine_calls
            self.verifier_calls += cost.verifier_calls

    # --- exposition ---------------------------------------------------------------------------
    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Mapping[LabelKey, float] | float) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            if isinstance(samples, Mapping):
                for key, v in sorted(samples.items()):
                    out.append(f"{name}{_labels(dict(key))} {_num(v)}")
            else:
                out.append(f"{name} {_num(samples)}")

        with self._lock:
            family("ttscale_requests_total", "counter", "HTTP requests by endpoint and status.", self.requests)
            family("ttscale_requests_in_flight", "gauge", "Generation requests being served now.",
                   float(self.in_flight))
            family("ttscale_max_concurrency", "gauge", "Configured limit of generation requests in flight.",
                   float(self.max_concurrency))
            family("ttscale_requests_rejected_total", "counter",
                   "Requests refused before any work (unauthorized, too_large, over_limit).", self.rejected)
            family("ttscale_requests_cancelled_total", "counter",
                   "Requests whose upstream work was cancelled (disconnect, timeout).", self.cancelled)
            family("ttscale_strategy_requests_total", "counter",
                   "Finished generation requests by strategy (passthrough = plain model).", self.strategy_requests)
            family("ttscale_tokens_total", "counter", "Tokens spent upstream by kind.", self.tokens)
            family("ttscale_generations_total", "counter", "Policy samples generated upstream.", self.generations)
            family("ttscale_engine_calls_total", "counter", "Policy requests sent to the engine.", self.engine_calls)
            family("ttscale_verifier_calls_total", "counter", "Verifier calls.", self.verifier_calls)
            name = "ttscale_request_duration_seconds"
            out.append(f"# HELP {name} Wall time of HTTP requests by endpoint.")
            out.append(f"# TYPE {name} histogram")
            for key in sorted(self._hist_counts):
                counts = self._hist_counts[key]
                labels = dict(key)
                for i, b in enumerate(_BUCKETS):
                    out.append(f"{name}_bucket{_labels({**labels, 'le': _num(b)})} {counts[i]}")
                out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {counts[-1]}")
                out.append(f"{name}_sum{_labels(labels)} {_num(self._hist_sum[key])}")
                out.append(f"{name}_count{_labels(labels)} {counts[-1]}")
            family("ttscale_start_time_seconds", "gauge", "Server start time (unix seconds).", self.started)
        return "\n".join(out) + "\n"


_REPLICA_FAMILIES = (
    ("ttscale_replica_up", "gauge", "1 while a replica of a pool engine is in rotation, 0 while it is out.", "healthy"),
    ("ttscale_replica_in_flight", "gauge", "Requests in flight on a replica.", "in_flight"),
    ("ttscale_replica_requests_total", "counter", "Requests routed to a replica.", "requests"),
    ("ttscale_replica_errors_total", "counter", "Failed requests of a replica (retried on another).", "errors"),
)
_REPLICA_TOKENS = (("prompt", "prompt_tokens"), ("cached_prompt", "cached_prompt_tokens"),
                   ("generated", "generated_tokens"))


def render_replicas(stats: Sequence[Mapping[str, Any]] | None) -> str:
    """Prometheus families of a pool engine's per-replica counters (``PoolEngine.replica_stats``);
    empty for an engine without replicas. Served after :meth:`Metrics.render` on ``/metrics``."""
    if not stats:
        return ""
    out: list[str] = []
    for name, kind, help_, key in _REPLICA_FAMILIES:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        out += [f"{name}{_labels({'replica': str(s['replica'])})} {_num(float(s.get(key) or 0))}" for s in stats]
    name = "ttscale_replica_tokens_total"
    out += [f"# HELP {name} Tokens of a replica by kind (cached_prompt: prompt tokens its prefix cache served).",
            f"# TYPE {name} counter"]
    for s in stats:
        for kind, key in _REPLICA_TOKENS:
            out.append(f"{name}{_labels({'replica': str(s['replica']), 'kind': kind})} {_num(float(s.get(key) or 0))}")
    return "\n".join(out) + "\n"
