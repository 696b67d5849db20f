"""``local-agent atlas``: build the defect atlas (measures of real defects) the calibrated judge and the painter read."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("atlas")
def atlas() -> None:
    """The defect atlas: what real defects measure (where, how big, what shape, how they look)."""


@atlas.command("build")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Atlas JSON to write (atomically), e.g. tools/data/atlas.json.")
@click.option("--leave-category-out", is_flag=True,
              help="The judge and painter of a category never read that category's own rows (for an atlas of "
                   "benchmark test sets, like the shipped one). Default: a plant's own defects are used for its category.")
def build_command(dirs: tuple[Path, ...], out: Path, leave_category_out: bool) -> None:
    """Measure every real anomaly with a mask in MVTec-layout category folders (or folders holding them)."""
    from .cli import console, progress_steps
    from .tools.atlas import AtlasError
    from .tools.atlas_measure import build_atlas, real_samples
    from .tools.base import BackendUnavailable

    try:
        samples = real_samples(list(dirs))      # bad folders fail here, before any progress bar is drawn
        with progress_steps("atlas") as on_progress:
            result, skipped = build_atlas(list(dirs), on_progress, samples, leave_out=leave_category_out)
        result.save(out)
    except (AtlasError, BackendUnavailable, OSError) as e:
        raise click.ClickException(str(e)) from None
    kinds: dict[str, int] = {}
    for r in result.rows:
        kinds[r["kind"] or r["type"]] = kinds.get(r["kind"] or r["type"], 0) + 1
    console(stderr=False).print(
        f"{len(result.rows)} real defects from {len(result.categories)} categories and {len(result.counterfeits)} "
        f"bad edits of them written to {out} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
        f"skipped {len(skipped) or 'none'}", markup=False)
    if not leave_category_out:
        _print_checks(result)


@atlas.command("check")
@click.argument("atlas_file", type=click.Path(path_type=Path))
def check_command(atlas_file: Path) -> None:
    """How far the calibrated judge can be trusted on each category of a plant's atlas: the share of the category's
    own real defects it passes and of bad edits of them it fails, leave-one-out. Trusted where both reach 70 %; with
    `tools.quality_eval.trust: auto` synth refines only there."""
    from .tools.atlas import Atlas, AtlasError

    try:
        result = Atlas.load(atlas_file)
    except AtlasError as e:
        raise click.ClickException(str(e)) from None
    if result.leave_out:
        raise click.ClickException(f"{atlas_file} leaves each category out (built with --leave-category-out): the "
                                   "judge of a category never reads its own defects, so there is nothing to check")
    _print_checks(result)


def _print_checks(result: "Atlas") -> None:  # noqa: F821 (imported lazily: `--help` stays instant)
    from .cli import console
    from .tools.judge_check import self_check

    out = console(stderr=False)
    for category in result.categories:
        check = self_check(result, category)
        if check is not None:
            verdict = "trusted" if check.trusted else "not trusted (with trust: auto, one attempt per sample)"
            out.print(f"{check.words()}: {verdict}", markup=False)
