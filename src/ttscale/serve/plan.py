"""Request parsing: a generation request body becomes a validated :class:`Plan`, or a 400 that
names the field at fault. Unknown top-level fields are ignored (as other OpenAI-compatible servers
do); unknown keys inside ``ttscale`` are refused."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.io import jsonable
from ttscale.core.registry import Entry
from ttscale.serve.config import ServeConfig
from ttscale.serve.errors import bad_request, show_value
from ttscale.serve.limits import MAX_LOGPROBS, check_strategy_params, generations_exceeded, tokens_exceeded
from ttscale.serve.state import ServeState
from ttscale.strategies.base import STRATEGIES, load_strategies

_ROLES = {"system", "user", "assistant", "tool", "developer"}
_TTSCALE_KEYS = ("strategy", "params", "budget")
_BUDGET_KEYS = ("max_generations", "max_generated_tokens")
MAX_DEPTH = 32
"""Deepest nesting of arrays/objects a request body may have."""
_SEED_RANGE = (-(2**63), 2**63 - 1)


@dataclass
class Plan:
    """A validated generation request."""

    kind: str  # "chat" | "completion"
    id: str
    model: str
    entry: Entry[Any] | None
    params: Any
    budget: Budget
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def strategy(self) -> str | None:
        return self.entry.name if self.entry is not None else None

    def params_dict(self) -> dict[str, Any]:
        if self.params is None:
            return {}
        return jsonable(dataclasses.asdict(self.params))


@dataclass
class Sampling:
    """The OpenAI sampling fields of a request."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def decode_body(raw: bytes) -> Any:
    """The JSON value of a request body, or a 400: invalid JSON (``NaN``/``Infinity`` included),
    an integer too long to read, or nesting deeper than :data:`MAX_DEPTH`."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except _NonFinite as e:
        raise bad_request(f"the request body is not valid JSON: {e} is not a JSON value (numbers must be "
                          "finite)") from None
    except RecursionError:
        raise bad_request(f"the request body nests arrays/objects too deeply (limit {MAX_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    except ValueError as e:  # an integer literal over sys.get_int_max_str_digits() digits
        raise bad_request(f"the request body holds a number too large to read: {e}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(body, MAX_DEPTH):
        raise bad_request(f"the request body nests arrays/objects too deeply (limit {MAX_DEPTH} levels)")
    return body


class _NonFinite(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a body (Python's json reads them; JSON has none)."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def _deeper_than(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if not isinstance(o, dict | list):
            continue
        if depth > limit:
            return True
        children = o.values() if isinstance(o, dict) else o
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_plan(body: Any, kind: str, state: ServeState) -> Plan:
    """Validate a request body; unknown fields are ignored (as other OpenAI-compatible servers do)."""
    cfg = state.config
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a model name, or STRATEGY/MODEL)", "model")
    tt = _ttscale_section(body)
    load_strategies()
    strategy = _strategy_name(model, tt, state)
    if tt.get("params") and strategy is None:
        raise bad_request("'ttscale.params' given without a strategy", "ttscale")
    budget = _budget(tt, cfg)
    s = _sampling(body, cfg)
    if kind == "chat":
        logprobs = _chat_logprobs(body)
        messages, prompt = _messages(body.get("messages")), None
    else:
        logprobs = _num(body, "logprobs", int, 0, MAX_LOGPROBS) or None
        messages, prompt = (), _prompt(body.get("prompt"))
    entry, params = (None, None) if strategy is None else _strategy_params(strategy, tt, body, s, cfg)
    pfx = "chatcmpl" if kind == "chat" else "cmpl"
    return Plan(
        kind=kind, id=f"{pfx}-{uuid.uuid4().hex[:24]}", model=model, entry=entry, params=params, budget=budget,
        messages=messages, prompt=prompt, n=s.n, temperature=s.temperature, top_p=s.top_p,
        max_tokens=s.max_tokens or cfg.default_max_tokens, stop=s.stop, seed=s.seed, logprobs=logprobs,
        stream=s.stream, include_usage=s.include_usage,
    )


def _ttscale_section(body: Mapping[str, Any]) -> Mapping[str, Any]:
    tt = body.get("ttscale") or {}
    if not isinstance(tt, Mapping):
        raise bad_request("'ttscale' must be an object {strategy, params, budget}", "ttscale")
    unknown = sorted(set(tt) - set(_TTSCALE_KEYS))
    if unknown:
        raise bad_request(f"'ttscale' has unknown key(s) {', '.join(unknown)}; known: strategy, params, budget",
                          "ttscale")
    return tt


def _strategy_name(model: str, tt: Mapping[str, Any], state: ServeState) -> str | None:
    """The strategy named by the model prefix (``STRATEGY/MODEL``) or by ``ttscale.strategy``."""
    strategy: str | None = None
    prefix, slash, rest = model.partition("/")
    if slash and prefix in STRATEGIES:
        strategy = prefix
    elif slash and rest == state.served_model:
        try:
            STRATEGIES.get(prefix)
        except ConfigError as e:
            raise bad_request(str(e), "model") from None
    if tt.get("strategy") is not None:
        if not isinstance(tt["strategy"], str):
            raise bad_request("'ttscale.strategy' must be a string", "ttscale")
        if strategy is not None and tt["strategy"] != strategy:
            raise bad_request(f"model names strategy {strategy!r} but ttscale.strategy is {tt['strategy']!r}",
                              "ttscale")
        strategy = tt["strategy"]
    return strategy


def _budget(tt: Mapping[str, Any], cfg: ServeConfig) -> Budget:
    """The request's budget, capped by the server's."""
    braw = tt.get("budget") or {}
    if not isinstance(braw, Mapping):
        raise bad_request("'ttscale.budget' must be an object {max_generations, max_generated_tokens}", "ttscale")
    bad = sorted(set(braw) - set(_BUDGET_KEYS))
    if bad:
        raise bad_request(f"'ttscale.budget' has unknown key(s) {', '.join(bad)}; known: max_generations, "
                          "max_generated_tokens", "ttscale")
    caps = {"max_generations": cfg.max_request_generations, "max_generated_tokens": cfg.max_request_tokens}
    bvals: dict[str, int] = {}
    for k, cap in caps.items():
        v = _num(braw, k, int, 1)
        bvals[k] = cap if v is None else min(v, cap)
    return Budget(**bvals)


def _sampling(body: Mapping[str, Any], cfg: ServeConfig) -> Sampling:
    n = _num(body, "n", int, 1, default=1)
    if n > cfg.max_request_generations:
        raise generations_exceeded("n", n, cfg)
    temperature = _num(body, "temperature", float, 0.0, 2.0, 1.0)
    top_p = _num(body, "top_p", float, 0.0, 1.0, 1.0)
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):  # the first one set wins
        max_tokens = _num(body, key, int, 1)
        if max_tokens is not None:
            if max_tokens > cfg.max_request_tokens:
                raise tokens_exceeded(key, max_tokens, cfg)
            break
    seed = _num(body, "seed", int, *_SEED_RANGE)
    stop = _stop(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    so = body.get("stream_options") or {}
    include_usage = bool(so.get("include_usage")) if isinstance(so, Mapping) else False
    if body.get("tools"):
        raise bad_request("'tools' are not supported by ttscale serve (the upstream engines take text only)",
                          "tools")
    return Sampling(n, temperature, top_p, max_tokens, seed, stop, stream, include_usage)


def _strategy_params(strategy: str, tt: Mapping[str, Any], body: Mapping[str, Any],
                     s: Sampling, cfg: ServeConfig) -> tuple[Entry[Any], Any]:
    """The strategy's entry and params: ``ttscale.params``, then the request's ``temperature``,
    ``top_p`` and ``max_tokens`` for the params of those names that ``ttscale.params`` leaves unset."""
    try:
        entry = STRATEGIES.get(strategy)
    except ConfigError as e:
        raise bad_request(str(e), "ttscale") from None
    if s.n != 1:
        raise bad_request("'n' must be 1 with a strategy (the strategy's params set how many samples "
                          "it draws)", "n")
    pvals = tt.get("params") or {}
    if not isinstance(pvals, Mapping):
        raise bad_request("'ttscale.params' must be an object", "ttscale")
    pvals = dict(pvals)
    fields = {f.name for f in entry.fields()}
    for key, value in (("temperature", body.get("temperature")), ("top_p", body.get("top_p")),
                       ("max_tokens", s.max_tokens)):
        if value is not None and key in fields and key not in pvals:
            pvals[key] = value
    try:
        params = entry.make_params(pvals)
    except (ConfigError, TypeError, ValueError) as e:
        raise bad_request(str(e), "ttscale") from None
    check_strategy_params(params, cfg, explicit=pvals)
    return entry, params


def _num(body: Mapping[str, Any], key: str, kind: type, lo: float | None = None, hi: float | None = None,
         default: Any = None) -> Any:
    """``body[key]`` as ``kind`` (``default`` when absent or null), or a 400 naming the key: not a
    number, not finite, not integral for an int, or outside ``[lo, hi]`` (compared exactly, so a
    huge integer is out of range rather than an overflow)."""
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
        raise bad_request(f"'{key}' must be {'an integer' if kind is int else 'a finite number'}, got "
                          f"{show_value(v)}", key)
    if kind is int and isinstance(v, float) and not v.is_integer():
        raise bad_request(f"'{key}' must be an integer, got {v!r}", key)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise bad_request(f"'{key}' must be {rng}, got {show_value(v)}", key)
    return kind(v)


def _chat_logprobs(body: Mapping[str, Any]) -> int | None:
    lp = body.get("logprobs")
    if lp is not None and not isinstance(lp, bool):
        raise bad_request("'logprobs' must be a boolean", "logprobs")
    if lp:
        return max(1, _num(body, "top_logprobs", int, 0, MAX_LOGPROBS, 0))
    return None


def _prompt(p: Any) -> str:
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise bad_request("'prompt' must be a string (one prompt per request)", "prompt")
    return p


def _content(msg: Mapping[str, Any], i: int) -> str:
    c = msg.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for p in c:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, Mapping) else type(p).__name__
                raise bad_request(f"messages[{i}]: content part of type {show_value(kind)} is not supported "
                                  "(text only)", "messages")
        return "".join(parts)
    raise bad_request(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _messages(raw: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise bad_request(f"messages[{i}] must be an object", "messages")
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}, got {show_value(role)}",
                              "messages")
        if m.get("tool_calls"):
            raise bad_request(f"messages[{i}]: tool calls are not supported by ttscale serve", "messages")
        out.append({"role": "system" if role == "developer" else role, "content": _content(m, i)})
    return tuple(out)


def _stop(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(s, str) for s in v) and len(v) <= 16:
        return tuple(s for s in v if s)
    raise bad_request("'stop' must be a string or a list of at most 16 strings", "stop")
