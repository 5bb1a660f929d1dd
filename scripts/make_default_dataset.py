#!/usr/bin/env python
"""Write the bundled default dataset, src/ttscale/data/gsm_symbolic_40.jsonl.

40 reasoning-gym ``gsm_symbolic`` problems (seed 40): GSM8K-style word problems with integer answers,
which the embedded 1.5B model solves only part of the time, so sampling more and voting visibly helps.
Each row has ``id``, ``question``, ``answer`` and ``metadata`` with the reasoning-gym task and entry
(``rg_task``, ``rg_entry``, ``rg_seed``, ``rg_size``), so the set can also be graded by the task's own
scorer. Loading it does not call reasoning-gym. Rerun to regenerate: the output is deterministic.

    python scripts/make_default_dataset.py [--seed 40] [--size 40] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ttscale.datasets.reasoning_gym import load_rg

TASK = "gsm_symbolic"
OUT = Path(__file__).resolve().parents[1] / "src" / "ttscale" / "data" / "gsm_symbolic_40.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=40)
    ap.add_argument("--size", type=int, default=40)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    problems = load_rg(TASK, seed=args.seed, size=args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for i, p in enumerate(problems):
            if not re.fullmatch(r"-?\d+", p.answer or ""):
                raise SystemExit(f"problem {p.id}: answer {p.answer!r} is not an integer")
            entry = dict(p.metadata["rg_entry"])
            # the chain of thought and the template variables are not needed for grading; keep the file small
            entry["metadata"] = {
                k: v for k, v in entry.get("metadata", {}).items() if k not in ("answer_cot", "variables")
            }
            row = {
                "id": f"gsm_symbolic-{i:02d}",
                "question": p.prompt,
                "answer": p.answer,
                "metadata": {"rg_task": TASK, "rg_entry": entry, "rg_seed": args.seed, "rg_size": args.size},
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(problems)} problems to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
