"""Scoring of the side-by-side bench (``bench/peers.py``): per-method points, the Pareto check
against the peers, the RESULT line, the markdown table and the figure. Pure functions of the
per-problem rows, so that they can be tested without a model or a peer installed.

A *row* is one problem of one method: ``{"id", "correct": bool|None, "prompt_tokens",
"completion_tokens", "error": str|None, "wall_s"}``. A *point* is one method at one budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Point:
    """One method at one budget, summarised over the problems."""

    label: str
    family: str  # "ttscale", "its_hub" or "optillm"
    budget: int
    problems: int
    correct: int
    errors: int
    tokens: float  # endpoint tokens (prompt + completion) per problem
    wall_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems if self.problems else 0.0

    @property
    def failed(self) -> bool:
        """Every problem ended in an error: the method did not run here (no accuracy to compare)."""
        return self.problems > 0 and self.errors == self.problems

    @property
    def is_ttscale(self) -> bool:
        return self.family == "ttscale"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k/n`` ((0, 1) when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def summarise(label: str, family: str, budget: int, rows: Sequence[Mapping[str, Any]], wall_s: float,
              notes: Iterable[str] = ()) -> Point:
    """The point of one method: errors count as wrong answers; tokens are averaged over all rows."""
    n = len(rows)
    correct = sum(1 for r in rows if r.get("correct") is True)
    errors = sum(1 for r in rows if r.get("error"))
    toks = sum(int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0) for r in rows)
    return Point(label, family, budget, n, correct, errors, toks / n if n else 0.0, wall_s, tuple(notes))


def dominates(t: Point, p: Point) -> bool:
    """``t`` reaches at least ``p``'s accuracy with at most its tokens."""
    return t.accuracy >= p.accuracy and t.tokens <= p.tokens


@dataclass(frozen=True)
class Verdict:
    wins: int
    compared: int
    best_ttscale_acc: float | None
    best_peer_acc: float | None
    tokens_ratio: float | None  # ttscale tokens / peer tokens at the best peer accuracy; None: not reached
    lost_to: tuple[str, ...]  # peer points no ttscale point dominates

    def result_line(self) -> str:
        def f(x: float | None) -> str:
            return "none" if x is None else f"{x:.3f}"

        return (f"RESULT frontier_wins={self.wins}/{self.compared} best_ttscale_acc={f(self.best_ttscale_acc)} "
                f"best_peer_acc={f(self.best_peer_acc)} tokens_ratio_at_best_peer_acc={f(self.tokens_ratio)}")


def verdict(points: Sequence[Point]) -> Verdict:
    """Frontier check at every peer point that ran (a point whose every problem failed is reported
    in the table but has no accuracy to compare), and the token ratio at the best peer accuracy:
    the cheapest ttscale point reaching it over the cheapest peer point that has it."""
    ours = [p for p in points if p.is_ttscale and not p.failed]
    peers = [p for p in points if not p.is_ttscale and not p.failed]
    lost = tuple(p.label for p in peers if not any(dominates(t, p) for t in ours))
    best_t = max((t.accuracy for t in ours), default=None)
    best_p = max((p.accuracy for p in peers), default=None)
    ratio = None
    if best_p is not None:
        peer_tokens = min(p.tokens for p in peers if p.accuracy >= best_p)
        reach = [t.tokens for t in ours if t.accuracy >= best_p]
        if reach and peer_tokens > 0:
            ratio = min(reach) / peer_tokens
    return Verdict(len(peers) - len(lost), len(peers), best_t, best_p, ratio, lost)


def markdown_table(points: Sequence[Point]) -> str:
    """Method | budget | accuracy [95% CI] | tokens/problem | wall time | errors | notes."""
    lines = ["| method | budget | accuracy [95% CI] | endpoint tokens / problem | wall time (s) | errors | notes |",
             "|---|---:|---|---:|---:|---:|---|"]
    for p in points:
        lo, hi = wilson(p.correct, p.problems)
        acc = "failed" if p.failed else f"{p.accuracy:.3f} [{lo:.2f}, {hi:.2f}] ({p.correct}/{p.problems})"
        lines.append(f"| {p.label} | {p.budget} | {acc} | {p.tokens:,.0f} | {p.wall_s:,.0f} | "
                     f"{p.errors}/{p.problems} | {'; '.join(p.notes)} |")
    return "\n".join(lines)


def plot(points: Sequence[Point], path: str, title: str) -> list[tuple[float, float, float, float]]:
    """Accuracy vs endpoint tokens per problem, one marker per method and budget with its 95% Wilson
    interval, and the ttscale Pareto staircase. Labels are moved apart with adjustText; returns each
    label's final box (x0, y0, x1, y1 in pixels), in the order of the points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    style = {"ttscale": ("o", "tab:blue"), "its_hub": ("s", "tab:orange"), "optillm": ("^", "tab:green")}
    shown = [p for p in points if not p.failed and p.tokens > 0]
    ci = {id(p): wilson(p.correct, p.problems) for p in shown}
    fig, ax = plt.subplots(figsize=(10, 6.5))
    texts = []
    for fam, (marker, color) in style.items():
        pts = [p for p in shown if p.family == fam]
        if not pts:
            continue
        xs, ys = [p.tokens for p in pts], [p.accuracy for p in pts]
        ax.errorbar(xs, ys, yerr=[[p.accuracy - ci[id(p)][0] for p in pts], [ci[id(p)][1] - p.accuracy for p in pts]],
                    fmt="none", ecolor=color, alpha=0.25, capsize=2, lw=1)
        ax.scatter(xs, ys, marker=marker, color=color, label=fam, s=50, zorder=3)
        texts += [ax.text(p.tokens, p.accuracy, p.label.split(":", 1)[-1], fontsize=7, color=color, zorder=2.5,
                         bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
                  for p in pts]
    front = pareto([p for p in shown if p.is_ttscale])
    if front:
        xs, ys = [front[0].tokens], [front[0].accuracy]
        for a, b in itertools.pairwise(front):
            xs += [b.tokens, b.tokens]
            ys += [a.accuracy, b.accuracy]
        xs.append(max(p.tokens for p in shown) * 1.05)  # run on past the right-most point
        ys.append(front[-1].accuracy)
        ax.plot(xs, ys, color="tab:blue", alpha=0.4, linestyle="--", label="ttscale frontier")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if shown:  # fit the data (with its intervals), not the whole [0, 1]
        ax.set_ylim(max(0.0, min(lo for lo, _ in ci.values()) - 0.03), min(1.0, max(hi for _, hi in ci.values()) + 0.03))
        ax.set_xlim(min(p.tokens for p in shown) / 1.3, max(p.tokens for p in shown) * 1.5)
    ax.set_xlabel("endpoint tokens per problem (prompt + generated, log scale)")
    ax.set_ylabel("accuracy (bars: 95% Wilson interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    if texts:
        adjust_text(texts, ax=ax, x=[p.tokens for p in shown], y=[p.accuracy for p in shown],
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})
    fig.savefig(path, dpi=120)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    extents = [t.get_window_extent(renderer) for t in texts]
    plt.close(fig)
    return [(b.x0, b.y0, b.x1, b.y1) for b in extents]


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both axes (fewer tokens and higher accuracy), by tokens."""
    out: list[Point] = []
    for p in sorted(points, key=lambda q: (q.tokens, -q.accuracy)):
        if not out or p.accuracy > out[-1].accuracy:
            out.append(p)
    return out
