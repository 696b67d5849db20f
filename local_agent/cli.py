"""The ``local-agent`` command line: one click group; each verb is a thin function over library code.

Verbs are imported only when invoked (``LazyGroup``) so that ``local-agent --help`` never imports torch.
"""
from __future__ import annotations

import importlib

import click

# name -> ("module:attribute", one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("local_agent.synth_cli:synth", "Synthesize defect images with masks through the agent loop."),
    "evaluate": ("local_agent.evaluation.cli:evaluate", "Benchmark synthesis methods on real defects (BENCHMARK.md)."),
    "inspect": ("local_agent.inspection.cli:inspect", "Inspect images for anomalies with the zoom/compare agent (AgentIAD)."),
    "index-gallery": ("local_agent.inspection.cli:index_gallery", "Build the normal-exemplar gallery the inspector compares with."),
    "index-knowledge": ("local_agent.knowledge.cli:index_knowledge", "Index defect knowledge (md, txt, pdf, html, json) for retrieval."),
    "doctor": ("local_agent.doctor:doctor", "Show which backends are ready, what weights are missing, which profile runs."),
    "trajectories": ("local_agent.training.trajectories:trajectories", "Build reverse-synthesis SFT trajectories."),
    "train": ("local_agent.training.cli:train", "Train the agent policy (SFT, GRPO)."),
    "ablate": ("local_agent.training.ablate:ablate", "Table 4/5 ablations (components, reward terms), scored by the harness."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="local-agent")
def main() -> None:
    """local-agent: offline agentic industrial anomaly synthesis (AnomalyAgent) and inspection (AgentIAD)."""


if __name__ == "__main__":
    main()
