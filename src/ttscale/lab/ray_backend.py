"""The runner's Ray backend: problems fan out to Ray actors, each owning one engine replica.

``ttscale run --ray`` (a local cluster) or ``--ray ADDRESS`` (``auto``, ``HOST:PORT`` of a
``ray start --head``, ``ray://HOST:10001``). The driver keeps doing what the runner does — it
alone reads and appends the results file, so resume, ``report`` and ``plot`` are unchanged — but
:meth:`RayRunner.solve` sends each problem to an actor instead of solving it in-process:

- each actor (:class:`ReplicaWorker`) builds its own engine (embedded llama.cpp on a CPU node,
  ``vllm``/``openai``/``pool`` on a GPU node; Ray resources per actor from ``--ray-actor
  num_cpus=1``, ``num_gpus=1``, ``memory=...``) and runs the whole strategy of a problem, so every
  request of a problem hits the replica that caches its prefix;
- at most ``per_actor`` problems are in flight on one actor; the least-loaded live actor gets the
  next one;
- an actor (or its node) that dies loses nothing: its unfinished problems are sent to the others,
  with a warning; only when no actor is left does the run stop (finished results stay on disk);
- strategies never see Ray: an actor runs the same :class:`~ttscale.lab.runner.Runner.solve`.

Ray is an optional dependency (``pip install 'ttscale[ray]'``); nothing here imports it at module
load, and ``ttscale`` works without it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ttscale.core.errors import ConfigError, EngineError
from ttscale.core.types import Problem, Result
from ttscale.lab.runner import Runner

LOCAL = "local"
OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""Object store of a local cluster: results are small, so a small store leaves memory to models."""
ACTOR_OPTIONS = ("num_cpus", "num_gpus", "memory")
MAX_ACTOR_DEATHS = 3
"""A problem in flight on this many actors that died is given up (it may be what kills them)."""
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.-]+:\d+$")


def looks_like_address(s: str) -> bool:
    """True for ``local``, ``auto``, ``HOST:PORT`` and ``ray://HOST:PORT`` (what ``--ray`` takes)."""
    return s in (LOCAL, "auto") or bool(_ADDRESS.match(s))


@dataclass(frozen=True)
class RaySettings:
    """Where and how to run: ``address`` (``local`` starts a cluster on this machine), ``actors``
    (0: as many as the cluster's resources fit), Ray ``options`` per actor, ``per_actor`` problems
    in flight per actor, and ``local_cpus`` of a local cluster (default: this machine's cores)."""

    address: str = LOCAL
    actors: int = 0
    options: Mapping[str, float] = field(default_factory=lambda: {"num_cpus": 1.0})
    per_actor: int = 4
    local_cpus: int | None = None

    @classmethod
    def parse(cls, address: str, actors: int = 0, actor_options: Mapping[str, Any] | None = None,
              per_actor: int = 4) -> RaySettings:
        if not looks_like_address(address):
            raise ConfigError(f"--ray {address!r}: expected nothing (a local cluster), auto, HOST:PORT or "
                              "ray://HOST:PORT")
        if actors < 0:
            raise ConfigError(f"--ray-actors must be >= 0 (0: as many as fit), got {actors}")
        opts: dict[str, float] = {"num_cpus": 1.0}
        for k, v in (actor_options or {}).items():
            if k not in ACTOR_OPTIONS:
                raise ConfigError(f"--ray-actor {k}={v}: unknown option (known: {', '.join(ACTOR_OPTIONS)})")
            try:
                opts[k] = float(v)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"--ray-actor {k}={v}: not a number") from e
            if opts[k] < 0:
                raise ConfigError(f"--ray-actor {k}={v}: must be >= 0")
        return cls(address=address, actors=actors, options=opts, per_actor=max(1, per_actor))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--ray needs Ray, which is not installed: pip install ray "
                          "(or run without --ray)") from e
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a dead address (``ray.init`` would retry for minutes)."""
    if not _ADDRESS.match(address):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({e}); start one with "
                          "`ray start --head` and pass its address, or use --ray alone for a local cluster") from e


def connect(settings: RaySettings) -> bool:
    """Connect to (or start) the cluster; returns True when this call started Ray (and so should
    shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if settings.address == LOCAL:
        ray.init(address="local", num_cpus=settings.local_cpus or os.cpu_count() or 1,
                 object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        _check_reachable(settings.address)
        try:
            ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as e:
            raise ConfigError(f"cannot connect to the Ray cluster at {settings.address}: {e}") from e
    return True


# ----------------------------------------------------------------------------------------------------
# the actor


@dataclass(frozen=True)
class EngineSpecR:
    """What an actor builds: ``make_engine(engine, model, params)`` and extra named engines."""

    engine: str
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.model}" if self.model else self.engine


@dataclass(frozen=True)
class RunSpec:
    """One run's settings, as an actor rebuilds its runner from them (``key`` tells runs apart)."""

    key: str
    strategy: str
    params: Mapping[str, Any]
    budget: Mapping[str, Any]
    seed: int
    system_prompt: str | None
    grader: str | None
    verifiers: tuple[tuple[str, Mapping[str, Any]], ...] = ()


class ReplicaWorker:
    """One engine replica and the runners of the runs it serves (runs inside a Ray actor)."""

    def __init__(self, index: int, spec: EngineSpecR) -> None:
        self.index = index
        self.spec = spec
        self.engine: Any = None
        self.extras: dict[str, Any] = {}
        self.runners: dict[str, Runner] = {}

    async def start(self) -> dict[str, Any]:
        """Build the engine (load the model); returns what the driver shows about this replica."""
        from ttscale.engines import make_engine

        self.engine = make_engine(self.spec.engine, self.spec.model, dict(self.spec.params))
        self.extras = {n: make_engine(k, m, {}) for n, (k, m) in self.spec.extras.items()}
        import ray

        return {"index": self.index, "name": self.engine.name, "model": self.engine.model,
                "params_count": self.engine.params_count, "node": ray.util.get_node_ip_address(),
                "pid": os.getpid()}

    def _runner(self, spec: RunSpec) -> Runner:
        runner = self.runners.get(spec.key)
        if runner is None:
            from ttscale.core.budget import Budget
            from ttscale.datasets import make_grader
            from ttscale.verifiers import make_verifier
            from ttscale.verifiers.math_answers import MathAnswers

            eng = self.engine
            runner = Runner(
                engine=eng, strategy=spec.strategy, params=dict(spec.params), answers=MathAnswers(),
                grader=make_grader(spec.grader) if spec.grader else None, budget=Budget(**spec.budget),
                seed=spec.seed, system_prompt=spec.system_prompt,
                verifiers={n: make_verifier(n, eng, dict(p)) for n, p in spec.verifiers},
                make_verifier=lambda n: make_verifier(n, eng), progress=False, engines=self.extras,
            )
            self.runners[spec.key] = runner
        return runner

    async def solve(self, spec: RunSpec, problem: Problem) -> Result:
        return await self._runner(spec).solve(problem)

    async def stop(self) -> None:
        for e in [self.engine, *self.extras.values()]:
            if e is not None:
                await e.aclose()


# ----------------------------------------------------------------------------------------------------
# the driver's side


@dataclass
class ActorSlot:
    """The driver's view of one actor: handle, what it is, load and counters."""

    index: int
    handle: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = True
    in_flight: int = 0
    done: int = 0
    graded: int = 0
    correct: int = 0
    generated_tokens: int = 0
    lost: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def label(self) -> str:
        return f"replica {self.index} ({self.info.get('node', '?')})"

    def stats(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        return {"replica": self.label, "healthy": self.alive, "problems": self.done,
                "accuracy": self.correct / self.graded if self.graded else None,
                "generated_tokens": self.generated_tokens,
                "tokens_per_s": self.generated_tokens / elapsed if elapsed > 0 else 0.0,
                "problems_rescheduled": self.lost}


def _cause(e: BaseException) -> BaseException:
    """The exception raised inside an actor, unwrapped from Ray's RayTaskError."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


class ReplicaSet:
    """The actors of one engine spec, and the dispatching of problems to them."""

    def __init__(self, spec: EngineSpecR, settings: RaySettings,
                 warn: Callable[[str], None] = lambda msg: None) -> None:
        self.spec = spec
        self.settings = settings
        self.warn = warn
        self.slots: list[ActorSlot] = []
        self._changed: asyncio.Condition | None = None
        self.on_done: Callable[[ActorSlot, Result], None] | None = None

    def _count(self, ray: Any) -> int:
        if self.settings.actors:
            return self.settings.actors
        total = ray.cluster_resources()
        names = {"num_cpus": "CPU", "num_gpus": "GPU"}
        fits = [int(total.get(names[k], 0) // v) for k, v in self.settings.options.items() if k in names and v > 0]
        return max(1, min(fits) if fits else 1)

    def start(self) -> ReplicaSet:
        """Create the actors and load their models; actors that cannot load are dropped with a
        warning, and none loading is an error naming the cause."""
        ray = _import_ray()
        opts = dict(self.settings.options)
        cls = ray.remote(max_restarts=0, max_concurrency=max(8, 4 * self.settings.per_actor),
                         **{k: (int(v) if k == "memory" else v) for k, v in opts.items()})(ReplicaWorker)
        n = self._count(ray)
        spec = self.spec
        if spec.engine == "embedded" and "threads" not in spec.params and opts.get("num_cpus", 0) >= 1:
            # llama.cpp would take every core of the node; an actor gets the CPUs Ray gave it
            spec = replace(spec, params={**spec.params, "threads": int(opts["num_cpus"])})
        slots = [ActorSlot(i, cls.remote(i, spec)) for i in range(n)]
        refs = [s.handle.start.remote() for s in slots]
        errors = []
        for s, ref in zip(slots, refs, strict=True):
            try:
                s.info = ray.get(ref)
                s.started = time.perf_counter()
            except Exception as e:
                s.alive = False
                errors.append(f"actor {s.index}: {_first_line(_cause(e))}")
                ray.kill(s.handle)
        self.slots = [s for s in slots if s.alive]
        if not self.slots:
            raise EngineError(f"no Ray actor could load its engine {self.spec.label}: {'; '.join(errors)}")
        for err in errors:
            self.warn(f"a Ray actor could not load its engine {self.spec.label} and is left out ({err})")
        return self

    @property
    def engine_info(self) -> dict[str, Any]:
        return self.slots[0].info

    async def _acquire(self, avoid: set[int]) -> ActorSlot:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                live = [s for s in self.slots if s.alive]
                if not live:
                    raise EngineError(f"every Ray actor of {self.spec.label} is gone; finished problems are "
                                      "saved, rerun the same command to resume")
                free = [s for s in live if s.in_flight < self.settings.per_actor]
                if free:
                    best = min(free, key=lambda s: (s.index in avoid, s.in_flight, s.done))
                    best.in_flight += 1
                    return best
                await self._changed.wait()

    async def _release(self, slot: ActorSlot) -> None:
        assert self._changed is not None
        async with self._changed:
            slot.in_flight -= 1
            self._changed.notify_all()

    async def solve(self, run: RunSpec, problem: Problem) -> Result:
        """Solve ``problem`` on some live actor; an actor that dies meanwhile passes it on."""
        ray = _import_ray()
        tried: set[int] = set()
        while True:
            slot = await self._acquire(tried)
            try:
                res: Result = await slot.handle.solve.remote(run, problem)
            except ray.exceptions.RayActorError as e:
                tried.add(slot.index)
                slot.lost += 1
                if slot.alive:
                    slot.alive = False
                    self.warn(f"{slot.label} is gone ({_first_line(e)[:160]}); its unfinished problems "
                              "go to the other actors")
                if len(tried) >= MAX_ACTOR_DEATHS:
                    raise EngineError(f"problem {problem.id!r} was in flight on {len(tried)} Ray actors that died "
                                      f"(last: {_first_line(e)[:200]}); is it what kills them?") from None
                continue
            except ray.exceptions.RayTaskError as e:
                raise _cause(e) from None
            finally:
                await self._release(slot)
            slot.done += 1
            slot.generated_tokens += res.cost.generated_tokens
            if res.correct is not None:
                slot.graded += 1
                slot.correct += bool(res.correct)
            if self.on_done is not None:
                self.on_done(slot, res)
            return res

    def replica_stats(self) -> list[dict[str, Any]]:
        return [s.stats() for s in self.slots]

    def stop(self) -> None:
        ray = _import_ray()
        for s in self.slots:
            if s.alive:
                try:
                    ray.get(s.handle.stop.remote(), timeout=30)
                except Exception:  # a dying actor: kill it anyway
                    pass
            ray.kill(s.handle)


class _RemoteEngine:
    """What the driver-side runner knows of the actors' engine (it never generates here)."""

    supports_token_ids = False
    supports_logprobs = False

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.name = str(info.get("name", "?"))
        self.model = str(info.get("model", "?"))
        self.params_count = info.get("params_count")

    async def generate(self, req: Any) -> Any:  # pragma: no cover - never called
        raise EngineError("the Ray driver does not generate; its actors do")

    async def aclose(self) -> None:
        return None


class RayRunner(Runner):
    """A :class:`Runner` whose ``solve`` runs on a :class:`ReplicaSet`: reading, resuming and
    appending the results file stay the runner's own."""

    def __init__(self, replicas: ReplicaSet, run: RunSpec, **kw: Any) -> None:
        super().__init__(engine=_RemoteEngine(replicas.engine_info), strategy=run.strategy,
                         params=dict(run.params), **kw)
        self.replicas = replicas
        self.run_spec = run

    async def solve(self, problem: Problem) -> Result:
        return await self.replicas.solve(self.run_spec, problem)


def run_key(parts: Sequence[Any]) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:12]
