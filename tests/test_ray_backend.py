"""``ttscale run --ray`` and ``ttscale sweep --ray`` on a real local Ray cluster (a head and one
worker node, both on this machine), with an actor killed mid-run; and the bad-input errors.

The cluster is started with ``ray start --block`` in a new session of its own and stopped by
killing that session's process group (never ``ray stop``, which would stop every Ray on the box).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttscale.lab.ray_backend import RaySettings, looks_like_address

ROOT = Path(__file__).resolve().parents[1]
MARK = f"ttscale-ray-test-{uuid.uuid4().hex[:8]}"
MODEL_ARGS = ("--model", "smollm2-135m", "--engine-param", "threads=1", "--engine-param", "n_parallel=1",
              "--engine-param", "kv_store_mib=0")

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'ttscale[ray]')")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            **extra}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout, cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports(*names: str) -> list[str]:
    return [f"--{n}={_free_port()}" for n in names]


NODE_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port")


@contextlib.contextmanager
def ray_cluster() -> Iterator[str]:
    """A head and one worker node on loopback, 1 CPU each; yields the head's address."""
    port = _free_port()
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--block", "--disable-usage-stats"]
    env = _env(TTSCALE_RAY_TEST=MARK)
    procs = [subprocess.Popen(
        ["ray", "start", "--head", f"--port={port}", "--include-dashboard=false",
         *_ports(*NODE_PORTS), *common],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("the Ray head did not start")
            time.sleep(0.5)
        procs.append(subprocess.Popen(
            ["ray", "start", f"--address={address}", *_ports(*NODE_PORTS), *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_nodes(address, 2)
        yield address
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for pid in _our_ray_pids(""):  # workers left behind by the nodes (they carry our mark)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_nodes(address: str, n: int) -> None:
    code = ("import ray,time,sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
            "t=time.time()\nwhile sum(x['Alive'] for x in ray.nodes()) < int(sys.argv[2]) and time.time()-t < 90:"
            " time.sleep(0.5)\nprint(sum(x['Alive'] for x in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code, address, str(n)], capture_output=True, text=True,
                         env=_env(), timeout=150)
    assert out.stdout.strip().endswith(str(n)), f"Ray worker node did not join: {out.stdout} {out.stderr[-500:]}"


def _our_ray_pids(title: str) -> list[int]:
    """Processes of our test cluster (marked through their environment) whose command line starts
    with ``title`` (``ray::ReplicaWorker`` is an actor)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"TTSCALE_RAY_TEST={MARK}".encode() in environ and cmd.startswith(title) and int(d.name) != os.getpid():
            pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install 'ttscale[ray]')")
    with ray_cluster() as address:
        yield address


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _kill_one_actor_when(cond, proc: subprocess.Popen, timeout: float = 180) -> int:
    """Wait until ``cond()`` holds while ``proc`` runs, then SIGKILL one actor; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        actors = _our_ray_pids("ray::ReplicaWorker")
        if cond() and len(actors) >= 2:
            os.kill(actors[0], signal.SIGKILL)
            return actors[0]
        time.sleep(0.2)
    raise AssertionError(f"no actor to kill mid-run (cli exited with {proc.poll()})")


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ttscale.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)


@pytest.mark.ray
@pytest.mark.model
def test_run_on_ray_survives_a_killed_actor(cluster, tmp_path):
    out = tmp_path / "res.jsonl"
    total = 6
    proc = _popen("run", "--ray", cluster, "--ray-actors", "2", *MODEL_ARGS, "--limit", str(total),
                  "-p", "n=1", "-p", "max_tokens=16", "--concurrency", "1", "--out", str(out), "--no-progress")
    _kill_one_actor_when(lambda: 1 <= len(_lines(out)) < total - 2, proc)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    ids = [r["problem_id"] for r in _lines(out)]
    assert len(ids) == total and len(set(ids)) == total, ids
    assert "is gone" in stderr and "go to the other actors" in stderr, stderr[-2000:]
    assert f"{total}/{total} problems done" in stdout
    again = _cli("run", "--ray", cluster, "--ray-actors", "1", *MODEL_ARGS, "--limit", str(total), "-p", "n=1",
                 "-p", "max_tokens=16", "--concurrency", "1", "--out", str(out), "--no-progress")
    assert again.returncode == 0 and f"(0 now, {total} resumed)" in again.stdout, again.stderr[-2000:]


@pytest.mark.ray
@pytest.mark.model
def test_sweep_on_ray_survives_a_killed_actor(cluster, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "ray-sweep", "out": str(tmp_path / "sweep"), "concurrency": 1, "seeds": [0, 1],
        "engines": [{"engine": "embedded", "model": "smollm2-135m",
                     "params": {"threads": 1, "n_parallel": 1, "kv_store_mib": 0}}],
        "datasets": [{"dataset": "default", "limit": 3}],
        "runs": [{"strategy": "self_consistency", "params": {"n": 1, "max_tokens": 16}}],
    }))
    files = lambda: list((tmp_path / "sweep" / "runs").glob("*.jsonl"))  # noqa: E731
    proc = _popen("sweep", str(recipe), "--ray", cluster, "--ray-actors", "2", "--no-progress")
    _kill_one_actor_when(lambda: 1 <= sum(len(_lines(f)) for f in files()) < 4, proc)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    assert len(files()) == 2
    for f in files():
        ids = [r["problem_id"] for r in _lines(f)]
        assert len(ids) == 3 and len(set(ids)) == 3, (f, ids)
    table = [json.loads(line) for line in (tmp_path / "sweep" / "table.jsonl").read_text().splitlines()]
    assert len(table) == 6 and {r["seed"] for r in table} == {0, 1}
    assert "is gone" in stderr, stderr[-2000:]


@pytest.mark.ray
def test_ray_bad_inputs_are_one_error_line(cluster, tmp_path):
    common = ("--limit", "1", "-p", "n=1", "--no-progress", "--out", str(tmp_path / "x.jsonl"))
    unreachable = _cli("run", "--ray", "127.0.0.1:9", *MODEL_ARGS, *common)
    assert unreachable.returncode == 2
    assert "error: cannot reach the Ray cluster at 127.0.0.1:9" in unreachable.stderr
    no_model = _cli("run", "--ray", cluster, "--ray-actors", "1", "--model", str(tmp_path / "missing.gguf"), *common)
    assert no_model.returncode == 2, no_model.stderr[-1500:]
    err = [line for line in no_model.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no Ray actor could load its engine" in err[0] and "missing.gguf" in no_model.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_ray_absent_is_one_error_line(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = _env(PYTHONPATH=f"{tmp_path / 'noray'}{os.pathsep}{ROOT / 'src'}")
    p = _cli("run", "--ray", "--limit", "1", "--no-progress", "--out", str(tmp_path / "x.jsonl"), env=env)
    assert p.returncode == 2
    assert "error: --ray needs Ray, which is not installed: pip install ray" in p.stderr


def test_ray_settings_and_flag_parsing():
    from ttscale.cli import _ray_flag
    from ttscale.core.errors import ConfigError

    assert _ray_flag(["run", "--ray", "--limit", "2"]) == ["run", "--ray", "local", "--limit", "2"]
    assert _ray_flag(["run", "--ray"]) == ["run", "--ray", "local"]
    assert _ray_flag(["sweep", "--ray", "r.yaml"]) == ["sweep", "--ray", "local", "r.yaml"]
    assert _ray_flag(["run", "--ray", "10.0.0.1:6379"]) == ["run", "--ray", "10.0.0.1:6379"]
    assert looks_like_address("ray://head:10001") and looks_like_address("auto")
    s = RaySettings.parse("auto", 3, {"num_gpus": "1"}, per_actor=8)
    assert (s.actors, dict(s.options), s.per_actor) == (3, {"num_cpus": 1.0, "num_gpus": 1.0}, 8)
    with pytest.raises(ConfigError, match="--ray-actor gpus=1: unknown option"):
        RaySettings.parse("local", 0, {"gpus": "1"})
    with pytest.raises(ConfigError, match="--ray-actors must be >= 0"):
        RaySettings.parse("local", -1)
