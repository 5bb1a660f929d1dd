"""A fitted compute-optimal policy as the strategies read it: difficulty bins and, per bin and
budget, the configuration to run (Snell et al. 2024).

The lab fits and writes policy files (:mod:`ttscale.lab.policy`, ``ttscale fit-policy``); the
``compute_optimal`` strategy reads them through this module, so strategies never import the lab.

A :class:`Binning` cuts a difficulty value ("ease" in [0, 1], higher = easier) into bins, bin 0
the easiest: ``quantile`` bins put ``v`` in bin ``#{edges e : v < e}``; ``absolute`` bins are
easy (v > edges[0]), medium, hard (v < edges[1]).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ttscale.core.errors import ConfigError

BinMethod = Literal["quantile", "absolute"]
POLICY_KIND = "ttscale-policy"


@dataclass(frozen=True)
class Binning:
    """Bins on a difficulty value (see the module docstring for the rules)."""

    method: BinMethod
    edges: tuple[float, ...]
    labels: tuple[str, ...]

    @property
    def n_bins(self) -> int:
        return len(self.labels)

    def bin_of(self, value: float) -> int:
        """The bin of a new value (0 = easiest)."""
        if self.method == "absolute":
            hi, lo = self.edges
            return 0 if value > hi else (1 if value >= lo else 2)
        return sum(value < e for e in self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "edges": list(self.edges), "labels": list(self.labels),
                "rule": ("absolute: bin 0 if v > edges[0], bin 2 if v < edges[1], else bin 1"
                         if self.method == "absolute"
                         else "quantile: bin = number of edges e with v < e (bin 0 = easiest)")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "binning") -> Binning:
        try:
            method = d["method"]
            edges = tuple(float(e) for e in d["edges"])
            labels = tuple(str(x) for x in d["labels"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: needs method, edges and labels ({e})") from e
        if method not in ("quantile", "absolute"):
            raise ConfigError(f"{where}: field method={method!r} is not quantile or absolute")
        if len(labels) != len(edges) + 1:
            raise ConfigError(f"{where}: {len(edges)} edges need {len(edges) + 1} labels, got {len(labels)}")
        if list(edges) != sorted(edges, reverse=True):
            raise ConfigError(f"{where}: field edges={list(edges)} must be non-increasing")
        if method == "absolute" and len(edges) != 2:
            raise ConfigError(f"{where}: absolute binning needs 2 edges, got {list(edges)}")
        return cls(method, edges, labels)


def load_policy(path: str | Path) -> dict[str, Any]:
    """A policy file written by :func:`save_policy`, checked (ConfigError naming file and field)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"policy file {p} does not exist (write one with `ttscale fit-policy`)") from e
    except OSError as e:
        raise ConfigError(f"cannot read policy file {p}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"policy file {p} is not valid JSON: {e.msg}") from e
    if not isinstance(data, dict) or data.get("kind") != POLICY_KIND:
        raise ConfigError(f"policy file {p}: field kind={data.get('kind') if isinstance(data, dict) else None!r} "
                          f"is not {POLICY_KIND!r} (not a `ttscale fit-policy` output)")
    for fld in ("binning", "budgets", "table", "overall"):
        if fld not in data:
            raise ConfigError(f"policy file {p}: missing field {fld}")
    Binning.from_dict(data["binning"], f"policy file {p}: field binning")
    if data.get("predicted_binning") is not None:
        Binning.from_dict(data["predicted_binning"], f"policy file {p}: field predicted_binning")
    return data


def is_policy_file(path: str | Path) -> bool:
    p = Path(path)
    if p.suffix != ".json" or not p.is_file():
        return False
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("kind") == POLICY_KIND


def lookup(policy: Mapping[str, Any], difficulty_bin: int | None, budget: int,
           where: str = "policy") -> dict[str, Any]:
    """The entry for a bin (None = unknown difficulty → the overall choice) at the largest policy
    budget <= ``budget``."""
    usable = [B for B in policy["budgets"] if B <= budget]
    if not usable:
        raise ConfigError(f"{where}: budget={budget} is below the policy's smallest budget "
                          f"{min(policy['budgets'])}; budgets: {policy['budgets']}")
    B = max(usable)
    if difficulty_bin is None:
        entry = next(e for e in policy["overall"] if e["budget"] == B)
    else:
        entry = next((e for e in policy["table"] if e["bin"] == difficulty_bin and e["budget"] == B), None)
        if entry is None:
            raise ConfigError(f"{where}: no entry for bin {difficulty_bin} at budget {B}")
    if not entry.get("strategy"):
        raise ConfigError(f"{where}: no configuration was fitted for bin {difficulty_bin} at budget {B}")
    return {**entry, "budget": B}
