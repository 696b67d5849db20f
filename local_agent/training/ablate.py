"""``local-agent ablate``: the paper's Table 4 and Table 5 rows without any API, scored by the evaluation harness.

Table 4 (what each agent component adds):
  fixed prompt   one image_gen call with the fixed comparison prompt (harness method ``open-loop``)
  +PG            the agent with one attempt: PG's prompt, one IG call (the judge cannot change the outcome)
  +PG+QE         the closed loop, up to 3 attempts, refined from the judge's reviews (scripted Algorithm 1)
  +KR            the same with knowledge retrieval (``knowledge_retrieval: faiss``)
  +SFT           the closed loop driven by the SFT policy (``--sft-model``)
  +RL            the closed loop driven by the GRPO policy (``--rl-model``)
Table 5 (which reward terms GRPO needs): the closed loop driven by GRPO policies trained with R_task only
(``--rl-task-model``), R_task + R_ref (``--rl-ref-model``), and all three (``--rl-model``).

Every row is one ``evaluation.harness.evaluate`` run (same sources, seeds and sample counts), cached by the harness,
so a rerun only computes rows whose configuration changed. A row whose model is not given is listed as not run.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


@dataclass
class Row:
    table: str
    name: str
    method: str                  # harness method: open-loop | agent
    max_attempts: int = 3
    knowledge: bool = False
    model_flag: str | None = None  # which CLI option names the policy checkpoint


ROWS = (
    Row("4", "fixed prompt", "open-loop", 1),
    Row("4", "+PG", "agent", 1),
    Row("4", "+PG+QE", "agent", 3),
    Row("4", "+KR", "agent", 3, knowledge=True),
    Row("4", "+SFT", "agent", 3, knowledge=True, model_flag="sft_model"),
    Row("4", "+RL", "agent", 3, knowledge=True, model_flag="rl_model"),
    Row("5", "R_task", "agent", 3, knowledge=True, model_flag="rl_task_model"),
    Row("5", "+R_ref", "agent", 3, knowledge=True, model_flag="rl_ref_model"),
    Row("5", "+R_beh", "agent", 3, knowledge=True, model_flag="rl_model"),
)


def row_profile(row: Row, base: dict[str, Any], models: dict[str, Path | None],
                kr_threshold: float | None = None, native_tools: bool = False) -> dict[str, Any] | None:
    """The profile one row runs with, or None when its policy checkpoint was not given. ``kr_threshold`` sets the
    scripted policy's δ in the rows with KR (None: the base profile's). ``native_tools``: the checkpoints call tools
    in their chat template's format (SFT --native-tool-calls, GRPO rollouts: environment), so they run as the
    ``vlm`` policy that renders turns as in training, on the transformers engine for a VLM folder."""
    profile = copy.deepcopy(base)
    if row.knowledge:
        profile["tools"]["knowledge_retrieval"] = {"backend": "faiss"}
        if kr_threshold is not None:
            profile.setdefault("policy", {})["kr_threshold"] = float(kr_threshold)
    if row.model_flag:
        model = models.get(row.model_flag)
        if model is None:
            return None
        if native_tools:
            from .models import native_policy

            profile["policy"] = native_policy(model)
        else:
            profile["policy"] = {"backend": "smollm2", "model_dir": str(model)}
    return profile


def slug(name: str) -> str:
    return name.replace("+", "plus-").replace(" ", "-").lower()


def run_ablation(data: Path, out: Path, models: dict[str, Path | None], n_per_type: int, seed: int,
                 base_profile: dict[str, Any], fast: bool = True, tables: tuple[str, ...] = ("4", "5"),
                 reporter: Any = None, kr_threshold: float | None = None,
                 native_tools: bool = False) -> list[dict[str, Any]]:
    """Run (or reuse) each row's harness evaluation; return one summary dict per row."""
    from ..evaluation.harness import EvalConfig, evaluate, run_result

    rows: list[dict[str, Any]] = []
    done: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        if row.table not in tables:
            continue
        profile = row_profile(row, base_profile, models, kr_threshold, native_tools)
        summary: dict[str, Any] = {"table": row.table, "row": row.name, "method": row.method}
        if profile is None:
            rows.append({**summary, "status": f"not run: no --{row.model_flag.replace('_', '-')} given"})
            continue
        key = json.dumps([row.method, row.max_attempts, profile], sort_keys=True)
        if key in done:  # "+RL" and "+R_beh" are the same run
            rows.append({**done[key], "table": row.table, "row": row.name})
            continue
        config = EvalConfig(max_attempts=row.max_attempts, generative=not fast, aupro=not fast)
        kwargs = {"reporter": reporter} if reporter is not None else {}
        result = evaluate(data, [row.method], out / slug(row.name), n_per_type=n_per_type, seed=seed,
                          profile=profile, config=config, **kwargs)
        method = run_result(result, row.method)
        summary.update(status="ok", type_accuracy=(method.get("type_accuracy", {}).get("image") or {}).get("accuracy"),
                       **{k: method["metrics"].get(k) for k in ("image_AUROC", "image_AP", "pixel_AUROC", "pixel_AP")},
                       judge_pass_rate=method["cost"]["judge_pass_rate"],
                       seconds_per_sample=method["cost"]["seconds_per_sample"])
        done[key] = summary
        rows.append(summary)
    return rows


def markdown_table(rows: list[dict[str, Any]], category: str) -> str:
    cols = ("type_accuracy", "image_AUROC", "pixel_AUROC", "pixel_AP", "judge_pass_rate", "seconds_per_sample")
    lines = [f"Ablations on {category} (harness metrics; type accuracy is the paper's Table 4 measure)", "",
             "| table | row | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['table']} | {r['row']} | {r['status']} |" + " |" * (len(cols) - 1))
            continue
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols]
        lines.append(f"| {r['table']} | {r['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@click.command("ablate")
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="One MVTec-layout category folder (e.g. ../shared/data/mvtec/grid).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (one subfolder per row).")
@click.option("--n", "n_per_type", default=4, show_default=True, type=int, help="Synthetic samples per defect type.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--profile", default="default", show_default=True, help="Base tool profile.")
@click.option("--sft-model", type=click.Path(path_type=Path), default=None, help="SFT policy folder (+SFT row).")
@click.option("--rl-model", type=click.Path(path_type=Path), default=None, help="GRPO policy, all three rewards.")
@click.option("--rl-task-model", type=click.Path(path_type=Path), default=None, help="GRPO policy, R_task only.")
@click.option("--rl-ref-model", type=click.Path(path_type=Path), default=None, help="GRPO policy, R_task + R_ref.")
@click.option("--table", "tables", multiple=True, type=click.Choice(["4", "5"]), default=("4", "5"), show_default=True)
@click.option("--full-metrics", is_flag=True, help="Also the generative metrics and AUPRO (slower).")
@click.option("--kr-threshold", default=4.0, show_default=True, type=float,
              help="δ of the rows with KR: the scripted policy calls KR when the judge's lower score is below it. "
                   "4 = after every failed attempt (a pass needs both scores >= 4); the profile default 3 calls it "
                   "only after an attempt scored below 3 (with the heuristic judge, whose failures score 3 or 4: never).")
@click.option("--native-tools", is_flag=True,
              help="The policy folders call tools in their chat template's format (SFT --native-tool-calls, GRPO "
                   "rollouts: environment, e.g. Qwen3-VL): run them as the vlm policy with native_tools.")
def ablate(data: Path, out: Path, n_per_type: int, seed: int, profile: str, sft_model: Path | None,
           rl_model: Path | None, rl_task_model: Path | None, rl_ref_model: Path | None, tables: tuple[str, ...],
           full_metrics: bool, kr_threshold: float, native_tools: bool) -> None:
    """Table 4 and Table 5 ablation rows, each scored with `local-agent evaluate`'s harness; one table out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluation.harness import EvaluationError, Reporter
    from ..evaluation.layout import LayoutError
    from ..images import atomic_write_bytes
    from ..profile import ProfileError, load_profile
    from ..tools.base import BackendUnavailable

    models = {"sft_model": sft_model, "rl_model": rl_model, "rl_task_model": rl_task_model,
              "rl_ref_model": rl_ref_model}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())

    def start(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda completed: progress.update(task, completed=completed)

    try:
        with progress:
            rows = run_ablation(data, out, models, n_per_type, seed, load_profile(profile), not full_metrics, tables,
                                Reporter(start=start, log=progress.console.print), kr_threshold, native_tools)
    except (EvaluationError, LayoutError, ProfileError, BackendUnavailable, ValueError) as e:
        raise click.ClickException(str(e)) from None
    table = markdown_table(rows, data.name)
    atomic_write_bytes(out / "ablation.md", table.encode())
    atomic_write_bytes(out / "ablation.json", json.dumps(rows, indent=1).encode())
    click.echo(table)
