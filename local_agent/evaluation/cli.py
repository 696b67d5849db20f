"""``local-agent evaluate``: the click verb over :func:`local_agent.evaluation.harness.evaluate`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

DEFAULT_METHODS = "agent"


@click.command()
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="An MVTec-layout category folder (train/good, test/<type>, ground_truth/<type>).")
@click.option("--methods", "-m", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated: cutpaste, draem, nsa, open-loop, agent.")
@click.option("--out", "-o", default=Path("eval_out"), show_default=True, type=click.Path(path_type=Path))
@click.option("--n", "n", default=10, show_default=True, type=int, help="Synthetic samples per defect type.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--profile", "-p", default="default", show_default=True,
              help="Profile for agent / open-loop (packaged name or YAML path).")
@click.option("--steps", default=300, show_default=True, type=int, help="Detector (decoder) training steps.")
@click.option("--side", default=256, show_default=True, type=int, help="Detector input side in pixels.")
@click.option("--width", default=32, show_default=True, type=int, help="Detector decoder channels (at stride 8).")
@click.option("--cls-steps", default=200, show_default=True, type=int, help="Classifier fine-tuning steps.")
@click.option("--textures", default=None, type=click.Path(path_type=Path),
              help="Texture folder for draem (e.g. DTD); default: procedural textures.")
@click.option("--weights", default=Path("weights"), show_default=True, type=click.Path(path_type=Path),
              help="Folder with inception-v3/inception_v3.pt and lpips/lpips.pt (IS / IC-LPIPS) and "
                   "resnet34/resnet34.pth (the paper's type classifier).")
@click.option("--max-turns", default=3, show_default=True, type=int, help="Agent: at most this many IG attempts.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch threads (fixed for determinism).")
@click.option("--no-classifier", is_flag=True, help="Skip defect-type accuracy.")
@click.option("--no-generative", is_flag=True, help="Skip IS / IC metrics.")
def evaluate(data: Path, methods: str, out: Path, n: int, seed: int, profile: str, steps: int, side: int, width: int,
             cls_steps: int, textures: Path | None, weights: Path, max_turns: int, threads: int, no_classifier: bool,
             no_generative: bool) -> None:
    """Benchmark synthesis methods on real defects (BENCHMARK.md): synthesize, train a detector (frozen
    EfficientNet-Lite0 encoder + small decoder) and a classifier, test on every real test image; writes
    results.json, results.md and a contact sheet per method."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..profile import ProfileError, load_profile
    from ..tools.base import BackendUnavailable
    from .classifier import ClsConfig
    from .harness import EvalConfig, EvaluationError, Reporter, evaluate as run
    from .layout import LayoutError
    from .segmentation import SegConfig

    console = Console(stderr=True)
    try:
        prof = load_profile(profile)
    except ProfileError as e:
        raise click.ClickException(str(e))
    config = EvalConfig(seg=SegConfig(side=side, width=width, steps=steps), cls=ClsConfig(steps=cls_steps),
                        classifier=not no_classifier, generative=not no_generative,
                        textures=str(textures) if textures else None, weights_dir=str(weights),
                        max_attempts=max_turns, threads=threads)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)

    def start(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda completed: progress.update(task, completed=completed)

    reporter = Reporter(start=start, log=progress.console.print)
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        with progress:
            results = run(data, method_list, out, n_per_type=n, seed=seed, profile=prof, config=config,
                          reporter=reporter)
    except (LayoutError, EvaluationError, BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e))
    except KeyboardInterrupt:
        console.print(f"interrupted: synthesized samples are kept in {out}; rerun the same command to resume")
        sys.exit(130)
    from .report import markdown_table

    click.echo(markdown_table(results))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} ({results['wall_seconds']:.0f} s)")
