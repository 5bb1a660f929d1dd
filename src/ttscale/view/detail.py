"""One problem, ready to draw: candidates, the vote tally, the search tree and the stopping trace.

The tree
--------
Tree strategies record every node in ``extra["tree"]`` (``{id, parent, depth, step, step_score,
score, end, role?}``, see :mod:`ttscale.strategies.tree`). A node's ``status``:

- beam search / lookahead (``extra["rounds"]`` with ``generated``/``kept``/``finished``): ``kept``
  (a beam carried to the next round), ``finished`` (its path ended) or ``pruned`` (generated but
  dropped); lookahead rollout nodes are ``rollout``;
- particle filtering (rounds with ``resampled``): ``kept`` when some resampling drew it, else
  ``pruned`` (``finished`` when its path ended and it was drawn);
- DVTS (``extra["subtrees"]``, each subtree's chosen path): on a path = ``kept``, else ``pruned``;
- anything else (MCTS, AB-MCTS, a tree rebuilt from candidates' parent links): ``finished`` when the
  path ended, ``expanded`` when it has children, ``open`` otherwise.

The per-round table counts nodes by status; rounds are the recorded rounds where there are some,
else depths. Without ``extra["tree"]`` the tree is rebuilt from the candidates' ``parent`` links
(only the final candidates are known then, so intermediate nodes appear as ``missing``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

TRACE_STRATEGIES = ("adaptive_consistency", "adaptive_margin", "deepconf", "best_of_infinity", "deepprune")
CUT_REASONS = ("cancelled", "budget", "error")


def _key(answer: Any) -> str | None:
    return None if answer is None else str(answer)


def _cand_status(c: Mapping[str, Any], tree_status: Mapping[int, str]) -> str:
    ex = c.get("extra") or {}
    if c.get("finish_reason") == "cancelled" or ex.get("stopped_early"):
        return "cancelled"
    if ex.get("rejected") or ex.get("pruned"):
        return "pruned"
    return tree_status.get(int(c.get("id", -1)), "")


def candidates_view(rec: Mapping[str, Any], tree_status: Mapping[int, str]) -> list[dict[str, Any]]:
    chosen = rec.get("chosen")
    out = []
    for c in rec.get("candidates") or []:
        ex = dict(c.get("extra") or {})
        out.append({
            "id": c.get("id"), "parent": c.get("parent"), "answer": c.get("answer"), "score": c.get("score"),
            "step_scores": c.get("step_scores"), "tokens": c.get("completion_tokens"),
            "finish_reason": c.get("finish_reason"), "correct": c.get("correct"), "chosen": c.get("id") == chosen,
            "status": _cand_status(c, tree_status), "text": c.get("text"), "steps": c.get("steps") or [],
            "extra": ex,
        })
    return out


def vote_table(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Answer classes (by answer string): members, count, summed score, the strategy's own recorded
    weight (``extra.votes``/``extra.weights``), correctness, and which one was chosen."""
    extra = rec.get("extra") or {}
    recorded = extra.get("votes") if isinstance(extra.get("votes"), Mapping) else extra.get("weights")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    classes: dict[str | None, dict[str, Any]] = {}
    for c in rec.get("candidates") or []:
        k = _key(c.get("answer"))
        cl = classes.setdefault(k, {"answer": k, "count": 0, "score_sum": None, "members": [], "correct": None})
        cl["count"] += 1
        cl["members"].append(c.get("id"))
        if c.get("score") is not None:
            cl["score_sum"] = round((cl["score_sum"] or 0.0) + float(c["score"]), 6)
        if c.get("correct") is not None:
            cl["correct"] = bool(c["correct"]) or bool(cl["correct"])
    chosen = _key(rec.get("answer"))
    for k, cl in classes.items():
        w = recorded.get(k) if k is not None else None
        cl["weight"] = float(w) if isinstance(w, int | float) else None
        cl["chosen"] = k is not None and k == chosen
    return sorted(classes.values(), key=lambda c: (c["answer"] is None, -(c["weight"] or 0.0), -c["count"]))


def _node_rows(rec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    extra = rec.get("extra") or {}
    if isinstance(extra.get("tree"), list) and extra["tree"]:
        return [dict(n) for n in extra["tree"]], "extra.tree"
    cands = rec.get("candidates") or []
    if not any(c.get("parent") is not None for c in cands):
        return None
    ids = {c.get("id") for c in cands}
    rows = []
    for c in cands:
        steps = c.get("steps") or []
        ss = c.get("step_scores") or []
        rows.append({"id": c.get("id"), "parent": c.get("parent"), "depth": len(steps) or None,
                     "step": steps[-1] if steps else c.get("text", ""), "step_score": ss[-1] if ss else None,
                     "score": c.get("score"), "end": (c.get("extra") or {}).get("end") or c.get("finish_reason")})
    for pid in sorted({c.get("parent") for c in cands if c.get("parent") is not None} - ids):
        rows.append({"id": pid, "parent": None, "depth": None, "step": "", "step_score": None, "score": None,
                     "end": None, "missing": True})
    return rows, "candidates"


def _statuses(nodes: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, int]]:
    """node id -> status, and node id -> round (module docstring)."""
    status: dict[int, str] = {}
    rnd: dict[int, int] = {}
    rounds = extra.get("rounds") if isinstance(extra.get("rounds"), list) else []
    if rounds and all("generated" in r and "kept" in r for r in rounds):
        for r in rounds:
            kept, fin = set(r.get("kept") or []), set(r.get("finished") or [])
            for i in r["generated"]:
                rnd[i] = int(r["round"])
                status[i] = "kept" if i in kept else "finished" if i in fin else "pruned"
    elif rounds and all("resampled" in r for r in rounds):
        drawn = {i for r in rounds for i in r["resampled"]}
        for n in nodes:
            i = n["id"]
            status[i] = ("finished" if n.get("end") else "kept") if i in drawn else "pruned"
    elif isinstance(extra.get("subtrees"), list):
        on = {i for path in extra["subtrees"] for i in path}
        for n in nodes:
            status[n["id"]] = ("finished" if n.get("end") else "kept") if n["id"] in on else "pruned"
    parents = {n.get("parent") for n in nodes}
    for n in nodes:
        i = n["id"]
        if n.get("role") == "lookahead":
            status[i] = "rollout"
        elif n.get("missing"):
            status[i] = "missing"
        elif i not in status:
            status[i] = "finished" if n.get("end") else "expanded" if i in parents else "open"
        rnd.setdefault(i, int(n.get("depth") or 0))
    return status, rnd


def round_counts(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per round: nodes generated and how many were kept, finished, pruned (and other statuses)."""
    by: dict[int, Counter[str]] = {}
    for n in nodes:
        if n["status"] in ("rollout", "missing"):
            continue
        by.setdefault(int(n["round"]), Counter())[n["status"]] += 1
    out = []
    for r in sorted(by):
        c = by[r]
        out.append({"round": r, "generated": sum(c.values()), "kept": c["kept"], "finished": c["finished"],
                    "pruned": c["pruned"], "other": sum(v for k, v in c.items() if k not in ("kept", "finished", "pruned"))})
    return out


def tree_view(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The search tree of a result (module docstring), or None when it has none."""
    got = _node_rows(rec)
    if got is None:
        return None
    nodes, source = got
    extra = rec.get("extra") or {}
    status, rnd = _statuses(nodes, extra)
    cands = {c.get("id"): c for c in rec.get("candidates") or []}
    by_id = {n["id"]: n for n in nodes}
    path: set[int] = set()
    cur = rec.get("chosen")
    while cur is not None and cur not in path:
        path.add(cur)
        cur = by_id.get(cur, cands.get(cur, {})).get("parent")
    visits = extra.get("visits") if isinstance(extra.get("visits"), Mapping) else {}
    for n in nodes:
        i = n["id"]
        n["status"], n["round"] = status[i], rnd[i]
        n["on_chosen_path"] = i in path
        n["candidate"] = i in cands
        if i in cands:
            n["answer"] = cands[i].get("answer")
            n["correct"] = cands[i].get("correct")
            n["text"] = cands[i].get("text")
        if str(i) in visits:
            n["visits"], n["value"] = visits[str(i)]
    scores = [float(n["score"]) for n in nodes if n.get("score") is not None]
    return {"source": source, "nodes": nodes, "rounds": round_counts(nodes),
            "recorded_rounds": len(extra.get("rounds") or []) or None,
            "score_range": [min(scores), max(scores)] if scores else None,
            "note": None if source == "extra.tree" else
            "rebuilt from the candidates' parent links: only final candidates are recorded, so inner nodes "
            "have no text or score and pruned branches are not known"}


def trace_view(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Votes (or DeepConf confidences) sample by sample, with the stop point; None for strategies
    that do not stop adaptively."""
    extra = rec.get("extra") or {}
    strategy = str(rec.get("strategy", ""))
    if strategy not in TRACE_STRATEGIES and "stop_reason" not in extra:
        return None
    cands = sorted(rec.get("candidates") or [], key=lambda c: int(c.get("id") or 0))
    counts: Counter[str] = Counter()
    points = []
    history: list[dict[str, int]] = []
    for i, c in enumerate(cands, 1):
        ex = c.get("extra") or {}
        cut = c.get("finish_reason") in CUT_REASONS or bool(ex.get("stopped_early"))
        a = _key(c.get("answer"))
        if a is not None and not cut and not ex.get("rejected"):
            counts[a] += 1
        top = counts.most_common(2)
        conf = c.get("score") if c.get("score") is not None else ex.get("lowest_window")
        points.append({"sample": i, "id": c.get("id"), "answer": a, "correct": c.get("correct"), "cut": cut,
                       "rejected": bool(ex.get("rejected")), "warmup": bool(ex.get("warmup")),
                       "confidence": conf, "lowest_window": ex.get("lowest_window"),
                       "leader": top[0][0] if top else None, "leader_votes": top[0][1] if top else 0,
                       "runner_up_votes": top[1][1] if len(top) > 1 else 0})
        history.append(dict(counts))
    leaders = [a for a, _ in counts.most_common(6)]
    params = rec.get("params") or {}
    if isinstance(params, str):
        params = json.loads(params or "{}")
    return {"kind": "confidence" if strategy == "deepconf" else "votes", "points": points,
            "series": {a: [h.get(a, 0) for h in history] for a in leaders},
            "stop_at": len(cands), "stop_reason": extra.get("stop_reason"), "threshold": extra.get("threshold"),
            "max_samples": params.get("max_samples") or params.get("n"), "stat": extra.get("stat")}


def table_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep-table row as a results-like record (candidates without texts)."""
    answers = row.get("cand_answers") or []
    scores = row.get("cand_scores") or []
    correct = row.get("cand_correct") or []
    n = max(len(answers), len(scores), len(correct))
    cands = [{"id": i, "parent": None, "answer": answers[i] if i < len(answers) else None,
              "score": scores[i] if i < len(scores) else None, "correct": correct[i] if i < len(correct) else None,
              "finish_reason": None, "completion_tokens": None, "text": None, "steps": [], "extra": {}}
             for i in range(n)]
    params = row.get("params") or "{}"
    return {"problem_id": row["problem_id"], "answer": row.get("answer"), "reference": row.get("reference"),
            "correct": row.get("correct"), "strategy": row.get("strategy"),
            "params": json.loads(params) if isinstance(params, str) else dict(params), "seed": row.get("seed"),
            "cost": {"generated_tokens": row.get("generated_tokens"), "prompt_tokens": row.get("prompt_tokens"),
                     "verifier_tokens": row.get("verifier_tokens"), "generations": row.get("generations"),
                     "wall_time_s": row.get("wall_time_s"), "flops": row.get("flops")},
            "chosen": None, "candidates": cands, "extra": {}, "dataset": row.get("dataset")}


def problem_detail(rec: Mapping[str, Any], index: int, *, from_table: bool = False) -> dict[str, Any]:
    """Everything the problem page shows (module docstring)."""
    if from_table:
        rec = table_record(rec)
    extra = rec.get("extra") or {}
    tree = tree_view(rec)
    tstatus = {n["id"]: n["status"] for n in tree["nodes"]} if tree else {}
    prompt = rec.get("prompt") or extra.get("prompt")
    small_extra = {k: v for k, v in extra.items() if k not in ("tree", "rounds", "trace", "visits", "choices")}
    return {
        "index": index, "problem_id": str(rec.get("problem_id")), "prompt": prompt,
        "answer": rec.get("answer"), "reference": rec.get("reference"), "correct": rec.get("correct"),
        "strategy": rec.get("strategy"), "params": rec.get("params") or {}, "seed": rec.get("seed"),
        "cost": rec.get("cost") or {}, "stopped_by_budget": bool(rec.get("stopped_by_budget")),
        "chosen": rec.get("chosen"), "texts_recorded": not from_table,
        "candidates": candidates_view(rec, tstatus), "votes": vote_table(rec), "tree": tree,
        "trace": trace_view(rec), "extra": small_extra, "log_events": len(extra.get("trace") or []),
    }
