"""``local-agent index-knowledge DIR [--index PATH]``: build or update the FAISS index of a knowledge folder."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("index-knowledge")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--index", "index_path", type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
              default=None, help="Index folder (default: $LOCAL_AGENT_HOME/knowledge-index/<folder>-<hash>).")
@click.option("--max-mb", default=20.0, show_default=True, type=float, help="Skip documents larger than this.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for embedding (default: the cores that other work leaves free, by the 1-minute load "
                   "average; at least 1).")
def index_knowledge(directory: Path, index_path: Path | None, max_mb: float, threads: int | None) -> None:
    """Index the md, txt, pdf, html and json documents under DIRECTORY for knowledge retrieval.

    Only new or changed files are embedded; the new index replaces the old one atomically. Use the index with the
    profile entry ``knowledge_retrieval: {backend: faiss, source: DIRECTORY}`` (plus ``index:`` if you set one).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..tools.base import BackendUnavailable
    from . import default_index_path
    from .index import build_index
    from .retriever import SEED

    console = Console(stderr=True, soft_wrap=True)  # piped: one-line reasons stay one line
    if not directory.is_dir():
        raise click.ClickException(f"{directory} is not a folder")
    index_path = index_path or default_index_path(directory)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console)

    def progress(description: str, total: int):
        task = bar.add_task(description, total=total)
        return lambda n: bar.update(task, advance=n)

    try:
        with bar:
            summary = build_index(directory, index_path, max_bytes=int(max_mb * 1024 * 1024), progress=progress,
                                  seed=directory / SEED, threads=threads)
    except (BackendUnavailable, NotADirectoryError, OSError) as e:
        raise click.ClickException(str(e))
    for rel, reason in summary.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(f'{rel}: {reason}')}")  # a file named "[/x].md" is text
    state = "written" if summary.written else "unchanged"
    console.print(f"{summary.documents} documents ({len(summary.embedded)} embedded, {len(summary.reused)} unchanged, "
                  f"{len(summary.removed)} removed, {len(summary.skipped)} skipped), {summary.chunks} passages; "
                  f"{summary.seconds:.1f}s including model load; index {state}: {index_path}", markup=False)
