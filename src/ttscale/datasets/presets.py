"""Named Hugging Face datasets (``gsm8k``, ``math500``, ``aime24``) and ``hf:NAME[:CONFIG][@SPLIT]``.

Loading needs the optional ``datasets`` library (``pip install 'ttscale[hf]'``) and either the hub or a
local cache (``HF_DATASETS_OFFLINE=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.core.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """Where a named dataset lives on the Hugging Face hub and which fields it uses."""

    hf_name: str
    config: str | None
    split: str
    question_field: str
    answer_field: str
    id_field: str | None = None
    description: str = ""


PRESETS: dict[str, Preset] = {
    "gsm8k": Preset(
        "openai/gsm8k",
        "main",
        "test",
        "question",
        "answer",
        None,
        "GSM8K grade-school math, 1319 test problems (reference after '####')",
    ),
    "math500": Preset(
        "HuggingFaceH4/MATH-500",
        None,
        "test",
        "problem",
        "answer",
        "unique_id",
        "MATH-500 competition math subset, 500 problems",
    ),
    "aime24": Preset(
        "HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "id", "AIME 2024 I and II, 30 problems"
    ),
}


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME[:CONFIG][@SPLIT]`` (without the ``hf:`` prefix) -> (name, config, split)."""
    rest, split = spec, None
    if "@" in rest:
        rest, split = rest.rsplit("@", 1)
        split = split.strip() or None
    name, config = rest, None
    if ":" in rest:
        name, config = rest.split(":", 1)
        config = config.strip() or None
    name = name.strip()
    if not name:
        raise ConfigError(
            f"hf:{spec}: no dataset name; use hf:NAME[:CONFIG][@SPLIT], e.g. hf:openai/gsm8k:main@test"
        )
    return name, config, split


def _pick_split(dd: Any, name: str) -> Any:
    keys = list(dd.keys())
    for k in ("test", "validation", "train"):
        if k in keys:
            return dd[k]
    if not keys:
        raise ConfigError(f"Hugging Face dataset {name!r} has no splits")
    return dd[keys[0]]


def load_hf_rows(name: str, config: str | None = None, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of a Hugging Face dataset split as plain dicts (ConfigError with a way out when the
    library is missing or the hub cannot be reached)."""
    try:
        import datasets as hf_datasets
    except ImportError as e:
        raise ConfigError(
            f"loading the Hugging Face dataset {name!r} needs the `datasets` library: "
            f"pip install 'ttscale[hf]' (or download the data file and pass its path instead)"
        ) from e
    where = name + (f" (config {config!r})" if config else "") + (f", split {split!r}" if split else "")
    try:
        ds = (
            hf_datasets.load_dataset(name, config, split=split)
            if split
            else hf_datasets.load_dataset(name, config)
        )
    except Exception as e:
        raise ConfigError(
            f"could not load the Hugging Face dataset {where}: {type(e).__name__}: {e}\n"
            f"If the Hugging Face hub is unreachable from here, use a local copy: either set "
            f"HF_DATASETS_OFFLINE=1 with the dataset already in your Hugging Face cache, or download its "
            f"data file (jsonl/json/csv/parquet, e.g. from https://huggingface.co/datasets/{name}) and pass "
            f"the file's path as the dataset."
        ) from e
    if split is None:
        ds = _pick_split(ds, name)
    return [dict(row) for row in ds]
