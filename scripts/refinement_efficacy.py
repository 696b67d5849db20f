"""Does the agent's refinement act on the judge's review, or only draw again?

    local-agent synth ../shared/data/mvtec/grid --type bent,broken,glue,metal_contamination,thread --n 6 --out runs/grid
    python scripts/refinement_efficacy.py runs/grid runs/transistor ...

Reads the trajectories of `synth` folders. For every failed attempt that was followed by another one, takes the
measure the judge named first (its ``worst_measure``) and asks whether the next attempt's value of that measure lies
closer to the real defects' median (the rows the judge ranked it among: ``judged_rows``, the category left out,
areas divided by the painter's ``size_scale`` as the judge does). The same question is asked of every OTHER sample's
first attempt of the same category and type: drawing afresh, with no review at all. A refinement that acts on its
review moves the named measure more often than a fresh draw does; one that does not is the loop resampling.
Not a test.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from local_agent.tools.atlas import Atlas
from local_agent.tools.calibrated_judge import OBJECT_ONLY, at_real_size, judged_rows


def judgements(trajectory: dict) -> list[dict]:
    return [s["result"] for s in trajectory["steps"] if s.get("tool") == "quality_eval" and s.get("result")]


def distance(measures: dict, name: str, median: float) -> float | None:
    """|value - real median| of one measure, at the real scale the judge ranks it at."""
    if measures.get(name) is None:
        return None
    return abs(float(at_real_size(measures, float(measures.get("size_scale", 1.0)))[name]) - median)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="synth output folders (with trajectories/)")
    ap.add_argument("--atlas", default=None, help="the judge's atlas (default: the shipped one)")
    args = ap.parse_args()
    atlas = Atlas.load(args.atlas)
    per_category: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])   # n, refined closer, fresh, passed
    per_measure: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])
    for run in args.runs:
        trajectories = [json.loads(p.read_text()) for p in sorted((run / "trajectories").rglob("*.json"))]
        firsts: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for t in trajectories:
            if seen := judgements(t):
                firsts[(t["category"], t["anomaly_type"])].append(seen[0])
        for t in trajectories:
            cat, type_name, seen = t["category"], t["anomaly_type"], judgements(t)
            rows, object_rows = judged_rows(atlas.for_category(cat), cat, type_name)
            for before, after in zip(seen, seen[1:]):
                name = (before.get("measures") or {}).get("worst_measure")
                if before["passed"] or not name:
                    continue
                pool = object_rows if name in OBJECT_ONLY else rows
                values = [float(r[name]) for r in pool if r.get(name) is not None]
                if not values:
                    continue
                median = float(np.median(values))
                d0 = distance(before["measures"], name, median)
                d1 = distance(after.get("measures") or {}, name, median)
                if d0 is None or d1 is None:
                    continue
                fresh = [d for f in firsts[(cat, type_name)] if f is not before
                         and (d := distance(f.get("measures") or {}, name, median)) is not None]
                for tally in (per_category[cat], per_measure[name]):
                    tally[0] += 1
                    tally[1] += d1 < d0
                    tally[2] += float(np.mean([d < d0 for d in fresh])) if fresh else 0.5
                    tally[3] += bool(after["passed"])
    total = np.sum([v for v in per_category.values()], axis=0) if per_category else np.zeros(4)
    print("| category | refinements | named measure closer to the real median after the refinement | after a fresh "
          "first attempt instead | refined attempt passes |")
    print("|---|---|---|---|---|")
    for name, (n, closer, fresh, passed) in [*sorted(per_category.items()), ("all", total)]:
        if n:
            print(f"| {name} | {int(n)} | {closer / n:.0%} | {fresh / n:.0%} | {passed / n:.0%} |")
    print("\n| named measure | refinements | closer after the refinement | after a fresh first attempt |")
    print("|---|---|---|---|")
    for name, (n, closer, fresh, _) in sorted(per_measure.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {int(n)} | {closer / n:.0%} | {fresh / n:.0%} |")


if __name__ == "__main__":
    main()
