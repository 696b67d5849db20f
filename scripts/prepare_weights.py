#!/usr/bin/env python
"""Fetch open weights into weights/ on a CONNECTED machine, with checksums, for transfer to an air-gapped plant.

This is the only code in the project that touches a network, and the package never imports it. Usage:

    python scripts/prepare_weights.py --list
    python scripts/prepare_weights.py --profile gpu-sd2-qwen2.5vl            # everything that profile needs
    python scripts/prepare_weights.py qwen2.5-vl-7b-instruct metauas-256 --metauas-dir ~/Downloads
    python scripts/prepare_weights.py --verify                               # on the air-gapped side, after copying

Entries come from weights/manifest.yaml. Hugging Face repositories are fetched with huggingface_hub's
snapshot_download (gated ones, e.g. FLUX.1 Fill, need `huggingface-cli login` and an accepted licence). MetaUAS
checkpoints have no hub repository in the manifest: download metauas-256.ckpt / metauas-512.ckpt from the official
MetaUAS release (github.com/gaobb/MetaUAS, see its README) and pass their folder with --metauas-dir. Every file gets
a SHA-256 line in weights/SHA256SUMS (the `sha256sum -c` format) so the copy can be verified after transfer.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "weights" / "manifest.yaml"
SUMS = ROOT / "weights" / "SHA256SUMS"
# Only what the loaders read: skip duplicate formats (.ckpt/.bin when .safetensors exists, onnx, flax, openvino).
IGNORE = ["*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot", "openvino*", "*.ckpt", "*.pt"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def profile_entries(profile: str, entries: dict) -> list[str]:
    data = yaml.safe_load((ROOT / "local_agent" / "profiles" / f"{profile}.yaml").read_text())
    wanted = set()
    for config in [*data["tools"].values(), data.get("policy", {})]:
        for key in ("model", "checkpoint"):
            if key in config:
                wanted.add(str(config[key]))
    return [name for name, e in entries.items() if e["folder"] and (
        e["folder"] in wanted or any(f"{e['folder']}/{f}" in wanted for f in e["files"]))]


def fetch(name: str, entry: dict, metauas_dir: Path | None) -> Path:
    folder = ROOT / entry["folder"]
    if entry["repo"]:
        from huggingface_hub import snapshot_download

        allow = None
        if entry.get("variant"):  # e.g. SDXL inpainting: fetch only the fp16 weights and the configs
            allow = ["*.json", "*.txt", "*.model", f"*.{entry['variant']}.safetensors"]
        snapshot_download(entry["repo"], local_dir=folder, allow_patterns=allow, ignore_patterns=IGNORE)
    else:
        if metauas_dir is None:
            raise SystemExit(f"{name}: no hub repository; download {', '.join(entry['files'])} from the official "
                             "release and pass its folder with --metauas-dir")
        folder.mkdir(parents=True, exist_ok=True)
        for f in entry["files"]:
            shutil.copy2(metauas_dir / f, folder / f)
    missing = [f for f in entry["files"] if not (folder / f).is_file()]
    if missing:
        print(f"warning: {name}: expected file(s) not in the download: {', '.join(missing)}", file=sys.stderr)
    return folder


def write_sums(folders: list[Path]) -> None:
    lines = dict(line.split("  ", 1)[::-1] for line in SUMS.read_text().splitlines() if "  " in line) \
        if SUMS.is_file() else {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
            lines[str(path.relative_to(ROOT))] = sha256(path)
    tmp = SUMS.with_suffix(".tmp")
    tmp.write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(lines.items())))
    tmp.replace(SUMS)


def verify() -> int:
    bad = 0
    for line in SUMS.read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = ROOT / rel
        if not path.is_file() or sha256(path) != digest:
            print(f"FAILED {rel}")
            bad += 1
    print("all files match" if not bad else f"{bad} file(s) missing or changed")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="manifest entries to fetch")
    parser.add_argument("--profile", help="fetch every entry this packaged profile uses")
    parser.add_argument("--metauas-dir", type=Path, help="folder holding the downloaded MetaUAS .ckpt files")
    parser.add_argument("--list", action="store_true", help="list manifest entries and exit")
    parser.add_argument("--verify", action="store_true", help="check weights/ against weights/SHA256SUMS")
    args = parser.parse_args()
    entries = yaml.safe_load(MANIFEST.read_text())["entries"]
    if args.list:
        for name, e in entries.items():
            print(f"{name:40s} {e['folder'] or '(pip package)':50s} ~{e['vram_gb']} GB  {e['license']}")
        return 0
    if args.verify:
        return verify()
    names = list(args.names) + (profile_entries(args.profile, entries) if args.profile else [])
    unknown = [n for n in names if n not in entries]
    if unknown or not names:
        parser.error(f"unknown entries: {', '.join(unknown)}" if unknown else "name entries or give --profile")
    folders = [fetch(n, entries[n], args.metauas_dir) for n in dict.fromkeys(names) if entries[n]["folder"]]
    write_sums(folders)
    print(f"fetched {len(folders)} folder(s); checksums in {SUMS.relative_to(ROOT)}; copy weights/ to the plant and "
          "run `python scripts/prepare_weights.py --verify` and `local-agent doctor` there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
