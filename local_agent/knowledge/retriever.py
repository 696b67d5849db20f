"""The ``faiss`` backend of the knowledge_retrieval tool.

``retrieve(item_name, anomaly_type, query, k)``: passages of the document whose front matter names this category
and type (or one of its aliases) come first, ordered by similarity to the query; the rest of the list is the
nearest knowledge by cosine similarity over the whole index, so unknown names still get an answer.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..tools.base import BackendUnavailable
from . import default_index_path, default_source
from .index import IndexMissing, build_index, fuse, load_index

SEED = ".index"  # a knowledge folder may carry a prebuilt index (the curated base does): it seeds the cache index


def norm_name(name: str) -> str:
    """``Metal-Nut`` / ``metal_nut`` / ``metal nut`` all read the same."""
    return " ".join(re.sub(r"[_\-/]+", " ", name.lower()).split())


class FaissKnowledge:
    """Options (profile keys): ``source`` knowledge folder (default: the curated ``knowledge/``), ``index`` index
    folder (default: under ``$LOCAL_AGENT_HOME``), ``update`` re-index changed files of ``source`` at first use,
    ``device`` auto|cpu|cuda for the embedder and FAISS."""

    def __init__(self, source: str | None = None, index: str | None = None, update: bool = True,
                 device: str = "auto"):
        from .embedder import model_dir

        self.source = Path(source) if source else default_source()
        self.index_path = Path(index) if index else default_index_path(self.source)
        self.update, self.device = update, device
        model_dir()  # fail now, in one line, if the weights package is missing
        prebuilt = (self.index_path / "CURRENT").is_file()
        if update and not self.source.is_dir() and (source is not None or not prebuilt):
            raise BackendUnavailable(f"knowledge_retrieval backend 'faiss': knowledge folder {self.source} not found")
        self.summary = None
        self.stored = None

    def load(self) -> "FaissKnowledge":
        """Load the model, update the index from ``source`` (only changed files are embedded) and read it.

        Deferred to the first query so that building the tools stays instant; idempotent.
        """
        if self.stored is not None:
            return self
        from .embedder import shared_embedder

        self.embedder = shared_embedder(self.device)
        if self.update and self.source.is_dir():
            self.summary = build_index(self.source, self.index_path, embedder=self.embedder, seed=self.source / SEED)
        try:
            stored = load_index(self.index_path)
        except IndexMissing as e:
            raise BackendUnavailable(f"knowledge_retrieval backend 'faiss': {e}")
        self.index = self._to_device(stored.index, self.device)
        self.names: dict[str, tuple[set[str], set[str]]] = {}  # source -> (category names, type names)
        for rel, entry in stored.manifest["files"].items():
            meta = entry["meta"]
            types = {norm_name(meta["type"])} if meta["type"] else set()
            types |= {norm_name(a) for a in meta["aliases"]}
            self.names[rel] = ({norm_name(c) for c in meta["categories"]}, types)
        self.stored = stored
        return self

    @staticmethod
    def _to_device(index: Any, device: str) -> Any:
        """FAISS on the GPU when a GPU build of faiss is installed and a GPU is visible; the CPU otherwise."""
        import faiss

        if device == "cpu" or faiss.get_num_gpus() == 0:
            return index
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)

    def exact_sources(self, item_name: str, anomaly_type: str) -> list[str]:
        self.load()
        item, kind = norm_name(item_name), norm_name(anomaly_type)
        return sorted(rel for rel, (cats, types) in self.names.items() if item in cats and kind in types)

    def _passage(self, row: int, score: float) -> dict[str, Any]:
        chunk = self.stored.chunks[row]
        source = chunk["source"] + (f"#{chunk['section']}" if chunk["section"] else "")
        return {"text": chunk["text"], "source": source, "score": round(float(score), 4)}

    def _query(self, text: str) -> np.ndarray:
        q = self.embedder.encode_query(text)[None, :]
        return fuse(q, q)[0]

    def search(self, text: str, k: int) -> list[tuple[int, float]]:
        """(row, cosine) of the ``k`` nearest passages."""
        self.load()
        return self._nearest(self._query(text), k)

    def _nearest(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        n = self.index.ntotal
        if n == 0 or k <= 0:
            return []
        scores, rows = self.index.search(qvec[None, :], min(k, n))
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def search_documents(self, text: str, k: int, vector: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Documents ranked by their best passage (what the recall benchmark measures). ``vector``: the text's
        embedding when the caller already has it (batch evaluation)."""
        self.load()
        qvec = self._query(text) if vector is None else fuse(vector[None, :], vector[None, :])[0]
        best: dict[str, float] = {}
        for row, score in self._nearest(qvec, max(50, 8 * k)):
            src = self.stored.chunks[row]["source"]
            best[src] = max(best.get(src, -1.0), score)
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def retrieve(self, item_name: str, anomaly_type: str, query: str = "", k: int = 3) -> list[dict[str, Any]]:
        self.load()
        words = " ".join(w for w in (norm_name(item_name), norm_name(anomaly_type), query.strip()) if w)
        if not words or self.index.ntotal == 0:
            return []
        qvec = self._query(words)
        exact: list[tuple[float, int]] = []  # (similarity, row) of every passage of an exactly named document
        for rel in self.exact_sources(item_name, anomaly_type):
            lo, hi = self.stored.manifest["files"][rel]["rows"]
            exact.extend((float(s), lo + i) for i, s in enumerate(self.stored.vectors[lo:hi] @ qvec))
        exact.sort(key=lambda sr: (-sr[0], sr[1]))
        passages = [self._passage(row, score) for score, row in exact]
        taken = {row for _, row in exact}
        if len(passages) < k:
            n = min(self.index.ntotal, k + len(taken))
            scores, rows = self.index.search(qvec[None, :], n)
            for row, score in zip(rows[0], scores[0]):
                if row >= 0 and int(row) not in taken:
                    passages.append(self._passage(int(row), score))
        return passages[:k]
