"""Mean MG-mask area of painted defects per real defect type vs the real masks' median (docs/synthesis.md, Painter).

Usage: python scripts/painter_areas.py [ATLAS] [--n 10]  (ATLAS: an atlas file; default: the shipped one)
Leave-one-category-out: the painter and the prompt writer of a category never see its real defects.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from local_agent.evaluation.synthesis import open_loop_prompt
from local_agent.images import load_image
from local_agent.tools.imaging import difference_mask
from local_agent.tools.painter import ProceduralPainter
from local_agent.tools.prompt_gen import TemplatePrompt

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("atlas", nargs="?", default="default")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--categories", default="grid,transistor")
    args = ap.parse_args()
    setups = {"atlas, open-loop prompt": (None, ProceduralPainter(atlas=args.atlas)),
              "atlas, template prompt": (TemplatePrompt(atlas=args.atlas), ProceduralPainter(atlas=args.atlas)),
              "no atlas, fixed words": (TemplatePrompt(), ProceduralPainter())}
    print("| category | type | real median | " + " | ".join(setups) + " |")
    print("|---" * (3 + len(setups)) + "|")
    for cat in args.categories.split(","):
        root = DATA / cat
        images = [load_image(p).rgb for p in sorted((root / "train" / "good").glob("*.png"))[:args.n]]
        for tdir in sorted(p for p in (root / "test").iterdir() if p.name != "good"):
            real = np.median([load_image(m).rgb[..., 0].astype(bool).mean()
                              for m in sorted((root / "ground_truth" / tdir.name).glob("*.png"))])
            cells = []
            for writer, painter in setups.values():
                areas = []
                for i, image in enumerate(images):
                    prompt = (writer.generate(image, cat, tdir.name, None, np.random.default_rng([i, 1])) if writer
                              else open_loop_prompt(cat, tdir.name))
                    areas.append(difference_mask(image, painter.edit(image, prompt, 1000 + i, cat))[0].mean())
                cells.append(f"{100 * np.mean(areas):.2f}")
            print(f"| {cat} | {tdir.name} | {100 * real:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
