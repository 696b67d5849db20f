"""Click verbs ``index-gallery`` and ``inspect``: thin wrappers over the gallery, runner and evaluation modules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

# policy name -> "module:Class" (imported only when chosen). Any class with next_message(episode) -> str fits.
INSPECT_POLICIES: dict[str, str] = {"scripted": "local_agent.inspection.policy:ScriptedInspector",
                                    "vlm": "local_agent.inspection.vlm_policy:InspectionVLMPolicy"}


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..cli import console

    # on stderr, so that stdout carries only results (the --eval report is JSON a script can read)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[note]}", markup=False), console=console(), transient=False)


def _fail(message: str) -> None:
    """One line on stderr, exit status 1 (raised, so the progress bar closes first)."""
    raise click.ClickException(message)


@click.command("index-gallery")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "index_dir", type=click.Path(path_type=Path), required=True,
              help="Gallery index folder; the category goes to <out>/<category>/.")
@click.option("--category", help="Category name (default: the folder name when it has train/good).")
@click.option("--k", type=click.IntRange(1, 64), default=16, show_default=True,   # gallery.DEFAULT_K
              help="Nearest normal exemplars each image is compared with.")
@click.option("--limit", type=click.IntRange(8), help="Use only the first N normal images (quick builds).")
def index_gallery(folder: Path, index_dir: Path, category: str | None, k: int, limit: int | None) -> None:
    """Index the normal images of FOLDER (an MVTec category: train/good only; or a folder of normal images with
    --category) into a FAISS gallery with EfficientNet-Lite0 patch features, calibrated on held-out normals."""
    from ..tools.base import BackendUnavailable
    from .gallery import GalleryError, build_gallery

    skipped: list[str] = []
    with _progress() as bar:
        task = bar.add_task("index-gallery", total=None, note="")

        def progress(done: int, total: int, stage: str) -> None:
            bar.update(task, completed=done, total=total, note=stage)

        try:
            path = build_gallery(folder, index_dir, category=category, k=k, limit=limit, progress=progress,
                                 skipped=skipped)
        except (GalleryError, BackendUnavailable, ValueError) as e:
            _fail(str(e))
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)
    meta = json.loads((path / "meta.json").read_text())
    cal = meta["calibration"]
    click.echo(f"gallery {path}: {len(meta['names'])} normal images; image threshold {cal['image_threshold']:.3f} "
               f"(normal range {cal['image_low']:.3f}-{cal['image_high']:.3f}); types: "
               f"{', '.join(meta['defect_types']) or 'none found'}")


@click.command("inspect")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--category", help="Product category (the gallery's sub-folder). Default with --eval: DIR's name.")
@click.option("--gallery", "gallery_dir", type=click.Path(path_type=Path),
              help="Gallery index folder from `local-agent index-gallery` (with --eval: built from DIR/train/good "
                   "into OUT/gallery when not given).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (reruns resume).")
@click.option("--types", help="Comma-separated defect type names (default: the gallery source's test/<type> names).")
@click.option("--eval", "eval_dirs", type=click.Path(path_type=Path), multiple=True,
              help="Evaluate on an MVTec-layout category folder (mini-MMAD questions, AUROCs); repeat it for several "
                   "categories (each in OUT/<category>/, with a mean row in OUT/eval.md).")
@click.option("--inspector", "inspector_dir", type=click.Path(path_type=Path),
              help="Trained inspector folder from `local-agent train-inspector` (its head, type classifier, gallery "
                   "and thresholds); without it the inspector is the untrained one.")
@click.option("--limit", type=click.IntRange(1), help="With --eval: only the first N images of each test folder.")
@click.option("--policy", "policy_name", type=click.Choice(sorted(INSPECT_POLICIES)), default="scripted",
              show_default=True)
@click.option("--policy-option", "policy_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the policy, e.g. engine=openai, base_url=http://127.0.0.1:8000/v1, model=weights/qwen "
                   "(repeatable; values are read as YAML scalars).")
@click.option("--k", type=click.IntRange(1, 64), help="Nearest normal exemplars to compare with (default: gallery's).")
@click.option("--max-steps", type=click.IntRange(1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(1),
              help="torch CPU threads (default: torch's, one per core). On a busy 2-core machine 1 took 0.92x the "
                   "wall time and 0.71x the CPU time of the default with the scripted policy.")
def inspect(images: tuple[Path, ...], category: str | None, gallery_dir: Path | None, out: Path, types: str | None,
            eval_dirs: tuple[Path, ...], inspector_dir: Path | None, limit: int | None, policy_name: str,
            policy_options: tuple[str, ...], k: int | None, max_steps: int, threads: int | None) -> None:
    """Inspect IMAGES (files or folders) for anomalies with the AgentIAD tools; write answers.jsonl, overlays and
    trajectories to OUT. With --eval DIR, answer DIR's mini-MMAD questions and report accuracy and AUROCs."""
    import importlib

    from ..tools.base import BackendUnavailable
    from .gallery import GalleryError, build_gallery, is_built, load_gallery
    from .runner import inspect_images
    from .tools import inspection_tools

    eval_dir = eval_dirs[0] if eval_dirs else None
    if eval_dir is None and not images:
        _fail("give IMAGES to inspect, or --eval DIR")
    if eval_dir is not None and images:
        _fail("give either IMAGES or --eval DIR, not both")
    import yaml

    options = {}
    for item in policy_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--policy-option {item!r}: write KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            _fail(f"--policy-option {item!r}: the value is not a YAML scalar ({str(e).splitlines()[0]})")
    category = category or (Path(eval_dir).resolve().name if eval_dir else None)
    if not category:
        _fail("--category is required (the gallery's sub-folder name)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    with _progress() as bar:
        task = bar.add_task("inspect", total=None, note="")

        def progress(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total, note=note[:60])

        def run(category: str, eval_dir: Path | None, out: Path) -> Any:
            gallery = gallery_dir
            inspector = None
            if inspector_dir is not None:
                from .trained import load_inspector

                inspector = load_inspector(inspector_dir, category)
                gallery = gallery or inspector.gallery_dir
            if gallery is None:
                if eval_dir is None:
                    _fail("--gallery is required (build one with `local-agent index-gallery DIR --out INDEX`)")
                gallery = Path(out) / "gallery"
                if not is_built(gallery, category):
                    bar.update(task, description="gallery")
                    build_gallery(eval_dir, gallery, category=category, progress=progress)
                    bar.update(task, description="inspect", completed=0)
            loaded = load_gallery(gallery, category)
            type_names = [t.strip() for t in types.split(",") if t.strip()] if types else \
                (loaded.defect_types or (inspector.classes if inspector else []))
            module, _, attr = INSPECT_POLICIES[policy_name].partition(":")
            try:
                policy = getattr(importlib.import_module(module), attr)(**options)
            except TypeError as e:
                _fail(f"bad --policy-option for {policy_name}: {e}")
            if inspector is not None:
                from .trained import trained_tools

                tools = trained_tools(gallery, inspector, k=k)
            else:
                tools = inspection_tools(gallery, k=k)
            if eval_dir is not None:
                from .evaluate import evaluate

                bar.update(task, description=f"inspect {category}", completed=0)
                return evaluate(eval_dir, tools, policy, out, types=type_names, limit=limit, progress=progress)
            return inspect_images(list(images), category, type_names, tools, policy, out, max_steps=max_steps,
                                  progress=progress)

        try:
            if len(eval_dirs) > 1:
                from ..outputs import inside, safe_name

                reports = [run(Path(d).resolve().name, d, inside(Path(out), safe_name(Path(d).resolve().name)))
                           for d in eval_dirs]
            elif eval_dir is not None:
                report = run(category, eval_dir, out)
            else:
                summary = run(category, None, out)
        except (GalleryError, BackendUnavailable, ValueError) as e:
            _fail(str(e))
    if len(eval_dirs) > 1:
        from ..images import atomic_write_bytes
        from .evaluate import markdown_table

        table = markdown_table(reports)
        atomic_write_bytes(Path(out) / "eval.md", table.encode())
        click.echo(json.dumps(reports, indent=1))
        click.echo(table, err=True)
        return
    if eval_dir is not None:
        from .evaluate import markdown_table

        click.echo(json.dumps(report, indent=1))
        click.echo(markdown_table([report]), err=True)
        return
    for err in summary.errors:
        click.echo(f"error: {err}", err=True)
    flagged = sum(bool(r.get("answer") and r["answer"].get("anomaly_present")) for r in summary.records)
    click.echo(f"{summary.done} inspected, {summary.skipped} done before, {len(summary.errors)} failed; "
               f"{flagged} anomalous; answers in {Path(out) / 'answers.jsonl'}")
