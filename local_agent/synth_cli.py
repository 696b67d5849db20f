"""``local-agent synth``: the click verb over :func:`local_agent.synth.synthesize`."""
from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--type", "-t", "anomaly_types", multiple=True, required=True,
              help="Anomaly type to synthesize (repeat, or comma-separate). Free text is accepted.")
@click.option("--category", "-c", default=None, help="Object category (default: from the folder name).")
@click.option("--n", "n", default=10, show_default=True, type=int, help="Samples per category and type.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-turns", default=3, show_default=True, type=int, help="At most this many image_gen attempts.")
@click.option("--out", "-o", default=Path("synth_out"), show_default=True, type=click.Path(path_type=Path))
@click.option("--profile", "-p", default="default", show_default=True, help="Packaged profile name or YAML path.")
@click.option("--atlas", "atlas", default=None, type=click.Path(path_type=Path),
              help="Defect atlas (`local-agent atlas build`) for the prompt writer, painter and judge: a plant's own "
                   "real defects, copied and judged by for their own category. Default: the profile's (shipped) one.")
@click.option("--workers", "-j", default=1, show_default=True, type=int,
              help="Worker processes (up to one per CPU core).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="CPU threads per worker, for torch and BLAS (the embedded backends are fastest with one; more for "
                   "CPU diffusion).")
@click.option("--no-trajectories", is_flag=True, help="Do not save per-sample trajectories.")
def synth(inputs: tuple[Path, ...], anomaly_types: tuple[str, ...], category: str | None, n: int, seed: int,
          max_turns: int, out: Path, profile: str, atlas: Path | None, workers: int, threads: int,
          no_trajectories: bool) -> None:
    """Turn normal images into defect images with pixel masks, in the MVTec AD layout.

    INPUTS are image files, folders of images, or MVTec category folders (their train/good is used).
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from .cli import console as make_console
    from .outputs import UnsafePath
    from .profile import ProfileError, load_profile, with_atlas
    from .synth import SynthError, synthesize
    from .tools.base import BackendUnavailable

    console = make_console()
    types = [t.strip() for spec in anomaly_types for t in spec.split(",") if t.strip()]
    try:
        prof = load_profile(profile)
        prof = with_atlas(prof, atlas) if atlas else prof
    except ProfileError as e:
        raise click.ClickException(str(e))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=False)
    state = {"task": None, "passed": 0}

    def on_start(total: int, skipped: int) -> None:
        if skipped:
            console.print(escape(f"resuming: {skipped} of {total} samples already finished in {out}"))
        state["task"] = progress.add_task("synthesizing", total=total, completed=skipped)

    def on_record(record: dict) -> None:
        if record.get("status") == "error":
            progress.console.print("[red]skipped[/red] " + escape(f"{record['category']}/{record['anomaly_type']}/"
                                                                   f"{record['index']:03d}: {record['error']}"))
        state["passed"] += record.get("status") == "passed"
        progress.update(state["task"], advance=1, description=f"synthesizing ({state['passed']} passed)")

    try:
        with progress:
            summary = synthesize(list(inputs), types, out, n=n, seed=seed, profile=prof, max_attempts=max_turns,
                                 workers=workers, category=category, save_trajectories=not no_trajectories,
                                 threads=threads, on_start=on_start, on_record=on_record)
    except (SynthError, BackendUnavailable, ValueError, UnsafePath) as e:
        raise click.ClickException(str(e))
    except KeyboardInterrupt:
        console.print(escape(f"interrupted: finished samples are kept in {out}; rerun the same command to resume"))
        sys.exit(130)
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    per = f"{summary.seconds_per_sample:.3f}" if summary.seconds_per_sample is not None else "-"
    per_pass = f"{summary.seconds_per_passed:.3f}" if summary.seconds_per_passed is not None else "-"
    console.print(escape(f"done: {summary.passed} passed, {summary.failed} failed the judge, {summary.errors} errors, "
                  f"{summary.skipped} already finished; {per} s/sample, {per_pass} s/passed sample. "
                  f"Report: {out / 'report.html'}"))
