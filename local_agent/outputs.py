"""One rule for every path made from user text, and the JSON-lines files that record what is on disk.

Names (a ``--type``, a ``--category``, an image's file stem, a gallery category) become exactly one folder or file
name component with :func:`safe_name`: separators, control characters, leading dots and surrounding spaces are
replaced, and a changed (or over-long) name gets a short hash of the original so two different names never share
a folder. Names that are already safe (``crack``, ``metal_nut``, ``划痕``) are kept as they are. The original text
is kept in the manifest. :func:`inside` then checks the resolved path is under the output folder (a symlinked
folder pointing elsewhere is refused too).

Manifests (``manifest.jsonl``, ``answers.jsonl``) are appended one fsynced line per finished item and compacted
atomically at the start and end of a run: one current record per key, torn lines dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

MAX_NAME_BYTES = 96   # leaves room for "NNN_mask.png", temp-file affixes and the 255-byte limit of most file systems
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]+")


class UnsafePath(ValueError):
    """A derived path would leave the output folder (one line for the console)."""


def safe_name(text: str) -> str:
    """``text`` as one safe file-name component: the same text when it already is one, else a cleaned text plus
    ``-`` and 8 hex digits of the original's SHA-1 (so ``a/b`` and ``a_b`` stay apart)."""
    text = str(text)
    clean = unicodedata.normalize("NFC", text).encode("utf-8", "replace").decode()  # undecodable bytes: "?"
    clean = _UNSAFE.sub("_", clean).strip()
    clean = re.sub(r"^\.+", lambda m: "_" * len(m.group()), clean)   # ".", "..", ".hidden"
    if clean == text and 0 < len(clean.encode()) <= MAX_NAME_BYTES:
        return clean
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    clean = clean.encode()[:MAX_NAME_BYTES - 9].decode("utf-8", "ignore").rstrip() or "_"
    return f"{clean}-{digest}"


def renamed(names: Iterable[str], what: str) -> list[str]:
    """One warning per name that does not serve as a folder name as given."""
    return [f"{what} {name!r} is not a safe folder name: written as '{safe_name(name)}' (the manifest keeps "
            f"the original)" for name in names if safe_name(name) != name]


def inside(root: Path, rel: str | Path) -> Path:
    """``root / rel``, refused with :class:`UnsafePath` unless it resolves inside ``root``."""
    root = Path(root)
    path = root / rel
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise UnsafePath(f"{path}: resolves to {path.resolve()}, outside the output folder {base}; refused")
    return path


# ------------------------------------------------------------------------------------------ JSON-lines records
def check_record_file(path: Path) -> None:
    """A manifest path that exists must be a file: one line naming it, not a traceback later."""
    if path.exists() and not path.is_file():
        raise UnsafePath(f"{path} exists but is not a file; move it away or choose another output folder")


def read_records(path: Path, key: Callable[[dict[str, Any]], Hashable]) -> dict[Hashable, dict[str, Any]]:
    """Last record per ``key(record)``. Lines that are not whole JSON records (a torn last line after kill -9,
    stray text) are ignored, as are records ``key`` cannot read (raise KeyError/TypeError/ValueError)."""
    records: dict[Hashable, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            r = json.loads(line)
            records[key(r)] = r
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return records


def append_record(path: Path, record: dict[str, Any], default: Callable[[Any], Any] | None = None) -> None:
    """One write of one whole line, flushed and fsynced: a crash loses at most the line being written."""
    line = json.dumps(record, ensure_ascii=False, default=default) + "\n"
    # a file name that is not UTF-8 (a lone surrogate) is written as its JSON escape: still one valid record
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_records(path: Path, records: Iterable[dict[str, Any]], default: Callable[[Any], Any] | None = None) -> None:
    """Replace ``path`` atomically with exactly these records (the compacted manifest)."""
    from .images import atomic_write_bytes

    text = "".join(json.dumps(r, ensure_ascii=False, default=default) + "\n" for r in records)
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def listed_files(record: dict[str, Any], fields: Iterable[str]) -> set[str]:
    """The relative paths a record names in ``fields`` (``thumbs`` is a stem with two files)."""
    files = set()
    for f in fields:
        value = record.get(f)
        if not value:
            continue
        if f == "thumbs":
            files.update({f"{value}_normal.png", f"{value}_overlay.png"})
        else:
            files.add(value)
    return files


def remove_replaced(root: Path, old: dict[str, Any] | None, new: dict[str, Any], fields: Iterable[str]) -> None:
    """Delete the files an earlier record of the same item named that its new record no longer names (a sample
    that passed before and failed now must not leave its old image in test/)."""
    if not old:
        return
    fields = list(fields)
    for rel in listed_files(old, fields) - listed_files(new, fields):
        try:
            inside(root, rel).unlink(missing_ok=True)
        except (UnsafePath, OSError):
            continue
