"""Click verb ``train-inspector``: a thin wrapper over :func:`local_agent.inspection.trained.train_inspector`."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("train-inspector")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="A `local-agent synth` output folder (MVTec layout with masks; manifest.jsonl names the sources).")
@click.option("--normals", type=click.Path(path_type=Path),
              help="Normal images (an MVTec category folder or a folder of images); default: the folder the "
                   "synthetic samples were painted from.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Inspector folder; each category goes to <out>/<category>/.")
@click.option("--gallery", type=click.Path(path_type=Path),
              help="Reuse this gallery index (from `local-agent index-gallery`) instead of building one in OUT.")
@click.option("--steps", type=click.IntRange(10), default=300, show_default=True, help="Segmentation-head steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(8), help="Use only the first N normal images (quick builds).")
@click.option("--false-alarm", type=click.FloatRange(0.001, 0.5), default=0.05, show_default=True,
              help="Share of held-out normal images allowed at or above the decision thresholds.")
def train_inspector(data: Path, normals: Path | None, out: Path, gallery: Path | None, steps: int, seed: int,
                    limit: int | None, false_alarm: float) -> None:
    """Train the inspector `local-agent inspect --inspector OUT` uses: a segmentation head and a defect-type
    classifier on synthetic defects, a normal gallery, and thresholds set at a false-alarm rate on held-out normal
    images (no real test image is read)."""
    from ..tools.base import BackendUnavailable
    from .cli import _progress
    from .gallery import GalleryError
    from .trained import META, InspectorError, train_inspector as train

    with _progress() as bar:
        task = bar.add_task("train-inspector", total=None, note="")

        def progress(done: int, total: int, stage: str) -> None:
            bar.update(task, completed=done, total=total, note=stage[:60])

        try:
            folders = train(data, out, normals=normals, gallery=gallery, steps=steps, seed=seed, limit=limit,
                            progress=progress, false_alarm=false_alarm)
        except (InspectorError, GalleryError, BackendUnavailable, ValueError) as e:
            raise click.ClickException(str(e)) from e
    for folder in folders:
        meta = json.loads((folder / META).read_text())
        t, at = meta["trained_on"], meta["threshold_on_held_out"]
        click.echo(f"inspector {folder}: {t['samples']} synthetic samples of {len(meta['types'])} types, "
                   f"{t['head_normals'] + t['threshold_normals']} normals; threshold {meta['threshold']:.2f} "
                   f"({100 * at['false_alarm']:.0f} % of {t['threshold_normals']} held-out normals above it; catches "
                   f"{100 * at['synthetic_detected']:.0f} % of {t['threshold_samples']} held-out synthetic anomalies); "
                   f"{meta['seconds']:.0f} s")
        if t.get("failed_samples_per_type"):
            click.echo(f"  types the judge passed fewer than 2 samples of also trained on their failed samples: "
                       f"{', '.join(f'{k} {n}' for k, n in t['failed_samples_per_type'].items())}")
