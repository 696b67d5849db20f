"""Read a knowledge document into titled sections, or say in one line why it was skipped.

Markdown is the native format (YAML front matter: category, type, aliases, material). Plain text, PDF (pypdf),
HTML (BeautifulSoup) and JSON are turned into the same shape: a title, metadata and a list of (heading, text)
sections. A file that cannot be used raises :class:`Skipped` with the reason the summary shows.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEXT_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".rst": "text",
                 ".pdf": "pdf", ".html": "html", ".htm": "html", ".json": "json"}
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


class Skipped(Exception):
    """A file left out of the index; the message is the reason shown in the summary."""


@dataclass
class Document:
    """A loaded document. ``categories`` is a list: one VisA note may cover several boards or snacks."""

    title: str
    sections: list[tuple[str, str]]
    categories: list[str] = field(default_factory=list)
    type: str = ""
    aliases: list[str] = field(default_factory=list)
    material: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"title": self.title, "categories": self.categories, "type": self.type, "aliases": self.aliases,
                "material": self.material}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """YAML between a leading ``---`` line and the next ``---`` line; a malformed block is an error, not ignored."""
    if not text.startswith("---"):
        return {}, text
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)", text, re.S)
    if not m:
        raise Skipped("front matter starts with '---' but never ends")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise Skipped(f"front matter is not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(meta, dict):
        raise Skipped("front matter is not a mapping")
    return meta, text[m.end():]


def markdown_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, sections): the first level-1 heading is the title; every heading opens a section."""
    title, heading, lines, sections = "", "", [], []

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append((heading, text))
        lines.clear()

    for line in body.splitlines():
        m = _HEADING.match(line)
        if m:
            flush()
            if len(m.group(1)) == 1 and not title:
                title, heading = m.group(2), ""
            else:
                heading = m.group(2)
        else:
            lines.append(line)
    flush()
    return title, sections


def _from_meta(meta: dict[str, Any], title: str, sections: list[tuple[str, str]], fallback_title: str) -> Document:
    known = {"category", "categories", "type", "aliases", "material", "title"}
    return Document(title=str(meta.get("title") or title or fallback_title), sections=sections,
                    categories=_as_list(meta.get("category")) + _as_list(meta.get("categories")),
                    type=str(meta.get("type") or ""), aliases=_as_list(meta.get("aliases")),
                    material=str(meta.get("material") or ""),
                    extra={k: v for k, v in meta.items() if k not in known})


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise Skipped("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Skipped("not UTF-8 text")


def _paragraph_sections(text: str, heading: str = "") -> list[tuple[str, str]]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [(heading, p) for p in paragraphs]


def _load_pdf(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [(f"page {i + 1}", page.extract_text() or "") for i, page in enumerate(reader.pages)]
    except (PdfReadError, ValueError, KeyError, OSError) as e:
        raise Skipped(f"unreadable PDF ({type(e).__name__}: {str(e)[:80]})")
    title = str((reader.metadata or {}).get("/Title") or "") if reader.metadata else ""
    sections = [(h, t.strip()) for h, t in pages if t.strip()]
    return _from_meta({}, title, sections, path.stem)


def _load_html(text: str, path: Path) -> Document:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines = []
    for el in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td"]):
        if el.find_parent(["p", "li", "td"]) is not None:  # nested block: its parent already holds the text
            continue
        words = el.get_text(" ", strip=True)
        if not words:
            continue
        lines.append(f"{'#' * int(el.name[1])} {words}" if el.name[0] == "h" else words + "\n")
    h1, sections = markdown_sections("\n".join(lines))
    return _from_meta({}, title or h1, sections, path.stem)


def _json_leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _json_leaves(v, path + (str(k),))]
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return [(path, "; ".join(value))] if value else []
        return [leaf for v in value for leaf in _json_leaves(v, path)]
    if isinstance(value, str) and value.strip():
        return [(path, value.strip())]
    return []


def _load_json(text: str, path: Path) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise Skipped(f"invalid JSON ({e.msg} at line {e.lineno})")
    if isinstance(data, dict):
        body = next((data[k] for k in ("text", "content", "body") if isinstance(data.get(k), str)), None)
        if body is not None:  # one document with metadata keys beside its text
            meta = {k: v for k, v in data.items() if k not in ("text", "content", "body")}
            title, sections = markdown_sections(body)
            return _from_meta(meta, title, sections or _paragraph_sections(body), path.stem)
    # Anything else (e.g. {"bottle": {"broken_large": "..."}}): one section per top-level key, a line per leaf.
    grouped: dict[str, list[str]] = {}
    for keys, leaf in _json_leaves(data):
        head = keys[0] if keys else ""
        label = " ".join(keys[1:]).replace("_", " ")
        grouped.setdefault(head, []).append(f"{head.replace('_', ' ')} {label}: {leaf}".strip())
    return _from_meta({}, "", [(h, "\n\n".join(lines)) for h, lines in grouped.items()], path.stem)


def load_document(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Read ``path`` into a :class:`Document` or raise :class:`Skipped` with the reason."""
    path = Path(path)
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    try:
        size = path.stat().st_size
        if size == 0:
            raise Skipped("empty file")
        if size > max_bytes:
            raise Skipped(f"too large ({size / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB limit)")
        if kind is None:
            with open(path, "rb") as f:
                head = f.read(8192)
            if b"\x00" in head:
                raise Skipped("binary file")
            raise Skipped(f"unsupported file type '{path.suffix or path.name}' (use md, txt, pdf, html or json)")
        if kind == "pdf":
            doc = _load_pdf(path)
        else:
            text = _decode(path.read_bytes())
            if kind == "markdown":
                meta, body = split_front_matter(text)
                title, sections = markdown_sections(body)
                doc = _from_meta(meta, title, sections, path.stem)
            elif kind == "html":
                doc = _load_html(text, path)
            elif kind == "json":
                doc = _load_json(text, path)
            else:
                meta, body = split_front_matter(text)
                doc = _from_meta(meta, "", _paragraph_sections(body), path.stem)
    except OSError as e:
        raise Skipped(f"unreadable ({e.strerror or type(e).__name__})")
    if not doc.sections:
        raise Skipped("no text found")
    return doc
