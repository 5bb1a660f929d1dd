"""Datasets: files, the bundled default, Hugging Face presets and reasoning-gym tasks (see
:mod:`ttscale.datasets.loaders`)."""

from ttscale.datasets.loaders import (
    ANSWER_FIELDS,
    ID_FIELDS,
    QUESTION_FIELDS,
    Dataset,
    default_dataset_path,
    load_dataset,
    load_file,
    make_grader,
    read_rows,
    rows_to_problems,
)
from ttscale.datasets.presets import PRESETS, Preset
from ttscale.datasets.reasoning_gym import ReasoningGymGrader, load_rg

__all__ = [
    "ANSWER_FIELDS",
    "ID_FIELDS",
    "PRESETS",
    "QUESTION_FIELDS",
    "Dataset",
    "Preset",
    "ReasoningGymGrader",
    "default_dataset_path",
    "load_dataset",
    "load_file",
    "load_rg",
    "make_grader",
    "read_rows",
    "rows_to_problems",
]
