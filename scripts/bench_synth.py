"""Benchmark `synth` with a profile: seconds per sample and per passed sample, judge pass rate.

    python scripts/bench_synth.py --data ../shared/data/mvtec --categories grid transistor --n 10 --workers 1 2

Uses each category's own defect-type names (the test/<type> folders), train/good as sources. Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from local_agent.profile import load_profile
from local_agent.synth import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec")
    ap.add_argument("--categories", nargs="+", default=["grid", "transistor"])
    ap.add_argument("--n", type=int, default=10, help="samples per defect type")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    profile = load_profile(args.profile)
    rows = []
    for workers in args.workers:
        for cat in args.categories:
            types = sorted(p.name for p in (args.data / cat / "test").iterdir() if p.is_dir() and p.name != "good")
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                s = synthesize([args.data / cat], types, Path(tmp), n=args.n, seed=args.seed, profile=profile,
                               workers=workers, save_trajectories=True)
                wall = time.perf_counter() - t0
            rows.append({"category": cat, "workers": workers, "samples": s.ran, "passed": s.passed,
                         "pass_rate": round(s.passed / max(s.ran, 1), 3),
                         "cpu_s_per_sample": round(s.seconds_per_sample or 0, 4),
                         "cpu_s_per_passed": round(s.seconds_per_passed or 0, 4),
                         "wall_s": round(wall, 2), "wall_s_per_passed": round(wall / max(s.passed, 1), 4)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| category | workers | samples | pass rate | s/sample (per process) | s/passed sample (per process) |"
          " wall s/passed sample |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['category']} | {r['workers']} | {r['samples']} | {r['pass_rate']:.1%} | {r['cpu_s_per_sample']:.3f} "
              f"| {r['cpu_s_per_passed']:.3f} | {r['wall_s_per_passed']:.3f} |")
    print(f"\nmachine: {platform.processor() or platform.machine()}, profile {args.profile}, n={args.n} per type")


if __name__ == "__main__":
    main()
