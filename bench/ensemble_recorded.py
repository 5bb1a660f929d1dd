"""Best-of-∞'s weighted multi-model ensemble on recorded samples: fit on one half, test on the other.

For every dataset with several recorded models (``analysis_<dataset>_<model>.jsonl`` in ``--data``:
MATH-500 with 7 models, AIME 2024 with 11), the mixture weights that maximise large-N majority-vote
accuracy are fitted by the MILP of :func:`ttscale.lab.ensemble_weights.fit_ensemble_weights` on the
problems with even ``problem_num`` and applied to the odd ones (and, as a second fold, the other way
round). Large-N accuracy of a mixture = the share of problems whose gold answer has the highest
weighted answer frequency (:func:`ttscale.lab.ensemble_weights.ensemble_accuracy`; ties are wrong);
for one model it is its majority vote at N → ∞ over its recorded samples.

Baselines on the test half: the best single model picked on the fitting half (what one could deploy),
the best single model on the test half itself (an oracle: the strictest comparison) and the uniform
mixture. Answers are compared after ``MathAnswers.normalize`` (string normalisation, no symbolic
check).

Usage: python bench/ensemble_recorded.py [--data DIR]
Ends with one line per dataset: RESULT ensemble_acc=<x> best_single_acc=<y> dataset=<name>
(fit on even, tested on odd; best_single_acc = the oracle best single model on the odd half).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

from ttscale.lab.ensemble_weights import ensemble_accuracy, fit_ensemble_weights, read_sample_table
from ttscale.verifiers.math_answers import normalize_answer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "reference" / "recorded"
NAME = re.compile(r"analysis_(?P<ds>[^_]+)_(?P<model>.+)\.jsonl$")


def datasets(data: Path) -> dict[str, list[tuple[str, Path]]]:
    out: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for f in sorted(data.glob("*.jsonl")):
        m = NAME.match(f.name)
        if m:
            out[m.group("ds")].append((m.group("model"), f))
    return {k: v for k, v in out.items() if len(v) >= 2}


def fold(tables, models, fit_ids, test_ids):
    fit = fit_ensemble_weights(tables, ids=fit_ids)
    k = len(tables)
    single_fit = [ensemble_accuracy(tables, [float(i == j) for j in range(k)], ids=fit_ids) for i in range(k)]
    single_test = [ensemble_accuracy(tables, [float(i == j) for j in range(k)], ids=test_ids) for i in range(k)]
    picked = max(range(k), key=lambda i: single_fit[i])
    return {
        "weights": fit.weights, "status": fit.status,
        "ens_fit": fit.accuracy, "ens_test": ensemble_accuracy(tables, fit.weights, ids=test_ids),
        "uniform_test": ensemble_accuracy(tables, [1.0 / k] * k, ids=test_ids),
        "single_fit": single_fit, "single_test": single_test,
        "picked": picked, "picked_test": single_test[picked], "oracle_test": max(single_test),
        "oracle": models[max(range(k), key=lambda i: single_test[i])],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="directory of recorded-samples files")
    a = ap.parse_args(argv)
    data = Path(a.data)
    found = datasets(data)
    if not found:
        print(f"no dataset with two or more recorded models in {data}")
        return 1
    results = []
    for ds, files in found.items():
        t0 = time.perf_counter()
        models = [m for m, _ in files]
        tables = [read_sample_table(f, normalize_answer) for _, f in files]
        common = set(tables[0])
        for t in tables[1:]:
            common &= set(t)
        even = {i for i in common if int(i) % 2 == 0}
        odd = common - even
        f1 = fold(tables, models, even, odd)  # primary: fit on even, test on odd
        f2 = fold(tables, models, odd, even)
        print(f"\n== {ds}: {len(models)} models, {len(common)} common problems "
              f"({len(even)} even / {len(odd)} odd), {time.perf_counter() - t0:.1f}s ==")
        print(f"{'model':<34}{'acc even':>10}{'acc odd':>10}{'w (fit even)':>14}{'w (fit odd)':>13}")
        for i, m in enumerate(models):
            print(f"{m:<34}{f1['single_fit'][i]:>10.3f}{f1['single_test'][i]:>10.3f}"
                  f"{f1['weights'][i]:>14.3f}{f2['weights'][i]:>13.3f}")
        print(f"{'fold':<22}{'ensemble (fit)':>15}{'ensemble (test)':>16}{'uniform':>9}"
              f"{'single picked on fit':>22}{'best single (test)':>20}")
        for name, f in (("fit even -> test odd", f1), ("fit odd -> test even", f2)):
            print(f"{name:<22}{f['ens_fit']:>15.3f}{f['ens_test']:>16.3f}{f['uniform_test']:>9.3f}"
                  f"{f['picked_test']:>14.3f} ({models[f['picked']][:6]}){f['oracle_test']:>12.3f} "
                  f"({f['oracle'][:10]})  [{f['status']}]")
        mean_ens = (f1["ens_test"] * len(odd) + f2["ens_test"] * len(even)) / len(common)
        mean_best = (f1["oracle_test"] * len(odd) + f2["oracle_test"] * len(even)) / len(common)
        print(f"2-fold (all {len(common)} problems held out once): ensemble {mean_ens:.3f} vs best single "
              f"(oracle per half) {mean_best:.3f}")
        results.append((ds, f1["ens_test"], f1["oracle_test"]))
    print()
    for ds, ens, best in results:
        print(f"RESULT ensemble_acc={ens:.3f} best_single_acc={best:.3f} dataset={ds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
