"""The server's bounds on what one request may ask for.

Two ceilings come from the config (``max_request_generations``, ``max_request_tokens``; CLI
``--max-request-generations``, ``--max-request-tokens``): every request's budget is capped by them
(so whatever a strategy does, its policy generations and tokens stay under them), and a request
that explicitly asks for more (pass-through ``n`` or ``max_tokens``, a strategy's sample-count or
token parameter) is refused with a 400 that names the limit and the flag. Every numeric strategy
parameter must be finite and within sanity bounds, and other integers at most
:data:`INT_CEILING`, so that no value can make a strategy raise (a 500) or run away with the
server's CPU or memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable
from typing import Any

from ttscale.serve.config import ServeConfig
from ttscale.serve.errors import ApiError, bad_request, show_value

GENERATIONS_FLAG = "--max-request-generations"
TOKENS_FLAG = "--max-request-tokens"

SAMPLE_COUNT_PARAMS = frozenset({
    "n", "m", "k", "k_verif", "max_samples", "min_samples", "probe_n", "budget", "batch", "beam_width",
    "population", "islands", "warmup", "max_children", "max_tied", "k_tie",
})
"""Strategy parameters that count generations (samples, beams, members, verifications)."""

AT_LEAST_ONE_PARAMS = frozenset({
    "n", "m", "k", "k_verif", "max_samples", "probe_n", "budget", "batch", "beam_width", "population",
    "islands", "generations", "rounds", "max_children", "max_steps", "draws", "max_tied",
})
"""Counts for which 0 leaves the strategy nothing to do (or divides by zero)."""

TOKEN_WINDOW_PARAMS = frozenset({"window", "tail"})
"""Token counts that are not named ``*tokens``."""

LOGPROB_PARAMS = frozenset({"logprobs", "top_k"})
"""Top-k logprobs per token: at most :data:`MAX_LOGPROBS`, as for the request's ``top_logprobs``."""

MAX_LOGPROBS = 20

INT_CEILING = 10_000
"""Largest value of any other integer strategy parameter (rounds, draws, steps, ...)."""


def is_token_param(name: str) -> bool:
    return name.endswith("tokens") or name in TOKEN_WINDOW_PARAMS


def generations_exceeded(what: str, value: int, cfg: ServeConfig) -> ApiError:
    return bad_request(f"{what}={show_value(value)} exceeds this server's limit of {cfg.max_request_generations} "
                       f"generations per request (set by {GENERATIONS_FLAG} / max_request_generations)",
                       what.split(".")[0])


def tokens_exceeded(what: str, value: int, cfg: ServeConfig) -> ApiError:
    return bad_request(f"{what}={show_value(value)} exceeds this server's limit of {cfg.max_request_tokens} "
                       f"generated tokens per request (set by {TOKENS_FLAG} / max_request_tokens)",
                       what.split(".")[0])


def check_strategy_params(params: Any, cfg: ServeConfig, explicit: Collection[str]) -> None:
    """400 unless every numeric field of a strategy's params is finite and within its sanity bounds,
    and those the client set (``explicit``) within the server's ceilings; defaults above a ceiling
    are left to the request's budget, which clips them."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        values: Iterable[Any] = value if isinstance(value, list | tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            what = f"ttscale.params.{f.name}"
            if isinstance(v, float):
                _check_float(what, f.name, v)
            else:
                _check_int(what, f.name, v, cfg if f.name in explicit else None)


def _check_float(what: str, name: str, v: float) -> None:
    if not math.isfinite(v):
        raise bad_request(f"{what} must be a finite number, got {v!r}", "ttscale")
    if "temperature" in name and v < 0:
        raise bad_request(f"{what} must be >= 0, got {v!r}", "ttscale")
    if name == "top_p" and not 0 <= v <= 1:
        raise bad_request(f"{what} must be between 0 and 1, got {v!r}", "ttscale")


def _check_int(what: str, name: str, v: int, cfg: ServeConfig | None) -> None:
    least = 1 if name in AT_LEAST_ONE_PARAMS or (is_token_param(name) and not name.startswith("min_")) else 0
    if v < least:
        raise bad_request(f"{what} must be >= {least}, got {show_value(v)}", "ttscale")
    if cfg is None:
        return
    if name in SAMPLE_COUNT_PARAMS:
        if v > cfg.max_request_generations:
            raise generations_exceeded(what, v, cfg)
    elif is_token_param(name):
        if v > cfg.max_request_tokens:
            raise tokens_exceeded(what, v, cfg)
    elif name in LOGPROB_PARAMS:
        if v > MAX_LOGPROBS:
            raise bad_request(f"{what} must be <= {MAX_LOGPROBS}, got {show_value(v)}", "ttscale")
    elif v > INT_CEILING:
        raise bad_request(f"{what} must be <= {INT_CEILING}, got {show_value(v)}", "ttscale")
