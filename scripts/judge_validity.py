"""Judge validity, leave-one-category-out: does the judge pass real defects and fail deliberately bad edits?

For every real anomaly with a mask (up to --per-type per defect type): rebuild its normal by inpainting (as
``trajectories build`` does, pasted back inside the mask: ``atlas_measure.real_pair``), judge the real image against it, then judge the bad edits ``trajectories`` makes from
the same defect (faint, misplaced = moved off the object, too_large = scaled up, wrong_shape). The calibrated judge
leaves the category under test out of its atlas by itself (its category name); the heuristic judge is run on the
same cases for comparison. Nothing here is tuned: thresholds are the judges' defaults.

Judges (columns): ``calibrated`` (decide: tails, the default), ``learned`` (decide: learned: a logistic regression
trained on the other categories' real defects vs their counterfeits), ``heuristic``; with ``--lomo`` also
``learned_lomo``, the harder check: each bad edit is judged by a learned judge trained WITHOUT that edit's mode
(so it must recognise a bad edit it was not trained on); its real pass is the mean over the four such judges.

    .venv/bin/python scripts/judge_validity.py ../shared/data --per-type 10 --lomo --out judge_validity.json
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--per-type", default=10, show_default=True, type=click.IntRange(1), help="Real anomalies per type.")
@click.option("--atlas", "atlas_path", default=None, help="Atlas JSON (default: the shipped one).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lomo", is_flag=True, help="Also the learned judge trained without the scored edit's mode.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Write the per-case results (JSON).")
def main(dirs: tuple[Path, ...], per_type: int, atlas_path: str | None, seed: int, lomo: bool,
         out: Path | None) -> None:
    from local_agent.images import atomic_write_bytes
    from local_agent.tools.atlas_measure import real_pair, real_samples
    from local_agent.tools.calibrated_judge import CalibratedJudge
    from local_agent.tools.imaging import foreground_mask
    from local_agent.tools.painter.spec import kind_of
    from local_agent.tools.quality_eval import HeuristicJudge
    from local_agent.training.trajectories import FAILURE_MODES, make_failure, sample_seed

    calibrated = CalibratedJudge(atlas_path)     # one instance: it measures each attempt once for every decider
    judges = {"calibrated": calibrated, "learned": calibrated, "heuristic": HeuristicJudge()}
    options = {"learned": {"decide": "learned"}}
    chosen, count = [], defaultdict(int)
    for s in real_samples(list(dirs)):
        if count[(s.category, s.anomaly_type)] < per_type:
            count[(s.category, s.anomaly_type)] += 1
            chosen.append(s)
    cases = []
    t0 = time.time()
    for i, s in enumerate(chosen):
        try:
            anomaly, mask, normal = real_pair(s)     # the atlas's own pairing: reconstruction pasted inside the mask
        except ValueError:
            continue
        fg = foreground_mask(normal, s.category)
        rng = np.random.default_rng(sample_seed(seed, s.key))
        attempts = [("real", anomaly)]
        for mode in FAILURE_MODES:
            bad = make_failure(mode, normal, anomaly, mask, fg, kind_of(s.anomaly_type), rng)
            if bad is not None:
                attempts.append((mode, bad))
        for what, image in attempts:
            row = {"key": s.key, "category": s.category, "type": s.anomaly_type, "case": what}
            for name, judge in judges.items():
                v = judge.evaluate(normal, image, s.category, s.anomaly_type, foreground=fg, **options.get(name, {}))
                row[name] = {"passed": v["passed"], "faults": v["faults"], "location": v["location_score"],
                             "quality": v["quality_score"], "p_real": v["measures"].get("p_real")}
            if lomo:
                left = FAILURE_MODES if what == "real" else (what,)
                vs = [calibrated.evaluate(normal, image, s.category, s.anomaly_type, foreground=fg, decide="learned",
                                          without_modes=(mode,)) for mode in left]
                row["learned_lomo"] = {"passed": float(np.mean([v["passed"] for v in vs])),
                                       "without": list(left)}
            cases.append(row)
        print(f"\r{i + 1}/{len(chosen)} {s.key}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    summary = summarise(cases, ["calibrated", "learned", "heuristic"] + (["learned_lomo"] if lomo else []))
    print_table(summary)
    print(f"{len(chosen)} real anomalies, {len(cases)} judged cases per judge, {time.time() - t0:.0f} s")
    if out:
        atomic_write_bytes(out, json.dumps({"summary": summary, "cases": cases}, indent=1).encode())


def summarise(cases: list[dict], judges: list[str]) -> dict:
    """Per judge and category: share of real defects passed, share of bad edits failed (per mode and overall).
    A case's ``passed`` may be a share (``learned_lomo`` on a real defect: the share of its four judges passing)."""
    out: dict = {}
    cats = sorted({c["category"] for c in cases})
    for judge in judges:
        out[judge] = {}
        for cat in cats + ["ALL"]:
            sel = [c for c in cases if cat == "ALL" or c["category"] == cat]
            real = [c[judge]["passed"] for c in sel if c["case"] == "real"]
            bad = [1 - c[judge]["passed"] for c in sel if c["case"] != "real"]
            row = {"real_pass": _share(real), "bad_fail": _share(bad), "n_real": len(real), "n_bad": len(bad)}
            for mode in sorted({c["case"] for c in sel} - {"real"}):
                row[f"fail_{mode}"] = _share([1 - c[judge]["passed"] for c in sel if c["case"] == mode])
            out[judge][cat] = row
        cat_means = [out[judge][c] for c in cats]
        out[judge]["MEAN_OVER_CATEGORIES"] = {
            "real_pass": round(float(np.mean([r["real_pass"] for r in cat_means])), 3),
            "bad_fail": round(float(np.mean([r["bad_fail"] for r in cat_means])), 3)}
    return out


def _share(flags: list[float]) -> float:
    return round(float(np.mean(flags)), 3) if flags else float("nan")


def print_table(summary: dict) -> None:
    modes = ("faint", "misplaced", "too_large", "wrong_shape")
    print(f"{'judge':<13}{'category':<22}{'real pass':>10}{'bad fail':>10}" + "".join(f"{m:>12}" for m in modes))
    for judge, rows in summary.items():
        for cat, r in rows.items():
            print(f"{judge:<13}{cat:<22}{r['real_pass']:>10.2f}{r['bad_fail']:>10.2f}"
                  + "".join(f"{r.get('fail_' + m, float('nan')):>12.2f}" for m in modes))


if __name__ == "__main__":
    main()
