"""``local-agent evaluate``: the click verb over :func:`local_agent.evaluation.harness.evaluate`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

DEFAULT_METHODS = "agent"


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` -> (0, 1, 2); a bad list is a one-line click error naming --seeds."""
    try:
        seeds = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1,2, got {text!r}",
                                 param_hint="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct integers such as 0,1,2, got {text!r}", param_hint="--seeds")
    return tuple(seeds)


@click.command()
@click.option("--data", "data", required=True, multiple=True, type=click.Path(path_type=Path),
              help="An MVTec-layout category folder (train/good, test/<type>, ground_truth/<type>) or a folder of "
                   "them; repeat the option or list several after it for several categories.")
@click.argument("more_data", nargs=-1, type=click.Path(path_type=Path))
@click.option("--methods", "-m", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated: cutpaste, draem, draem-fg, nsa, open-loop, agent.")
@click.option("--out", "-o", default=Path("eval_out"), show_default=True, type=click.Path(path_type=Path))
@click.option("--n", "n", default=10, show_default=True, type=int, help="Synthetic samples per defect type.")
@click.option("--seeds", "seeds", default=None, help="Comma-separated seeds (synthesis and detector), e.g. 0,1,2 "
                                                     "[default: 0].")
@click.option("--seed", default=None, type=int, help="One seed (same as --seeds N).")
@click.option("--reference", default="draem", show_default=True,
              help="Method every other method is compared with, seed by seed (paired difference).")
@click.option("--profile", "-p", default="default", show_default=True,
              help="Profile for agent / open-loop (packaged name or YAML path).")
@click.option("--steps", default=300, show_default=True, type=int, help="Detector (decoder) training steps.")
@click.option("--side", default=256, show_default=True, type=int, help="Detector input side in pixels.")
@click.option("--width", default=32, show_default=True, type=int, help="Detector decoder channels (at stride 8).")
@click.option("--detectors", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Detectors (decoders) trained per run, with seeds drawn from the run's, their anomaly maps "
                   "averaged: lowers the spread that comes from the detector's own seed; K times the training time.")
@click.option("--classifier", "cls_mode", default="linear", show_default=True, type=click.Choice(["linear", "finetune"]),
              help="Type classifier: frozen Lite0 features + logistic regression, or fine-tuned Lite0 (slower).")
@click.option("--cls-steps", default=200, show_default=True, type=int, help="Classifier fine-tuning steps (finetune).")
@click.option("--textures", default=None, type=click.Path(path_type=Path),
              help="Texture folder for draem / draem-fg (e.g. DTD); default: procedural textures.")
@click.option("--weights", default=Path("weights"), show_default=True, type=click.Path(path_type=Path),
              help="Folder with inception-v3/inception_v3.pt and lpips/lpips.pt (IS / IC-LPIPS) and "
                   "resnet34/resnet34.pth (the paper's type classifier).")
@click.option("--max-turns", default=3, show_default=True, type=int, help="Agent: at most this many IG attempts.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch threads (fixed for determinism).")
@click.option("--no-classifier", is_flag=True, help="Skip defect-type accuracy.")
@click.option("--generative/--no-generative", default=False, show_default=True,
              help="IS / IC metrics (about 10 s per method and seed).")
def evaluate(data: tuple[Path, ...], more_data: tuple[Path, ...], methods: str, out: Path, n: int, seeds: str | None,
             seed: int | None, reference: str, profile: str, steps: int, side: int, width: int, detectors: int,
             cls_mode: str, cls_steps: int, textures: Path | None, weights: Path, max_turns: int, threads: int,
             no_classifier: bool, generative: bool) -> None:
    """Benchmark synthesis methods on real defects (BENCHMARK.md): for each category, method and seed,
    synthesize, train a detector (frozen EfficientNet-Lite0 encoder + small decoder) and a type classifier, test on
    every real test image; writes results.json, results.md (mean ± sd over seeds, paired differences to the
    reference, a mean table over categories) and a contact sheet per run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..profile import ProfileError, load_profile
    from ..tools.base import BackendUnavailable
    from .classifier import ClsConfig
    from .harness import EvalConfig, EvaluationError, Reporter, evaluate as run
    from .layout import LayoutError
    from .segmentation import SegConfig

    if seeds is not None and seed is not None:
        raise click.UsageError("give --seeds or --seed, not both")
    seed_list = parse_seeds(seeds) if seeds is not None else (seed if seed is not None else 0,)
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    if reference not in method_list and len(method_list) > 1:
        click.echo(f"note: reference {reference} is not among --methods; no paired differences", err=True)
    console = Console(stderr=True, soft_wrap=True, markup=False)  # piped: lines stay whole; paths are not markup
    try:
        prof = load_profile(profile)
    except ProfileError as e:
        raise click.ClickException(str(e))
    seg = SegConfig(side=side, width=width, steps=steps, detectors=detectors)
    config = EvalConfig(seeds=seed_list, reference=reference, seg=seg,
                        cls=ClsConfig(mode=cls_mode, steps=cls_steps), classifier=not no_classifier,
                        generative=generative, textures=str(textures) if textures else None,
                        weights_dir=str(weights), max_attempts=max_turns, threads=threads)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)

    def start(description: str, total: int):
        for old in list(progress.tasks):          # one bar at a time: 18 runs x 3 steps would fill the screen
            if old.finished:
                progress.remove_task(old.id)
        task = progress.add_task(description, total=total)
        return lambda completed: progress.update(task, completed=completed)

    reporter = Reporter(start=start, log=progress.console.print)
    try:
        with progress:
            results = run(list(data) + list(more_data), method_list, out, n_per_type=n, seeds=seed_list, profile=prof,
                          config=config, reporter=reporter)
    except (LayoutError, EvaluationError, BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e))
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs and synthesized samples are kept in {out}; rerun the same "
                      "command to resume")
        sys.exit(130)
    from .report import markdown_table

    click.echo(markdown_table(results))
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} ({results['wall_seconds']:.0f} s)")
