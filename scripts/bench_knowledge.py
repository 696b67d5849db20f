"""Benchmark the knowledge base: recall@1/@3 on the query set, query latency, and indexing time for 1,000 documents.

    python scripts/bench_knowledge.py                       # everything
    python scripts/bench_knowledge.py --docs 0              # recall and latency only

Recall is measured at document level on pure free-text queries (no category or type given), the hardest case
for the retriever: with names, exact matches are ranked first by construction. The 1,000 documents are the
curated ones copied with their sentences shuffled and a lot number in the title, so every file is different and is
embedded. Wall time on a shared machine depends on other load; CPU seconds (user+sys of this process) are printed
beside it. Everything runs offline in a temporary LOCAL_AGENT_HOME.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    """Other processes inflate wall time: every timing is printed with the load average."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def perturbed_copies(source: Path, out: Path, n: int, seed: int = 0) -> None:
    """``n`` markdown files made from the curated ones: same length and format, different text."""
    rng = random.Random(seed)
    files = sorted(source.rglob("*.md"))
    for i in range(n):
        text = files[i % len(files)].read_text()
        head, _, body = text.partition("\n# ")
        body = "# " + body
        sections = re.split(r"(?m)^(?=## )", body)
        shuffled = []
        for sec in sections:
            lines = sec.split("\n", 1)
            if len(lines) == 2 and sec.startswith("## "):
                sentences = re.split(r"(?<=[.!?])\s+", lines[1].strip())
                rng.shuffle(sentences)
                sec = lines[0] + "\n" + " ".join(sentences) + "\n\n"
            shuffled.append(sec)
        doc = head + "\n" + "".join(shuffled).replace("\n", f" (lot {i:04d})\n", 1)
        path = out / f"d{i // 100:02d}" / f"doc{i:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knowledge", type=Path, default=REPO / "knowledge")
    parser.add_argument("--queries", type=Path, default=REPO / "tests" / "data" / "knowledge_queries.jsonl")
    parser.add_argument("--docs", type=int, default=1000, help="documents for the indexing benchmark (0: skip)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for indexing (default: the cores other work leaves free)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LOCAL_AGENT_HOME"] = str(Path(tmp) / "home")
        import torch

        from local_agent.knowledge.embedder import Embedder, batch_threads
        from local_agent.knowledge.index import build_index
        from local_agent.knowledge.retriever import FaissKnowledge

        print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, {load()}")
        t0, c0 = time.perf_counter(), cpu_seconds()
        kr = FaissKnowledge(source=str(args.knowledge)).load()
        print(f"curated base: {len(kr.stored.manifest['files'])} documents, {kr.index.ntotal} passages; model load + "
              f"first build {time.perf_counter() - t0:.1f}s wall, {cpu_seconds() - c0:.1f}s cpu; {load()}")

        queries = [json.loads(line) for line in args.queries.read_text().splitlines() if line.strip()]
        hit1 = hit3 = 0
        for q in queries:
            top = [doc for doc, _ in kr.search_documents(q["query"], 3)]
            hit1 += top[:1] == [q["expected"]]
            hit3 += q["expected"] in top
        print(f"recall@1 {hit1 / len(queries):.3f}  recall@3 {hit3 / len(queries):.3f}  ({len(queries)} queries)")

        latencies = []
        c0 = cpu_seconds()
        for q in queries:  # the tool's call: names plus free text
            category, kind = q["expected"].removesuffix(".md").split("/")[-2:]
            t = time.perf_counter()
            kr.retrieve(category, kind, q["query"], k=3)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        print(f"retrieve latency: median {statistics.median(latencies):.1f} ms, "
              f"p95 {latencies[int(0.95 * len(latencies)) - 1]:.1f} ms, "
              f"cpu {(cpu_seconds() - c0) / len(queries) * 1000:.1f} ms per query; {load()}")

        qvec = kr._query(queries[0]["query"])
        t = time.perf_counter()
        for _ in range(200):
            kr._nearest(qvec, 3)
        print(f"of which FAISS search alone: {(time.perf_counter() - t) / 200 * 1000:.2f} ms "
              f"({kr.index.ntotal} passages, IndexFlatIP)")

        if args.docs:
            corpus = Path(tmp) / "corpus"
            perturbed_copies(args.knowledge, corpus, args.docs)
            embedder = Embedder()
            threads = args.threads or batch_threads()
            t0, c0 = time.perf_counter(), cpu_seconds()
            summary = build_index(corpus, Path(tmp) / "bench-index", embedder=embedder, threads=threads)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            print(f"indexing {summary.documents} documents ({summary.chunks} passages): {wall:.1f}s wall, "
                  f"{cpu:.1f}s cpu ({summary.embedded_chunks} texts embedded on {threads} threads); {load()}")
            for path in sorted(corpus.rglob("*.md"))[:10]:
                path.write_text(path.read_text() + "\nEdited after the first build.\n")
            t0 = time.perf_counter()
            summary = build_index(corpus, Path(tmp) / "bench-index", embedder=embedder, threads=threads)
            print(f"re-index after editing 10 files: {len(summary.embedded)} embedded, {len(summary.reused)} reused, "
                  f"{time.perf_counter() - t0:.1f}s wall")


if __name__ == "__main__":
    main()
