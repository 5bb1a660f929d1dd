"""How a sandboxed process is isolated from the machine: found once, by trying what exists here.

In order of preference:

- ``bwrap`` (bubblewrap): new network, PID, IPC and UTS namespaces; the whole file system read-only
  except a fresh temporary directory (mounted at ``/tmp/work``, the working directory) and a private
  ``/tmp``; home directories hidden (the Python installation is mounted back read-only where it
  lives under one); when ttscale runs as root the program runs as ``nobody`` (``setpriv``), so the
  process limit applies and root-owned files stay out of reach. The process dies with its parent.
- ``unshare`` (util-linux): new network and PID namespaces only (the file system is the host's).
- ``none``: a plain child process; resource limits, the timeout and the clean environment still
  apply. A warning names what is missing.

``TTSCALE_SANDBOX=bwrap|unshare|none`` forces a mode (for tests and for machines where a probe
misleads); a forced mode that does not work here is an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from ttscale.core.errors import ConfigError

log = logging.getLogger(__name__)

Kind = Literal["bwrap", "unshare", "none"]
NOBODY = 65534
INNER_WORKDIR = "/tmp/work"
HIDDEN = ("/root", "/home", "/run/secrets", "/var/run/secrets")
PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Isolation:
    """A working isolation mode and how to wrap a command in it."""

    kind: Kind
    drop_uid: int | None = None
    """The uid the program runs as (root only: ``nobody``), ``None`` to keep ttscale's."""
    missing: tuple[str, ...] = field(default=())

    def workdir_inside(self, workdir: str) -> str:
        return INNER_WORKDIR if self.kind == "bwrap" else workdir

    def environment(self, workdir: str) -> dict[str, str]:
        """The whole environment of a sandboxed process: nothing is inherited."""
        inner = self.workdir_inside(workdir)
        return {"PATH": PATH, "HOME": inner, "TMPDIR": "/tmp" if self.kind == "bwrap" else inner,
                "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
                "MPLCONFIGDIR": inner, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def command(self, argv: Sequence[str], workdir: str) -> list[str]:
        """``argv`` wrapped so that it runs isolated, in ``workdir``."""
        if self.kind == "bwrap":
            return _bwrap_prefix(workdir, self.drop_uid, self.environment(workdir)) + list(argv)
        if self.kind == "unshare":
            return _unshare_prefix() + _setpriv(self.drop_uid) + list(argv)
        return _setpriv(self.drop_uid) + list(argv)


def _setpriv(uid: int | None) -> list[str]:
    if uid is None:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]


def _unshare_prefix() -> list[str]:
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child"]


def _reexposed() -> list[str]:
    """Paths Python needs (its installation, ``sys.path``) that lie under a hidden directory."""
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).parent)}
    wanted |= {p for p in sys.path if p and os.path.isdir(p)}
    hidden = [h for h in _hidden_dirs()]
    under = sorted({os.path.abspath(p) for p in wanted if any(_is_under(os.path.abspath(p), h) for h in hidden)})
    out: list[str] = []
    for p in under:  # drop paths inside another re-exposed path
        if not any(_is_under(p, q) for q in out):
            out.append(p)
    return out


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hidden_dirs() -> list[str]:
    home = os.path.expanduser("~")
    dirs = list(HIDDEN) + ([home] if home not in ("/", "") else [])
    return sorted({d for d in dirs if os.path.isdir(d)})


def _bwrap_prefix(workdir: str, uid: int | None, env: dict[str, str]) -> list[str]:
    args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if os.geteuid() != 0:
        args.append("--unshare-user")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
             "--bind", workdir, INNER_WORKDIR]
    hidden = _hidden_dirs()
    for h in hidden:
        if not any(_is_under(h, o) and h != o for o in hidden):
            args += ["--perms", "0755", "--tmpfs", h]
    made: set[str] = set(hidden)
    for p in _reexposed():
        parents = [str(a) for a in reversed(Path(p).parents)]
        for a in parents:
            if a not in made and any(_is_under(a, h) for h in hidden):
                args += ["--perms", "0755", "--dir", a]
                made.add(a)
        args += ["--ro-bind", p, p]
    args += ["--chdir", INNER_WORKDIR, "--clearenv"]
    for k, v in env.items():
        args += ["--setenv", k, v]
    args += ["--"]
    return args + _setpriv(uid)


def _works(argv: list[str], workdir: str, env: dict[str, str]) -> bool:
    try:
        r = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _try(kind: Kind, uid: int | None) -> bool:
    import tempfile

    probe = [sys.executable, "-s", "-c", "import os, sys; sys.exit(0 if os.getcwd() else 1)"]
    with tempfile.TemporaryDirectory(prefix="ttscale-probe-") as d:
        if uid is not None:
            os.chown(d, uid, uid)
        iso = Isolation(kind, uid)
        return _works(iso.command(probe, d), d, iso.environment(d))


@cache
def detect() -> Isolation:
    """The best isolation that works here (probed once per process); logs a warning naming what is
    missing when it is not bubblewrap."""
    if not sys.platform.startswith("linux"):
        iso = Isolation("none", None, ("Linux namespaces (this is not Linux)",))
        _warn(iso)
        return iso
    root = os.geteuid() == 0
    uid = NOBODY if root and shutil.which("setpriv") else None
    forced = os.environ.get("TTSCALE_SANDBOX", "").strip().lower()
    if forced:
        if forced not in ("bwrap", "unshare", "none"):
            raise ConfigError(f"TTSCALE_SANDBOX={forced!r}: use bwrap, unshare or none")
        if forced != "none" and not _try(forced, uid):  # type: ignore[arg-type]
            raise ConfigError(f"TTSCALE_SANDBOX={forced}: {forced} does not work on this machine")
        iso = Isolation(forced, uid, _missing(forced, uid, root))  # type: ignore[arg-type]
    else:
        iso = _first_working(uid, root)
    _warn(iso)
    return iso


def _first_working(uid: int | None, root: bool) -> Isolation:
    for kind in ("bwrap", "unshare"):
        if not shutil.which(kind):
            continue
        for u in dict.fromkeys((uid, None)):
            if _try(kind, u):  # type: ignore[arg-type]
                return Isolation(kind, u, _missing(kind, u, root))  # type: ignore[arg-type]
    u = uid if uid is not None and _try("none", uid) else None
    return Isolation("none", u, _missing("none", u, root))


def _missing(kind: Kind, uid: int | None, root: bool) -> tuple[str, ...]:
    out = []
    if kind != "bwrap":
        out.append("bubblewrap (bwrap: a read-only file system and hidden home directories; "
                   "apt-get install bubblewrap)")
    if kind == "none":
        out.append("network and PID namespaces (unshare from util-linux, or bwrap)")
    if root and uid is None:
        out.append("setpriv (util-linux: without it programs run as root and the process limit "
                   "does not hold)")
    return tuple(out)


def _warn(iso: Isolation) -> None:
    if iso.missing:
        log.warning("code sandbox: running candidate programs with %s isolation; missing: %s",
                    iso.kind, "; ".join(iso.missing))


def process_base() -> int:
    """Processes the program's uid already has (the process limit counts them too), 0 for ``nobody``."""
    iso = detect()
    if iso.drop_uid is not None:
        return 0
    me = os.getuid()
    try:
        return sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(f"/proc/{p}") == me)
    except OSError:
        return 256


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None
