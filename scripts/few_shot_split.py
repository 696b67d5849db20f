"""A plant's few defects, simulated on benchmark categories (docs/synthesis.md, "A plant's own defects").

    python scripts/few_shot_split.py ../shared/data/mvtec/grid ../shared/data/mvtec/screw --shots 5 --out fewshot

For each MVTec-layout category folder C, ``--shots`` real defects per type (drawn with a fixed seed, ``--draw``;
7 is stop 23's split) become the plant's defects and leave the test set:

- ``OUT/test_sets/C``: the category with those defects removed from ``test/`` and ``ground_truth/`` (symbolic links
  to the original files, so nothing is copied); every method is scored on it;
- ``OUT/shots/C``: the removed defects, in the same layout;
- ``OUT/atlas_C.json``: the shipped atlas without C plus the shots' rows, as a plant's atlas (no ``leave_out``: the
  painter copies C's own defects of the type and the judge scores by them);
- ``OUT/fewshot_C.yaml``: the default profile with that atlas for the prompt writer, the painter and the judge.

Then ``local-agent evaluate --data OUT/test_sets/C --profile OUT/fewshot_C.yaml ...`` is the few-shot run and the same
command without ``--profile`` the zero-shot one, on the same test images. A rerun keeps the links and rewrites the
atlas and the profile. Not a test.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import yaml

from local_agent.evaluation.layout import read_category
from local_agent.profile import load_profile, with_atlas
from local_agent.tools.atlas import Atlas
from local_agent.tools.atlas_measure import build_atlas


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def split(root: Path, shots: int, out: Path, draw: int = 7) -> None:
    category = read_category(root)
    name = category.name
    link(root / "train", out / "test_sets" / name / "train")
    link(root / "test" / "good", out / "test_sets" / name / "test" / "good")
    for t in category.anomaly_types:
        items = [i for i in category.test if i.anomaly_type == t]
        picked = set(np.random.default_rng([draw, len(items)]).choice(len(items), min(shots, len(items)),
                                                                   replace=False).tolist())
        for k, item in enumerate(items):
            dest = out / ("shots" if k in picked else "test_sets") / name
            link(item.image, dest / "test" / t / item.image.name)
            link(item.mask, dest / "ground_truth" / t / item.mask.name)
    own, skipped = build_atlas([out / "shots" / name])
    base = Atlas.load().without(name)
    Atlas(base.rows + own.rows, base.sources + [str(out / "shots" / name)], {"leave_out": False, "shots": shots},
          base.counterfeits + own.counterfeits).save(out / f"atlas_{name}.json")
    profile = with_atlas(load_profile("default"), (out / f"atlas_{name}.json").resolve())
    (out / f"fewshot_{name}.yaml").write_text(yaml.safe_dump(profile))
    print(f"{name}: {len(own.rows)} shots in the atlas ({len(base.rows)} rows of other categories), "
          f"skipped {len(skipped)}; test set {out / 'test_sets' / name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("categories", nargs="+", type=Path)
    ap.add_argument("--shots", type=int, default=5, help="real defects per type given to the plant's atlas")
    ap.add_argument("--draw", type=int, default=7, help="seed of the draw (7: stop 23's split; others replicate it)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for root in args.categories:
        split(root, args.shots, args.out, args.draw)


if __name__ == "__main__":
    main()
