"""``report.html``: a contact sheet a person can open — normal | anomaly | mask overlay | final prompt | scores."""
from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from .images import atomic_write_bytes

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}
th{background:#f3f3f3;position:sticky;top:0}img{display:block;width:160px}
.passed{color:#176317;font-weight:bold}.failed{color:#a15c00;font-weight:bold}.error{color:#b00020;font-weight:bold}
.prompt{max-width:420px}
"""


def write_report(out: Path) -> Path:
    """Rebuild the contact sheet from the manifest (so it always matches what is on disk, also after a resume)."""
    from .outputs import read_records
    from .synth import read_manifest

    out = Path(out)
    records = sorted(read_manifest(out / "manifest.jsonl").values(),
                     key=lambda r: (r["category"], r["anomaly_type"], r["index"]))
    left_out = read_records(out / "manifest.jsonl", lambda r: r["input"]).values()

    def src(rel: str) -> str:  # a folder name may hold '#', '?' or '%': quoted, the link still finds the file
        return html.escape(quote(rel))

    counts = {s: sum(r.get("status") == s for r in records) for s in ("passed", "failed", "error")}
    rows = []
    for r in records:
        status = r.get("status", "error")
        thumbs = r.get("thumbs")
        normal = f'<img src="{src(thumbs + "_normal.png")}" alt="normal">' if thumbs else ""
        anomaly = f'<img src="{src(r["image"])}" alt="anomaly">' if r.get("image") else ""
        overlay = f'<img src="{src(thumbs + "_overlay.png")}" alt="mask overlay">' if thumbs else ""
        prompt = html.escape((r.get("prompts") or [""])[-1])
        scores = ", ".join(f"#{s['image_index']}: L{s['location']} Q{s['quality']}" for s in r.get("scores", []))
        detail = html.escape(r.get("error") or "")
        rows.append(
            f"<tr><td>{html.escape(r['category'])}<br>{html.escape(r['anomaly_type'])}<br>#{r['index']:03d}</td>"
            f"<td>{normal}</td><td>{anomaly}</td><td>{overlay}</td><td class=prompt>{prompt}</td>"
            f"<td><span class={status}>{status}</span><br>{html.escape(scores)}<br>{detail}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>local-agent synth report</title>"
            f"<style>{_STYLE}</style></head><body><h1>local-agent synth</h1>"
            f"<p>{len(records)} samples: {counts['passed']} passed, {counts['failed']} failed the judge, "
            f"{counts['error']} errors.</p>"
            + "".join(f"<p class=error>input left out: {html.escape(str(r.get('input')))}: "
                      f"{html.escape(str(r.get('error')))}</p>" for r in left_out)
            + f"<table><tr><th>sample</th><th>normal</th><th>anomaly</th>"
            f"<th>mask overlay</th><th>final prompt</th><th>scores</th></tr>{''.join(rows)}</table></body></html>")
    path = out / "report.html"
    atomic_write_bytes(path, page.encode("utf-8", "replace"))
    return path
