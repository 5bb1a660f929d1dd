"""Hugging Face format weights for engines that cannot run a GGUF file directly (vLLM on CPU).

:func:`hf_model_dir` turns a model spec into something vLLM loads:

- a known model name (``qwen2.5-coder-0.5b``, ``smollm2-135m``, see :mod:`ttscale.engines.model_files`)
  or a path to a ``.gguf`` file: the GGUF is dequantised once with transformers' GGUF support
  (needs the ``gguf`` package) into ``<cache>/<name>-hf/`` (weights as safetensors, config and
  tokenizer, chat template included). A marker records the source file's size and modification
  time; a later call with the same source reuses the folder, a changed source converts again.
  The conversion writes into a temporary folder renamed into place, so a crash leaves no half
  folder behind.
- a local folder: checked to hold ``config.json`` and a tokenizer, returned as is.
- anything else (``Qwen/Qwen2.5-0.5B-Instruct``): a hub name, returned as is for vLLM to fetch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ttscale.core.errors import ModelFileError
from ttscale.engines.model_files import MODELS, cache_dir, resolve_model

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
_MARKER = "ttscale-source.json"
FORMAT = 1


def has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in _TOKENIZER_FILES)


def check_hf_folder(folder: Path) -> Path:
    """``folder`` when it holds a model config and a tokenizer; else a :class:`ModelFileError`."""
    if not (folder / "config.json").is_file():
        raise ModelFileError(
            f"model folder {folder} has no config.json: give a Hugging Face model folder, a .gguf file "
            "or a known model name"
        )
    if not has_tokenizer(folder):
        raise ModelFileError(
            f"model folder {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}): copy the "
            "tokenizer files of the original model into it, or pass -p --engine-param tokenizer=PATH_OR_HUB_NAME"
        )
    return folder


def _source_info(gguf: Path) -> dict[str, object]:
    st = gguf.stat()
    return {"format": FORMAT, "source": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_current(dest: Path, info: dict[str, object]) -> bool:
    try:
        have = json.loads((dest / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return have == info and (dest / "config.json").is_file() and has_tokenizer(dest)


def convert_gguf(gguf: Path, dest: Path, *, dtype: str = "bfloat16",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Dequantise ``gguf`` into the Hugging Face folder ``dest`` once (see the module docstring)."""
    info = _source_info(gguf)
    if _is_current(dest, info):
        return dest
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelFileError(
            f"converting {gguf.name} to Hugging Face format needs transformers and torch ({e}); install "
            "them with: pip install 'ttscale[vllm]'"
        ) from e
    if importlib_missing("gguf"):
        raise ModelFileError(f"converting {gguf.name} to Hugging Face format needs the gguf package: pip install gguf")
    if progress:
        progress(f"converting {gguf.name} to Hugging Face format in {dest} (once)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype), low_cpu_mem_usage=True
        )
        # the weights are dequantised on load; drop the GGUF marker so transformers saves them plainly
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        del model
        (tmp / _MARKER).write_text(json.dumps(info))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, ModelFileError):
            raise ModelFileError(f"cannot convert {gguf} to Hugging Face format: {type(e).__name__}: {e}") from e
        raise
    return dest


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def hf_model_dir(spec: str, *, dtype: str = "bfloat16", progress: Callable[[str], None] | None = None) -> str:
    """A model folder (or hub name) that vLLM loads, for a model name, ``.gguf`` path, folder or hub name."""
    if spec in MODELS:
        gguf = resolve_model(spec, progress=progress)
        return str(convert_gguf(gguf, cache_dir() / f"{spec}-hf", dtype=dtype, progress=progress))
    p = Path(spec).expanduser()
    if p.suffix.lower() == ".gguf":
        gguf = resolve_model(str(p))
        return str(convert_gguf(gguf, cache_dir() / f"{gguf.stem}-hf", dtype=dtype, progress=progress))
    if p.is_dir():
        return str(check_hf_folder(p))
    if p.exists() or spec.startswith((".", "/", "~")):
        raise ModelFileError(f"model {spec!r}: not a folder, a .gguf file or a known model name")
    return spec  # a hub name


def params_from_config(folder: str) -> float | None:
    """Parameter count of a decoder-only transformer from its ``config.json`` (for FLOPs), or None
    when the folder or the fields needed are missing (a hub name)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    try:
        h = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        inter = int(cfg["intermediate_size"])
        vocab = int(cfg["vocab_size"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2  # q, o and k, v projections
    mlp = 3 * h * inter  # gated MLP: gate, up, down
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return float(layers * (attn + mlp + 2 * h) + embed + h)
