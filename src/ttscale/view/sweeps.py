"""A sweep's page data: the scaling curves per difficulty bin (the same series as
:func:`ttscale.lab.plots.render`, as points the page draws in SVG), the policy table and the
per-configuration summary, each point linked to the run that produced it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ttscale.core.errors import ConfigError
from ttscale.lab.metrics import summarize_table
from ttscale.lab.policy import config_stats, curve_on, fit_policy
from ttscale.view.data import Sweep


def _policy(sweep: Sweep) -> tuple[dict[str, Any] | None, str]:
    if sweep.policy is not None:
        return sweep.policy, "from the policy file given"
    try:
        return (fit_policy(sweep.rows, require_predicted=False, source=sweep.source),
                "fitted here (oracle difficulty, quantile bins; pass a policy JSON to show another)")
    except ConfigError as e:
        return None, f"not fitted: {e}"


def _point(p: Mapping[str, Any], links: Mapping[str, str]) -> dict[str, Any]:
    return {"budget": p["budget"], "config": p.get("config"), "x": p["mean_generated_tokens"],
            "y": p["accuracy"], "lo": p["acc_low"], "hi": p["acc_high"], "problems": p["problems"],
            "generations": p.get("mean_generations"), "run": links.get(str(p.get("config")))}


def sweep_view(sweep: Sweep) -> dict[str, Any]:
    """Panels (all problems, then one per difficulty bin), policy table, config summary."""
    policy, how = _policy(sweep)
    rows = sweep.rows
    links = sweep.run_for_config
    summary = [{**s, "run": links.get(str(s["config"]))} for s in summarize_table(rows)]
    out: dict[str, Any] = {"id": sweep.id, "label": sweep.label, "source": sweep.source, "policy_note": how,
                           "summary": summary, "panels": [], "policy": None}
    if policy is None:
        return out
    stats = config_stats(rows)
    fixed = {k: v for k, v in (policy.get("fixed_curves") or {}).items() if all(c["config"] in stats for c in v)}
    pbins = {(str(d), str(p)): int(b) for d, p, b in policy.get("problem_bins") or []}
    problems = sorted({(str(r["dataset"]), str(r["problem_id"])) for r in rows})
    labels = list(policy["binning"]["labels"])
    panels = [("all problems", problems, policy.get("cv_curve") or [])]
    for b, lab in enumerate(labels):
        members = [p for p in problems if pbins.get(p) == b]
        panels.append((f"bin {b}: {lab} ({len(members)} problems)", members,
                       (policy.get("cv_by_bin") or {}).get(str(b), [])))
    for title, members, frontier in panels:
        series = [{"name": n, "points": [_point(p, links) for p in curve_on(stats, fixed[n], members)]}
                  for n in sorted(fixed)]
        out["panels"].append({"title": title, "problems": len(members), "series": series,
                              "frontier": [{"budget": c["budget"], "x": c["mean_generated_tokens"], "y": c["accuracy"],
                                            "lo": c["acc_low"], "hi": c["acc_high"]} for c in frontier]})
    by = {(e["bin"], e["budget"]): e for e in policy["table"]}
    out["policy"] = {
        "fit": policy.get("fit", {}), "binning": policy["binning"], "budgets": policy["budgets"],
        "table": [{"bin": i, "label": lab,
                   "cells": [{"budget": B, "config": by[(i, B)].get("config"), "fallback": bool(by[(i, B)].get("fallback")),
                              "run": links.get(str(by[(i, B)].get("config")))} for B in policy["budgets"]]}
                  for i, lab in enumerate(labels)],
        "cv_curve": policy.get("cv_curve") or [], "bon_match": policy.get("bon_match") or [],
    }
    return out


def sweep_png(sweep: Sweep) -> bytes:
    """The matplotlib figure of ``ttscale plot`` for this sweep."""
    from ttscale.lab.plots import png_bytes

    policy, _ = _policy(sweep)
    return png_bytes(sweep.rows, policy)
