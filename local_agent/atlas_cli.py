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
