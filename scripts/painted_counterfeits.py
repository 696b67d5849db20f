"""An atlas whose counterfeits are the painter's own attempts, for the learned judge (docs/synthesis.md, "A judge
that knows the painter's tells").

    python scripts/painted_counterfeits.py ../shared/data --out painted_atlas.json [--atlas FILE] [--keep-recipes]
        [--real-as-attempts]

For every real row of the atlas, the procedural painter (the default profile's: atlas priors, that row's category
left out) paints one defect of the row's type on a normal image of its category with the open-loop prompt (= the
agent's first attempt), and the attempt is measured exactly as the calibrated judge measures one
(``atlas_measure.measure_attempt``). The rows are stored as counterfeits with mode ``painted``, in place of the
recipe-made bad edits unless ``--keep-recipes``. With ``--real-as-attempts`` the real rows are measured the same way
too (the real image against its reconstructed normal, through the mask tool's difference mask, as
``scripts/judge_validity.py`` judges them), so that real and painted rows differ by what was drawn, not by how they
were measured (a real row is otherwise measured inside its ground-truth mask). Then

    quality_eval: {backend: calibrated, decide: learned, atlas: painted_atlas.json}

judges each attempt with a logistic regression trained, on the other categories, to tell real defects from painted
ones. Deterministic: the normal image and the seed come from the real row's key. Not a test.
"""
from __future__ import annotations

import argparse
import zlib
from pathlib import Path

from local_agent.evaluation.synthesis import open_loop_prompt
from local_agent.images import list_images, load_image
from local_agent.tools.atlas import Atlas
from local_agent.tools.atlas_measure import (NormalFeatures, _rounded, measure_attempt, object_mask, real_pair,
                                             real_samples)
from local_agent.tools.painter import ProceduralPainter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="MVTec-layout category folders (or folders holding them) "
                                                        "whose train/good images the painter paints on")
    ap.add_argument("--atlas", default=None, help="the atlas to extend (default: the shipped one)")
    ap.add_argument("--keep-recipes", action="store_true", help="keep the recipe-made counterfeits too")
    ap.add_argument("--real-as-attempts", action="store_true",
                    help="measure the real rows as attempts too (needs the real test images under DIRS)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    atlas = Atlas.load(args.atlas)
    normals = {good.parent.parent.name: list_images(good) for d in args.dirs
               for good in sorted(Path(d).glob("**/train/good")) if good.is_dir()}
    missing = sorted({r["category"] for r in atlas.rows} - set(normals))
    if missing:
        raise SystemExit(f"no train/good images for the atlas's categories {', '.join(missing)} under "
                         f"{', '.join(map(str, args.dirs))}")
    painter = ProceduralPainter(atlas=args.atlas or "default")
    loaded: dict[Path, tuple] = {}
    painted = []
    for i, row in enumerate(atlas.rows):
        category = row["category"]
        key = zlib.crc32(row["image"].encode("utf-8"))
        path = normals[category][key % len(normals[category])]
        if path not in loaded:
            image = load_image(path).rgb
            loaded[path] = (image, object_mask(image, category), NormalFeatures.of(image))
        normal, foreground, features = loaded[path]
        edited = painter.edit(normal, open_loop_prompt(category, row["type"]), key % 100_000, category)
        got = measure_attempt(normal, edited, foreground, features)
        if got is not None:     # no visible change: the judge's "missing" rule fails it anyway
            painted.append({**{k: row[k] for k in ("category", "type", "kind", "image", "texture")},
                            "mode": "painted", **_rounded(got[1], 3)})
        if (i + 1) % 50 == 0 or i + 1 == len(atlas.rows):
            print(f"{i + 1}/{len(atlas.rows)} real rows, {len(painted)} painted", flush=True)
    rows = as_attempts(atlas.rows, args.dirs) if args.real_as_attempts else atlas.rows
    out = Atlas(rows=rows, sources=atlas.sources,
                counterfeits=(atlas.counterfeits if args.keep_recipes else []) + painted)
    out.meta = {**atlas.meta, "counterfeits": "recipes + painted" if args.keep_recipes else "painted",
                "real_rows": "measured as attempts" if args.real_as_attempts else "inside their masks"}
    out.save(args.out)
    print(f"wrote {args.out}: {len(rows)} real rows, {len(out.counterfeits)} counterfeits")


def as_attempts(rows: list[dict], dirs: list[Path]) -> list[dict]:
    """The real rows re-measured as the judge measures an attempt; a defect whose change stays under the mask tool's
    floor (no difference mask) is left out, as the judge would fail it."""
    by_key = {r["image"]: r for r in rows}
    out = []
    for sample in real_samples(dirs):
        row = by_key.get(sample.key)
        if row is None:
            continue
        try:
            image, _, normal = real_pair(sample)
        except ValueError:
            continue
        got = measure_attempt(normal, image, object_mask(normal, sample.category), NormalFeatures.of(normal))
        if got is not None:
            out.append({**{k: row[k] for k in ("category", "type", "kind", "image", "texture")}, **_rounded(got[1], 4)})
    print(f"{len(out)} of {len(rows)} real rows measured as attempts", flush=True)
    return out


if __name__ == "__main__":
    main()
