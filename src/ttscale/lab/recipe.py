"""Sweep recipes: one YAML file naming datasets × strategies × parameter grids × budgets × seeds
to run against one or more engines (``ttscale sweep RECIPE.yaml``).

A recipe reads like this (every field but ``runs`` has a default)::

    name: embedded-gsm                      # the sweep's name (default: the file's stem)
    out: runs/sweeps/embedded-gsm           # output directory (default: runs/sweeps/<name>)
    engines:                                # one or more; each is built once for the whole sweep
      - {engine: embedded, model: qwen2.5-coder-0.5b, params: {n_parallel: 4}}
    datasets:                               # same specs as `ttscale run --dataset`
      - {dataset: default, limit: 40}       # + limit, split, seed, question_field, answer_field, name
    seeds: [0]
    system_prompt: ...                      # optional ('' for none; default: the runner's)
    verifiers: {llm_judge: {}}              # optional: verifier name -> options (first = default)
    concurrency: 16                         # problems in flight at once
    order: datasets                         # datasets (default): each dataset's runs, then the next;
                                            # runs: each runs entry on every dataset, then the next
    cache: runs/sweeps/embedded-gsm/samples.sqlite   # optional: reuse seeded samples across runs
    runs:
      - strategy: best_of_n
        params: {n: 16, max_tokens: 384, verifier: llm_judge}
        subsample: {n: [1, 2, 4, 8, 16], select: [majority, best_of_n, weighted_best_of_n]}
      - strategy: beam_search
        grid: {n: [4, 8], beam_width: [2]}  # cartesian product of the lists, merged into params
        params: {max_tokens: 256}
        budgets: [{max_generated_tokens: 3000}]   # optional, cartesian with the grid

Relative paths (``out``, dataset files, engine model files) are relative to the current directory,
as on the ``ttscale run`` command line. Every field is validated up front; errors name the file,
the field and the value.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.core.budget import Budget
from ttscale.core.errors import ConfigError
from ttscale.core.io import jsonable

SELECT_RULES = ("majority", "best_of_n", "weighted_best_of_n")
"""Selection rules a subsampled configuration can apply to the first k samples of a run."""

SUBSAMPLE_SOURCES: dict[str, tuple[str, ...]] = {
    "self_consistency": ("majority",),
    "best_of_n": SELECT_RULES,
    "weighted_best_of_n": SELECT_RULES,
}
"""Strategies whose candidates are i.i.d. samples (so the first k are a valid k-sample run), and
the rules their candidates support (score-based rules need verifier scores)."""

TOP_LEVEL = ("name", "out", "engines", "datasets", "seeds", "system_prompt", "verifiers", "concurrency", "cache",
             "order", "runs")
ORDERS = ("datasets", "runs")
"""Plan orders: ``datasets`` = dataset outside configuration; ``runs`` = configuration outside dataset."""
ENGINE_KEYS = ("engine", "model", "params")
DATASET_KEYS = ("dataset", "name", "limit", "split", "seed", "question_field", "answer_field")
RUN_KEYS = ("strategy", "params", "grid", "budgets", "subsample")
BUDGET_KEYS = ("max_generations", "max_generated_tokens")
SUBSAMPLE_KEYS = ("n", "select")


@dataclass(frozen=True)
class EngineSpec:
    """One engine of the sweep, as ``ttscale.engines.make_engine(engine, model, params)`` takes it."""

    engine: str
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.model}" if self.model else self.engine


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the sweep, as ``ttscale.datasets.load_dataset`` takes it; ``label`` is its
    name in the sweep table."""

    dataset: str
    name: str | None = None
    limit: int | None = None
    split: str | None = None
    seed: int = 0
    question_field: str | None = None
    answer_field: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        s = self.dataset
        if "/" in s or s.endswith((".jsonl", ".ndjson", ".json", ".csv", ".parquet")):
            s = Path(s).stem
        if self.split:
            s += f"@{self.split}"
        if s.lower().startswith("rg:") and self.seed:
            s += f"-s{self.seed}"
        return s

    def identity(self) -> dict[str, Any]:
        """What makes results of this dataset comparable (the limit does not: resuming with a
        larger limit reuses the problems already run)."""
        d = dataclasses.asdict(self)
        d.pop("limit")
        d.pop("name")
        return d


@dataclass(frozen=True)
class Subsample:
    """Derive k-sample configurations from the first k candidates of a larger run."""

    n: tuple[int, ...]
    select: tuple[str, ...]


@dataclass(frozen=True)
class RunConfig:
    """One configuration to run: a strategy with validated parameters under one budget."""

    strategy: str
    params: Mapping[str, Any]
    """Every parameter of the strategy (defaults filled in), JSON-ready."""
    budget: Budget
    subsample: Subsample | None = None
    run_index: int = 0
    """Index of the ``runs`` entry this configuration came from."""

    @property
    def label(self) -> str:
        return config_label(self.strategy, self.params, self.budget.to_dict())


@dataclass(frozen=True)
class Recipe:
    """A validated sweep recipe (see the module docstring)."""

    name: str
    out: Path
    engines: tuple[EngineSpec, ...]
    datasets: tuple[DatasetSpec, ...]
    seeds: tuple[int, ...]
    configs: tuple[RunConfig, ...]
    system_prompt: str | None = None
    """``None``: the runner's default system prompt; ``""``: none."""
    verifiers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    concurrency: int = 16
    cache: Path | None = None
    """A generation cache (SQLite, :mod:`ttscale.engines.cache`) shared by every run and engine: runs
    that draw the same seeded samples generate them once."""
    order: str = "datasets"
    """Plan order (:data:`ORDERS`): ``runs`` puts the cheap first entries on every dataset first."""
    source: str = "recipe"

    def dataset_configs(self) -> list[tuple[DatasetSpec, RunConfig]]:
        """(dataset, configuration) pairs in plan order: dataset outside (``order: datasets``), or
        each ``runs`` entry's configurations on every dataset before the next entry (``order: runs``)."""
        if self.order != "runs":
            return [(ds, cfg) for ds in self.datasets for cfg in self.configs]
        entries = sorted({c.run_index for c in self.configs})
        return [(ds, cfg) for i in entries for ds in self.datasets for cfg in self.configs if cfg.run_index == i]


# ----------------------------------------------------------------------------------------------------
# labels


def strategy_defaults(strategy: str) -> dict[str, Any] | None:
    """The default parameters of a registered strategy (JSON-ready); None when it is unknown."""
    from ttscale.strategies.base import load_strategies

    reg = load_strategies()
    if strategy not in reg:
        return None
    try:
        return jsonable(dataclasses.asdict(reg.get(strategy).params_cls()))
    except TypeError:  # a params class with required fields: no defaults to compare against
        return {}


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v if v and not re.search(r"\s", v) else json.dumps(v)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def config_label(strategy: str, params: Mapping[str, Any], budget: Mapping[str, Any] | None = None,
                 *, defaults_of: str | None = None, always: Sequence[str] = ()) -> str:
    """A short stable label: ``"strategy k=v k=v"`` with sorted keys, only the parameters that
    differ from the defaults of ``defaults_of`` (default: ``strategy``) or are named in ``always``;
    a budget cap that is set is appended as ``budget.max_generations=4`` (and so on)."""
    defaults = strategy_defaults(defaults_of or strategy) or {}
    params = jsonable(dict(params))
    parts = [strategy]
    for k in sorted(params):
        if k in always or k not in defaults or defaults[k] != params[k]:
            parts.append(f"{k}={_fmt(params[k])}")
    for k in BUDGET_KEYS:
        v = (budget or {}).get(k)
        if v is not None:
            parts.append(f"budget.{k}={v}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------
# parsing


class _Checker:
    """Builds error messages that name the file, the field and the value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: field {where} = {value!r}: {why}")

    def mapping(self, where: str, value: Any, keys: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, value, "must be a mapping")
        unknown = sorted(str(k) for k in value if k not in keys)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", value[unknown[0]],
                            f"unknown field; known fields: {', '.join(keys)}")
        return dict(value)

    def free_mapping(self, where: str, value: Any) -> dict[str, Any]:
        """A mapping with any keys (validated by whoever consumes it)."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(where, value, "must be a mapping")
        return {str(k): v for k, v in value.items()}

    def seq(self, where: str, value: Any, *, allow_scalar: bool = False) -> list[Any]:
        if isinstance(value, list | tuple):
            if not value:
                raise self.fail(where, value, "must not be empty")
            return list(value)
        if allow_scalar and value is not None:
            return [value]
        raise self.fail(where, value, "must be a non-empty list")

    def string(self, where: str, value: Any, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, value, "must be a non-empty string")
        return value

    def integer(self, where: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, value, "must be an integer")
        if minimum is not None and value < minimum:
            raise self.fail(where, value, f"must be >= {minimum}")
        return value

    def entries(self, where: str, raw: Any, keys: Sequence[str], name_key: str,
                missing: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The entries of a list field (one scalar counts as a list of it), each as (its path, its
        fields): a bare string stands for ``{name_key: string}``; each must be a mapping with ``keys``
        that holds ``name_key`` (``missing`` says what that is). Lazy, so entries fail in order."""
        for i, e in enumerate(self.seq(where, raw, allow_scalar=True)):
            w = f"{where}[{i}]"
            e = self.mapping(w, {name_key: e} if isinstance(e, str) else e, keys)
            if name_key not in e:
                raise self.fail(f"{w}.{name_key}", None, f"missing field ({missing})")
            yield w, e

    def unique_labels(self, where: str, labels: Sequence[str], why: str) -> None:
        """Fail on the first label that appears twice."""
        if len(set(labels)) != len(labels):
            raise self.fail(where, next(x for x in labels if labels.count(x) > 1), why)

    def convert(self, where: str, value: Any, fn: Any) -> Any:
        try:
            return fn()
        except ConfigError as e:
            raise self.fail(where, value, str(e)) from e


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (YAML or JSON)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read recipe {p}: {e.strerror}") from e
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception as e:
        raise ConfigError(f"recipe {p} is not valid YAML: {e}") from e
    return parse_recipe(data, source=str(p), default_name=p.stem)


def parse_recipe(data: Any, *, source: str = "recipe", default_name: str = "sweep") -> Recipe:
    """Validate a recipe mapping (see the module docstring) into a :class:`Recipe`."""
    from ttscale.verifiers import load_verifiers

    c = _Checker(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a recipe must be a mapping of fields ({', '.join(TOP_LEVEL)})")
    d = c.mapping("(top level)", data, TOP_LEVEL)

    name = c.string("name", d.get("name", default_name)) or default_name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise c.fail("name", name, "use letters, digits, '.', '_' and '-' only")
    out = Path(c.string("out", d["out"]) or "") if d.get("out") is not None else Path("runs/sweeps") / name
    engines = _parse_engines(c, d.get("engines", [{"engine": "embedded"}]))
    datasets = _parse_datasets(c, d.get("datasets", [{"dataset": "default"}]))

    seeds = [c.integer(f"seeds[{i}]", s) for i, s in enumerate(c.seq("seeds", d.get("seeds", [0]),
                                                                         allow_scalar=True))]
    if len(set(seeds)) != len(seeds):
        raise c.fail("seeds", d.get("seeds"), "a seed appears twice")

    system_prompt = d.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise c.fail("system_prompt", system_prompt, "must be a string ('' for no system prompt)")

    verifiers_reg = load_verifiers()
    verifiers = _parse_verifiers(c, d.get("verifiers"), verifiers_reg)
    concurrency = c.integer("concurrency", d.get("concurrency", 16), minimum=1) or 16
    cache = Path(c.string("cache", d["cache"]) or "") if d.get("cache") is not None else None
    order = d.get("order", "datasets")
    if order not in ORDERS:
        raise c.fail("order", order, f"must be one of: {', '.join(ORDERS)}")
    if "runs" not in d:
        raise c.fail("runs", None, "missing field: a list of {strategy, params, grid, budgets, subsample}")
    configs = _parse_runs(c, d["runs"], verifiers_reg)

    return Recipe(
        name=name, out=out, engines=tuple(engines), datasets=tuple(datasets), seeds=tuple(seeds),  # type: ignore[arg-type]
        configs=tuple(configs), system_prompt=system_prompt, verifiers=verifiers, concurrency=concurrency,
        cache=cache, order=order, source=source,
    )


def _parse_engines(c: _Checker, raw: Any) -> list[EngineSpec]:
    from ttscale.engines import load_engines

    engines_reg = load_engines()
    engines = []
    for w, e in c.entries("engines", raw, ENGINE_KEYS, "engine", f"an engine name: {', '.join(engines_reg.names())}"):
        ename = c.string(f"{w}.engine", e["engine"]) or ""
        c.convert(f"{w}.engine", ename, lambda n=ename: engines_reg.get(n))
        model = e.get("model")
        if model is not None and not isinstance(model, str | int | float):
            raise c.fail(f"{w}.model", model, "must be a string")
        eparams = c.free_mapping(f"{w}.params", e.get("params"))
        c.convert(f"{w}.params", eparams, lambda n=ename, p=eparams: engines_reg.get(n).make_params(p))
        engines.append(EngineSpec(ename, None if model is None else str(model), eparams))
    c.unique_labels("engines", [x.label for x in engines], "the same engine and model appear twice")
    return engines


def _parse_datasets(c: _Checker, raw: Any) -> list[DatasetSpec]:
    datasets = []
    for w, ds in c.entries("datasets", raw, DATASET_KEYS, "dataset", "a file, default, gsm8k, hf:NAME, rg:TASK, ..."):
        datasets.append(DatasetSpec(
            dataset=c.string(f"{w}.dataset", str(ds["dataset"])) or "",
            name=c.string(f"{w}.name", ds.get("name"), optional=True),
            limit=c.integer(f"{w}.limit", ds.get("limit"), minimum=1, optional=True),
            split=c.string(f"{w}.split", ds.get("split"), optional=True),
            seed=c.integer(f"{w}.seed", ds.get("seed", 0)) or 0,
            question_field=c.string(f"{w}.question_field", ds.get("question_field"), optional=True),
            answer_field=c.string(f"{w}.answer_field", ds.get("answer_field"), optional=True),
        ))
    c.unique_labels("datasets", [x.label for x in datasets],
                    "two datasets share this label; give one a distinct `name`")
    return datasets


def _parse_verifiers(c: _Checker, raw: Any, verifiers_reg: Any) -> dict[str, dict[str, Any]]:
    verifiers: dict[str, dict[str, Any]] = {}
    vraw = raw or {}
    if isinstance(vraw, list | tuple):  # a plain list of names
        vraw = {v: {} for v in vraw}
    vraw = c.free_mapping("verifiers", vraw)
    for vname, vparams in vraw.items():
        w = f"verifiers.{vname}"
        c.convert(w, vname, lambda n=vname: verifiers_reg.get(n))
        vp = c.free_mapping(w, vparams)
        c.convert(w, vp, lambda n=vname, p=vp: verifiers_reg.get(n).make_params(p))
        verifiers[str(vname)] = vp
    return verifiers


def _parse_runs(c: _Checker, raw: Any, verifiers_reg: Any) -> list[RunConfig]:
    from ttscale.strategies.base import load_strategies

    strategies = load_strategies()
    configs: list[RunConfig] = []
    for i, r in enumerate(c.seq("runs", raw)):
        configs.extend(_parse_run(c, f"runs[{i}]", r, i, strategies, verifiers_reg))
    seen: dict[str, str] = {}
    for cfg in configs:
        key = json.dumps([cfg.strategy, cfg.params, cfg.budget.to_dict()], sort_keys=True)
        if key in seen:
            raise c.fail("runs", cfg.label, f"this configuration appears twice ({seen[key]} and "
                         f"runs[{cfg.run_index}])")
        seen[key] = f"runs[{cfg.run_index}]"
    return configs


def _parse_run(c: _Checker, w: str, r: Any, index: int, strategies: Any, verifiers_reg: Any) -> list[RunConfig]:
    r = c.mapping(w, r, RUN_KEYS)
    if "strategy" not in r:
        raise c.fail(f"{w}.strategy", None, f"missing field (one of: {', '.join(strategies.names())})")
    sname = c.string(f"{w}.strategy", r["strategy"]) or ""
    entry = c.convert(f"{w}.strategy", sname, lambda: strategies.get(sname))
    known = [f.name for f in entry.fields()]
    base = c.mapping(f"{w}.params", r.get("params") or {}, known)
    grid_raw = c.mapping(f"{w}.grid", r.get("grid") or {}, known)
    grid: dict[str, list[Any]] = {}
    for k, vals in grid_raw.items():
        if k in base:
            raise c.fail(f"{w}.grid.{k}", vals, f"also set in {w}.params; set it in one place")
        grid[k] = c.seq(f"{w}.grid.{k}", vals)

    budgets: list[Budget] = []
    for j, b in enumerate(c.seq(f"{w}.budgets", r.get("budgets", [{}]))):
        bw = f"{w}.budgets[{j}]"
        b = c.mapping(bw, b or {}, BUDGET_KEYS)
        vals = {k: c.integer(f"{bw}.{k}", b.get(k), minimum=1, optional=True) for k in BUDGET_KEYS}
        budgets.append(Budget(**vals))  # type: ignore[arg-type]

    combos: list[dict[str, Any]] = []
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = {**base, **dict(zip(keys, values, strict=True))}
        where = f"{w}.params" if not keys else f"{w}.grid ({', '.join(f'{k}={v!r}' for k, v in zip(keys, values, strict=True))})"
        checked = c.convert(where, params, lambda p=params: entry.make_params(p))
        full = jsonable(dataclasses.asdict(checked))
        v = full.get("verifier")
        if isinstance(v, str) and v and v not in verifiers_reg:
            raise c.fail(f"{w}.params.verifier", v, f"unknown verifier; available: {', '.join(verifiers_reg.names())}")
        combos.append(full)

    sub = None if r.get("subsample") is None else _parse_subsample(c, w, r["subsample"], sname, combos)
    return [RunConfig(sname, combo, b, sub, index) for combo in combos for b in budgets]


def _parse_subsample(c: _Checker, w: str, raw: Any, sname: str, combos: Sequence[Mapping[str, Any]]) -> Subsample:
    """The ``subsample`` entry of run ``w`` (strategy ``sname``, parameter combinations ``combos``)."""
    sw = f"{w}.subsample"
    s = c.mapping(sw, raw, SUBSAMPLE_KEYS)
    rules_ok = SUBSAMPLE_SOURCES.get(sname)
    if rules_ok is None:
        raise c.fail(f"{w}.strategy", sname, "cannot be subsampled: its candidates are not i.i.d. samples; "
                     f"subsampling works for {', '.join(SUBSAMPLE_SOURCES)}")
    if "n" not in s:
        raise c.fail(f"{sw}.n", None, "missing field: the sample counts k to derive, e.g. [1, 2, 4, 8]")
    ks = [c.integer(f"{sw}.n[{j}]", k, minimum=1) for j, k in enumerate(c.seq(f"{sw}.n", s["n"],
                                                                                 allow_scalar=True))]
    if len(set(ks)) != len(ks):
        raise c.fail(f"{sw}.n", s["n"], "a sample count appears twice")
    for combo in combos:
        n = combo.get("n")
        bad = [k for k in ks if n is not None and k > n]  # type: ignore[operator]
        if bad:
            raise c.fail(f"{sw}.n", s["n"], f"k={bad[0]} is larger than the run's n={n}; "
                         "a subsample can only use samples the run drew")
    rules = c.seq(f"{sw}.select", s.get("select", list(rules_ok)), allow_scalar=True)
    for j, rule in enumerate(rules):
        if rule not in SELECT_RULES:
            raise c.fail(f"{sw}.select[{j}]", rule, f"unknown selection rule; known: {', '.join(SELECT_RULES)}")
        if rule not in rules_ok:
            raise c.fail(f"{sw}.select[{j}]", rule, f"needs verifier scores, which {sname} does not "
                         f"produce; {sname} supports: {', '.join(rules_ok)}")
    if len(set(rules)) != len(rules):
        raise c.fail(f"{sw}.select", rules, "a rule appears twice")
    return Subsample(tuple(ks), tuple(rules))  # type: ignore[arg-type]
