"""Accuracy vs compute plots from a tidy sweep table (matplotlib, Agg backend).

One panel for all problems plus one per difficulty bin (bin 0 = easiest). In each panel, one line
per strategy over its budgets (the configurations of the fixed-strategy curves, see
:func:`ttscale.lab.policy.fixed_curves`), y = accuracy, with the Beta-posterior 95% interval as a
band; the compute-optimal frontier (the policy's cross-validated curve, per bin in the bin panels)
is the thick black line. x is either the mean generated tokens per problem (``x="tokens"``, log
scale) or, as in Snell et al.'s figures, the generation budget N (``x="budget"``, log2 scale: a
configuration at its nominal ``budget_n``, the frontier at the policy's budget cap B).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ttscale.core.errors import ConfigError
from ttscale.lab.policy import config_stats, curve_on, fit_policy

XAxis = Literal["tokens", "budget"]
X_LABELS = {"tokens": "mean generated tokens per problem (log)", "budget": "generation budget N (log2)"}


def _xs(points: Sequence[Mapping[str, Any]], x: XAxis) -> list[Mapping[str, Any]]:
    """The points that can be drawn on a log axis, each with its ``_x``."""
    key = "mean_generated_tokens" if x == "tokens" else "budget"
    return [{**c, "_x": float(c[key])} for c in points if float(c[key]) > 0]


def _problem_bins(policy: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    return {(str(d), str(p)): int(b) for d, p, b in policy.get("problem_bins") or []}


def _panel(ax: Any, series: Mapping[str, Sequence[Mapping[str, Any]]], frontier: Sequence[Mapping[str, Any]],
           colors: Mapping[str, Any], title: str, x: XAxis = "tokens") -> None:
    ticks: set[float] = set()
    for name, curve in series.items():
        pts = _xs(curve, x)
        if not pts:
            continue
        xs = [c["_x"] for c in pts]
        ticks.update(xs)
        ax.plot(xs, [c["accuracy"] for c in pts], "o-", color=colors[name], lw=1.6, ms=4, label=name)
        ax.fill_between(xs, [c["acc_low"] for c in pts], [c["acc_high"] for c in pts], color=colors[name],
                        alpha=0.13, lw=0)
    fr = _xs(frontier, x)
    if fr:
        ax.plot([c["_x"] for c in fr], [c["accuracy"] for c in fr], "-", color="black",
                lw=3.2, alpha=0.85, label="compute-optimal (CV)", zorder=5)
        at: dict[tuple[float, float], list[str]] = {}
        for c in fr:  # one label per point, budgets that land on the same point joined
            at.setdefault((round(c["_x"], 6), round(c["accuracy"], 6)), []).append(str(c["budget"]))
        for (px, py), budgets in at.items():
            ax.annotate("N=" + ",".join(budgets), (px, py), fontsize=7, textcoords="offset points",
                        xytext=(3, -10), color="black")
    if x == "budget":
        ax.set_xscale("log", base=2)
        if ticks:
            ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
    else:
        ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.tick_params(labelsize=8)


def render(rows: Sequence[Mapping[str, Any]], policy: Mapping[str, Any] | None = None, *,
           title: str | None = None, x: XAxis = "tokens") -> Any:
    """The figure (a matplotlib Figure). Without ``policy`` one is fitted on the rows (oracle
    difficulty, quantile bins, no predicted edges required). ``x``: the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_LABELS:
        raise ConfigError(f"x axis {x!r} is not one of {', '.join(X_LABELS)}")
    if not rows:
        raise ConfigError("nothing to plot: the table has no rows")
    if policy is None:
        policy = fit_policy(rows, require_predicted=False)
        fitted_here = True
    else:
        fitted_here = False
        model = policy.get("fit", {}).get("model")
        if model is not None:
            rows = [r for r in rows if str(r["model"]) == str(model)]
            if not rows:
                raise ConfigError(f"the table has no rows for the policy's model {model!r}")
    stats = config_stats(rows)
    pbins = _problem_bins(policy)
    labels = list(policy["binning"]["labels"])
    all_problems = sorted({(str(r["dataset"]), str(r["problem_id"])) for r in rows})
    fixed = policy.get("fixed_curves") or {}
    fixed = {k: v for k, v in fixed.items() if all(c["config"] in stats for c in v)}
    names = sorted(fixed)
    cmap = plt.get_cmap("tab10")
    colors = {n: cmap(i % 10) for i, n in enumerate(names)}

    panels = [("all problems", all_problems, policy.get("cv_curve") or [])]
    for b, lab in enumerate(labels):
        members = [p for p in all_problems if pbins.get(p) == b]
        panels.append((f"bin {b}: {lab} ({len(members)} problems)", members,
                       (policy.get("cv_by_bin") or {}).get(str(b), [])))
    ncols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.9 * nrows + 0.9), squeeze=False)
    for ax, (ptitle, members, frontier) in zip(axes.flat, panels, strict=False):
        series = {n: curve_on(stats, fixed[n], members) for n in names}
        _panel(ax, series, frontier, colors, ptitle, x)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=9)
    for ax in axes[-1, :]:
        ax.set_xlabel(X_LABELS[x], fontsize=9)
    handles, hlabels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in hlabels:
                handles.append(h)
                hlabels.append(lab)
    fit = policy.get("fit", {})
    sub = (f"difficulty: {fit.get('difficulty', '?')} ({policy['binning']['method']} bins, bin 0 = easiest); "
           f"bands: 95% Beta interval; frontier: {fit.get('folds', 2)}-fold CV of the policy"
           + (" fitted here" if fitted_here else ""))
    fig.suptitle(title or f"accuracy vs test-time compute — {fit.get('model', '')}", fontsize=12)
    fig.text(0.5, 0.935 if nrows > 1 else 0.9, sub, ha="center", fontsize=8, color="dimgray")
    fig.legend(handles, hlabels, loc="lower center", ncol=min(len(hlabels), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrows > 1 else 0.1, 1, 0.92 if nrows > 1 else 0.88))
    return fig


def plot_table(rows: Sequence[Mapping[str, Any]], out: str | Path, policy: Mapping[str, Any] | None = None,
               *, title: str | None = None, dpi: int = 120, x: XAxis = "tokens") -> Path:
    """Draw :func:`render` into a PNG at ``out``."""
    import matplotlib.pyplot as plt

    fig = render(rows, policy, title=title, x=x)
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return p


def png_bytes(rows: Sequence[Mapping[str, Any]], policy: Mapping[str, Any] | None = None, *,
              title: str | None = None, dpi: int = 110, x: XAxis = "tokens") -> bytes:
    """The same figure as PNG bytes (for inlining in HTML)."""
    import matplotlib.pyplot as plt

    fig = render(rows, policy, title=title, x=x)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
