"""Cut a document into passages that fit MiniLM's window, and name the document once.

Each passage is one section, or a run of its paragraphs/sentences when the section is long. Passages are embedded
as they are; the document's identity (title, category, type, aliases, material) is embedded once and fused into
every passage's vector by the index (see ``index.fuse``), so that a question naming only the object or only the
symptom still lands on the right document without paying for a header in every passage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .documents import Document

MAX_WORDS = 90  # about 120 word pieces: inside the embedder's 128-token window


@dataclass
class Chunk:
    section: str
    text: str


def _pieces(text: str, max_words: int) -> list[str]:
    """Greedy runs of paragraphs, then of sentences, each at most ``max_words`` words (a longer sentence is cut)."""
    units: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para.split()) <= max_words:
            units.append(para)
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            words = sentence.split()
            units.extend(" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words))
    out: list[str] = []
    current: list[str] = []
    count = 0
    for unit in units:
        n = len(unit.split())
        if current and count + n > max_words:
            out.append(" ".join(current))
            current, count = [], 0
        current.append(unit)
        count += n
    if current:
        out.append(" ".join(current))
    return out


def identity(doc: Document) -> str:
    """What the document is about, embedded once per document: title, category, type, aliases, material."""
    parts = [doc.title]
    names = ", ".join(doc.categories)
    if names or doc.type:
        parts.append(f"{names} {doc.type.replace('_', ' ')}".strip())
    if doc.aliases:
        parts.append("also called " + ", ".join(doc.aliases))
    if doc.material:
        parts.append(f"material {doc.material}")
    return ". ".join(p for p in parts if p)


def chunk_document(doc: Document, max_words: int = MAX_WORDS) -> list[Chunk]:
    return [Chunk(section=heading, text=piece) for heading, text in doc.sections for piece in _pieces(text, max_words)]
