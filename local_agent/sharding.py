"""Scale-out for ``local-agent synth`` under ``accelerate launch`` / ``torchrun``: one process per GPU.

Each process takes every ``world_size``-th job (by its position in the deterministic plan), writes only its own
``manifest.rank<R>.jsonl`` (so no two processes append to one file), and resumes from its own shard. Rank 0 merges
the shards into ``manifest.jsonl`` at the end; a rerun with another world size still resumes, because the merged
manifest and every shard are read back before planning.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")
SHARD_GLOB = "manifest.rank*.jsonl"


def process_rank() -> tuple[int, int]:
    """(rank, world_size) from the launcher's environment (accelerate and torchrun set RANK and WORLD_SIZE).

    A plain ``local-agent synth`` (no launcher) is rank 0 of 1. LOCAL_RANK alone (a single-node launcher that set
    nothing else) counts as rank LOCAL_RANK of LOCAL_WORLD_SIZE.
    """
    env = os.environ
    rank = env.get("RANK", env.get("LOCAL_RANK"))
    world = env.get("WORLD_SIZE", env.get("LOCAL_WORLD_SIZE"))
    if rank is None or world is None:
        return 0, 1
    try:
        r, w = int(rank), int(world)
    except ValueError as e:
        raise ValueError(f"launcher environment: RANK={rank!r} WORLD_SIZE={world!r} are not integers") from e
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"launcher environment: RANK={r} is outside WORLD_SIZE={w}")
    return r, w


def bind_local_gpu() -> int | None:
    """Make plain ``device: cuda`` in a profile mean this process's own GPU (``cuda:LOCAL_RANK``).

    accelerate/torchrun start one process per GPU but leave every GPU visible to each; without this all ranks
    would load their models onto GPU 0. Returns the GPU index bound, or None (no launcher or no CUDA).
    """
    local = os.environ.get("LOCAL_RANK")
    if local is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(local) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return index


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share: items rank, rank + world_size, … (stable for a fixed plan, balanced to within one)."""
    return list(items[rank::world_size])


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    """Where a rank appends its manifest lines; a single process keeps the plain ``manifest.jsonl``."""
    return Path(out) / ("manifest.jsonl" if world_size == 1 else f"manifest.rank{rank}.jsonl")


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill while being written: that sample reruns
                continue
            yield line


def merge_manifests(out: Path, key_fields: Sequence[str] = ("category", "anomaly_type", "index")) -> int:
    """Merge ``manifest.rank*.jsonl`` (and an existing ``manifest.jsonl``) into ``manifest.jsonl``, atomically.

    A sample that appears more than once (a rerun with another world size) keeps its last record. Shards are left
    in place (they are what each rank resumes from). Returns the number of records written.
    """
    from .images import atomic_write_bytes

    out = Path(out)
    sources = ([out / "manifest.jsonl"] if (out / "manifest.jsonl").is_file() else []) + sorted(
        out.glob(SHARD_GLOB), key=lambda p: int(p.name.split("rank")[1].split(".")[0]))
    records: dict[tuple, str] = {}
    for path in sources:
        for line in _lines(path):
            record = json.loads(line)
            key = ("input", record["input"]) if "input" in record else tuple(record.get(k) for k in key_fields)
            records[key] = line  # a bad input has a record of its own, keyed by its path
    ordered = sorted(records.items(), key=lambda kv: tuple(str(v) if not isinstance(v, int) else f"{v:09d}"
                                                           for v in kv[0]))
    atomic_write_bytes(out / "manifest.jsonl", "".join(line + "\n" for _, line in ordered).encode())
    return len(ordered)


def finished_keys(out: Path, key_fields: Sequence[str] = ("category", "anomaly_type", "index")) -> set[tuple]:
    """Keys of every sample recorded in the merged manifest or any shard: what a resumed rank skips."""
    out = Path(out)
    keys: set[tuple] = set()
    for path in [out / "manifest.jsonl", *out.glob(SHARD_GLOB)]:
        if path.is_file():
            keys.update(tuple(json.loads(line).get(k) for k in key_fields) for line in _lines(path))
    return keys


def _marker(out: Path, rank: int) -> Path:
    return Path(out) / f"manifest.rank{rank}.done"


def start_shard(out: Path, rank: int) -> None:
    """Forget this rank's "done" marker from an earlier run (call before the rank starts its jobs)."""
    _marker(out, rank).unlink(missing_ok=True)


def finish_shard(out: Path, rank: int, world_size: int) -> bool:
    """Mark this rank done; if every rank is done, merge the shards. True when this call merged.

    No process group is needed: the last rank to finish sees every marker and merges. Two ranks finishing at the
    same moment may both merge; the merge is idempotent and atomic, so that is harmless.
    """
    from .images import atomic_write_bytes

    atomic_write_bytes(_marker(out, rank), b"done\n")
    if all(_marker(out, r).is_file() for r in range(world_size)):
        merge_manifests(out)
        return True
    return False
