"""Paired differences between `local-agent evaluate` runs kept in different output folders.

`evaluate` pairs methods seed by seed inside one `--out`; runs of one method under two profiles (or a rerun of a
baseline) live in different folders. This reads each run's metrics.json and prints, per category and for the mean
over the categories every run has (per seed, then mean ± sd over seeds), the levels and each run's difference to
the first:

    python scripts/compare_runs.py fill=s26/fill:open-loop agent=s26/fill:agent draem-fg=s26/zs4:draem-fg

``--per-type``: one column per category/type instead (each real defect type's image AUROC and pixel AP against
the good test images; the mean column is then the mean over types).

NAME=ROOT:METHOD reads ROOT/<category folder>/<category>/METHOD/seed<k>/metrics.json (one `--out ROOT/<category>`
per category, as docs/evaluation.md runs them) or ROOT/<category>/METHOD/seed<k>/metrics.json (several categories in
one `--out ROOT`). ROOT may be several roots joined by commas (seeds 0-2 in one, 3-4 in another; a rerun of only the
categories a change touches, then the unchanged ones): their runs are pooled, the first root holding a (category,
seed) giving it. Not a test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MEASURES = {"pixel AP": "pixel_AP", "image AUROC": "image_AUROC", "AUPRO": "pixel_AUPRO"}


def read_runs(root: Path, method: str, per_type: bool = False) -> dict[tuple[str, int], dict[str, float]]:
    """(category, seed) -> measure -> percent, for every finished run of ``method`` under ``root``. ``per_type``:
    the "category" is category/type, from each run's per-type detection (image AUROC, pixel AP); runs written
    before it existed are left out."""
    runs = {}
    for path in sorted(root.glob(f"**/{method}/seed*/metrics.json")):
        data = json.loads(path.read_text())
        category, seed = path.parents[2].name, int(path.parent.name[len("seed"):])
        if per_type:
            for t, m in (data.get("per_type_detection") or {}).items():
                runs[(f"{category}/{t}", seed)] = {name: 100 * m[key] for name, key in MEASURES.items()
                                                    if m.get(key) is not None}
            continue
        values = {name: 100 * data["metrics"][key] for name, key in MEASURES.items()}
        values["judge pass"] = 100 * data["cost"]["judge_pass_rate"]
        values["mask area"] = 100 * data["mean_anomaly_ratio"]
        runs[(category, seed)] = values
    return runs


def spread(values: list[float], signed: bool) -> str:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):{'+' if signed else ''}.1f} ± {sd:.1f}" + ("" if len(values) == 3 else f" ({len(values)})")


def table(title: str, runs: dict, base: dict | None, measures: list[str], categories: list[str],
          over: str = "categories") -> None:
    print(f"\n{title}\n| | " + " | ".join(categories) + f" | mean over {over} (per seed) |")
    print("|---" * (len(categories) + 2) + "|")
    seeds = sorted({s for _, s in runs})
    for m in measures:
        value = (lambda c, s: runs[(c, s)][m] - base[(c, s)][m]) if base else (lambda c, s: runs[(c, s)][m])
        ok = (lambda c, s: m in runs.get((c, s), {}) and (base is None or m in base.get((c, s), {})))
        cells = [spread([value(c, s) for s in seeds if ok(c, s)], base is not None)
                 if any(ok(c, s) for s in seeds) else "" for c in categories]
        per_seed = [float(np.mean([value(c, s) for c in categories])) for s in seeds if all(ok(c, s) for c in categories)]
        sign = "+" if base else ""
        mean = f"{spread(per_seed, base is not None)} ({', '.join(f'{x:{sign}.1f}' for x in per_seed)})" if per_seed else ""
        print(f"| {m} | " + " | ".join(cells) + f" | {mean} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="NAME=ROOT[,ROOT...]:METHOD")
    ap.add_argument("--per-type", action="store_true",
                    help="one column per category/type (image AUROC and pixel AP of each real defect type)")
    args = ap.parse_args()
    named = []
    for spec in args.runs:
        name, _, rest = spec.partition("=")
        root, _, method = rest.rpartition(":")
        if not (name and root and method):
            ap.error(f"{spec!r}: expected NAME=ROOT:METHOD")
        pooled: dict[tuple[str, int], dict[str, float]] = {}
        for one in reversed(root.split(",")):     # the first root wins
            pooled.update(read_runs(Path(one), method, args.per_type))
        named.append((name, pooled))
    categories = sorted({c for _, runs in named for c, _ in runs})
    if not categories:
        ap.error("no finished run found" + (" with per-type detection (runs before it lack it)" if args.per_type else ""))
    measures = ["image AUROC", "pixel AP"] if args.per_type else list(MEASURES)
    over = "types" if args.per_type else "categories"
    for name, runs in named:
        table(f"{name} (levels, %)", runs, None, measures if args.per_type else [*MEASURES, "judge pass", "mask area"],
              categories, over)
    base_name, base = named[0]
    for name, runs in named[1:]:
        table(f"{name} − {base_name} (paired by seed, percentage points)", runs, base, measures, categories, over)


if __name__ == "__main__":
    main()
