"""The ``local-agent`` command line: one click group; each verb is a thin function over library code.

Verbs are imported only when invoked (``LazyGroup``) so that ``local-agent --help`` never imports torch.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Callable, Iterator

import click

# name -> ("module:attribute", one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("local_agent.synth_cli:synth", "Synthesize defect images with masks through the agent loop."),
    "evaluate": ("local_agent.evaluation.cli:evaluate", "Benchmark synthesis methods on real defects (BENCHMARK.md)."),
    "inspect": ("local_agent.inspection.cli:inspect", "Inspect images for anomalies with the zoom/compare agent (AgentIAD)."),
    "index-gallery": ("local_agent.inspection.cli:index_gallery", "Build the normal-exemplar gallery the inspector compares with."),
    "train-inspector": ("local_agent.inspection.train_cli:train_inspector", "Train the inspector (head, type classifier, threshold) on synth output."),
    "index-knowledge": ("local_agent.knowledge.cli:index_knowledge", "Index defect knowledge (md, txt, pdf, html, json) for retrieval."),
    "doctor": ("local_agent.doctor:doctor", "Show which backends are ready, what weights are missing, which profile runs."),
    "trajectories": ("local_agent.training.trajectories:trajectories", "Build reverse-synthesis SFT trajectories."),
    "train": ("local_agent.training.cli:train", "Train the agent policy (SFT, GRPO)."),
    "ablate": ("local_agent.training.ablate:ablate", "Table 4/5 ablations (components, reward terms), scored by the harness."),
    "atlas": ("local_agent.atlas_cli:atlas", "Build the defect atlas (measures of real defects) the judge calibrates on."),
}


def console(stderr: bool = True, table: bool = False):
    """A rich console whose lines are never broken at 80 columns when the output is a pipe or a log file
    (``soft_wrap``); ``table=True`` also gives tables room for their full cells there."""
    from rich.console import Console

    c = Console(stderr=stderr, soft_wrap=True)
    if table and not c.is_terminal:
        c = Console(stderr=stderr, soft_wrap=True, width=1000)
    return c


@contextmanager
def progress_steps(label: str, template: str = "{label} {what}") -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar on stderr (``console``; what is shown is never read as markup) for the length of the block,
    and the ``(done, total, what)`` callback the library code moves it with."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console())
    with progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total, what: progress.update(task, total=total, completed=done,
                                                        description=template.format(label=label, what=what))


def one_line(error: BaseException) -> str:
    """A user-facing line for an exception nobody caught more specifically: the file and the reason for OS errors
    (a folder where a file should be, permissions), else the message; never a traceback."""
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({error.reason} at byte {error.start})"
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{text} ({type(error).__name__}; rerun with --debug for the traceback)"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        """Every error reaches the user as one line (``error: ...``); ``--debug`` shows the traceback instead."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if ctx.meta.get("local_agent.debug"):
                raise
            raise click.ClickException(one_line(e)) from e

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="local-agent")
@click.option("--debug", is_flag=True, envvar="LOCAL_AGENT_DEBUG",
              help="Show the full traceback of an error instead of one line.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """local-agent: offline agentic industrial anomaly synthesis (AnomalyAgent) and inspection (AgentIAD)."""
    ctx.meta["local_agent.debug"] = debug


if __name__ == "__main__":
    main()
