"""`synth` as a library: MVTec layout, manifest, report, resume after interruption, bad inputs, workers."""
import json

import numpy as np
import pytest
from categories import small_category
from PIL import Image

from local_agent.synth import SynthError, read_manifest, synthesize


def test_end_to_end_on_grid_and_transistor(shared_data, tmp_path):
    grid = small_category(shared_data, tmp_path / "data", "grid", 3)
    transistor = small_category(shared_data, tmp_path / "data", "transistor", 3)
    out = tmp_path / "out"
    from local_agent.profile import load_profile

    profile = load_profile()   # the heuristic judge pinned: this checks the run's mechanics, not the judge's verdicts
    profile["tools"]["quality_eval"] = {"backend": "heuristic"}
    s = synthesize([grid, transistor], ["bent", "metal_contamination"], out, n=2, seed=1, profile=profile)
    assert s.planned == 8 and s.passed + s.failed == 8 and s.errors == 0 and s.passed >= 6
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 8
    for r in records.values():
        image = Image.open(out / r["image"])
        mask = np.asarray(Image.open(out / r["mask"]))
        assert image.size == (256, 256) and mask.shape == (256, 256)
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert image.mode == ("L" if r["category"] == "grid" else "RGB"), "grayscale in, grayscale out"
        if r["passed"]:
            assert r["image"] == f"{r['category']}/test/{r['anomaly_type']}/{r['index']:03d}.png"
            assert r["mask"] == f"{r['category']}/ground_truth/{r['anomaly_type']}/{r['index']:03d}_mask.png"
        assert r["prompts"][0].startswith("Using the provided image") and r["scores"]
        traj = json.loads((out / r["trajectory"]).read_text())
        assert traj["messages"][-1]["role"] == "assistant" and traj["answer"]["final_image_index"] >= 2
        assert (out / traj["images"]["2"]).is_file()
    report = (out / "report.html").read_text()
    assert report.count("<tr>") == 9 and "grid/test/bent/000.png" in report


def test_rerun_resumes_and_interrupted_run_loses_nothing(shared_data, tmp_path):
    grid = small_category(shared_data, tmp_path / "data", "grid", 3)
    out = tmp_path / "out"
    seen = []

    def interrupt_after_two(record):
        seen.append(record)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize([grid], ["glue"], out, n=4, seed=3, on_record=interrupt_after_two)
    assert len(read_manifest(out / "manifest.jsonl")) == 2
    first = {p: p.stat().st_mtime_ns for p in (out / "grid").rglob("*.png")}
    (out / "grid" / "test" / "glue" / ".003.png.junk.tmp").write_bytes(b"half")  # as if killed mid-write
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"category": "grid", "anomaly_ty')  # a torn last line
    s = synthesize([grid], ["glue"], out, n=4, seed=3)
    assert s.skipped == 2 and s.passed + s.failed == 2
    assert all(p.stat().st_mtime_ns == t for p, t in first.items()), "finished samples were rewritten"
    assert not list(out.rglob("*.tmp"))
    assert len(read_manifest(out / "manifest.jsonl")) == 4
    again = synthesize([grid], ["glue"], out, n=4, seed=3)
    assert again.skipped == 4 and again.ran == 0


def test_same_seed_same_images(shared_data, tmp_path):
    grid = small_category(shared_data, tmp_path / "data", "grid", 2)
    a = tmp_path / "a"
    b = tmp_path / "b"
    synthesize([grid], ["crack"], a, n=2, seed=9, save_trajectories=False)
    synthesize([grid], ["crack"], b, n=2, seed=9, save_trajectories=False, workers=2)
    for p in (a / "grid").rglob("*.png"):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(b / p.relative_to(a))))


def test_a_run_holds_blas_to_its_threads_and_gives_the_caller_its_own_back(shared_data, tmp_path):
    """NumPy's OpenBLAS opens one spinning thread per core by default: two workers on two cores ran four, and
    ``--workers 2`` was no faster than one. A worker's BLAS pools get ``threads``, as torch does."""
    import cv2  # noqa: F401  (an OpenBLAS of its own; importing torch resets them: both before the limits below)
    import torch  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    grid = small_category(shared_data, tmp_path / "data", "grid", 1)
    seen = []
    with threadpool_limits(limits=3, user_api="blas"):
        mine = blas()
        synthesize([grid], ["crack"], tmp_path / "out", n=1, seed=0, save_trajectories=False,
                   on_record=lambda _: seen.append(blas()))
        assert {k: blas()[k] for k in mine} == mine == dict.fromkeys(mine, 3), "the caller's own are restored"
    assert len(seen) == 1 and set(seen[0].values()) == {1} and set(mine) <= set(seen[0])


def test_bad_inputs_are_reported_and_do_not_stop_the_run(shared_data, tmp_path):
    src = tmp_path / "mixed"
    src.mkdir()
    rgb = np.asarray(Image.open(shared_data / "mvtec" / "transistor" / "train" / "good" / "000.png").convert("RGB"))
    Image.fromarray(rgb).save(src / "a_ok.png")
    Image.fromarray(rgb).convert("L").save(src / "b_gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(src / "c_rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(src / "d_16bit.png")
    Image.fromarray(rgb[:20, :20]).save(src / "e_tiny.png")
    (src / "f_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    (src / "g_text.jpg").write_text("not an image")
    Image.new("L", (5000, 40)).save(src / "h_huge.png")
    out = tmp_path / "out"
    s = synthesize([src, tmp_path / "does-not-exist"], ["scratch"], out, n=8, seed=0, category="transistor")
    assert s.planned == 8 and s.errors == 4 and s.passed + s.failed == 4
    records = read_manifest(out / "manifest.jsonl")
    by_source = {r["source"].rsplit("/", 1)[-1]: r for r in records.values()}
    assert "too small" in by_source["e_tiny.png"]["error"]
    assert "unreadable" in by_source["f_corrupt.png"]["error"] and "unreadable" in by_source["g_text.jpg"]["error"]
    assert "too large" in by_source["h_huge.png"]["error"]
    assert "grayscale" in by_source["b_gray.png"]["note"] and "alpha" in by_source["c_rgba.png"]["note"]
    assert "8-bit" in by_source["d_16bit.png"]["note"]
    assert any("does-not-exist" in w for w in s.warnings)
    assert all("\n" not in r.get("error", "") for r in records.values()), "errors are one line"


def test_unknown_names_warn_and_unwritable_output_fails_cleanly(shared_data, tmp_path):
    grid = small_category(shared_data, tmp_path / "data", "grid", 1)
    s = synthesize([grid], ["purple_smudge"], tmp_path / "o", n=1, category="widget")
    assert any("category 'widget'" in w for w in s.warnings)
    assert any("'purple_smudge'" in w and "stain" in w for w in s.warnings)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SynthError, match="cannot write to output folder"):
        synthesize([grid], ["crack"], blocker / "sub", n=1)
    with pytest.raises(SynthError, match="no input images"):
        synthesize([tmp_path / "nothing-here"], ["crack"], tmp_path / "o2", n=1)


def test_ranks_share_the_plan_and_merge(shared_data, tmp_path, monkeypatch):
    """Under `accelerate launch` each rank takes its share; the last to finish merges one manifest."""
    grid = small_category(shared_data, tmp_path / "data", "grid", 2)
    out = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        s = synthesize([grid], ["crack"], out, n=3, seed=0, save_trajectories=False)
        assert s.planned == (2 if rank == 0 else 1)
    assert (out / "manifest.rank0.jsonl").is_file() and (out / "manifest.rank1.jsonl").is_file()
    assert sorted(k[2] for k in read_manifest(out / "manifest.jsonl")) == [0, 1, 2]
    assert (out / "report.html").is_file()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert synthesize([grid], ["crack"], out, n=3, seed=0).skipped == 3, "a plain rerun resumes from the shards"


def test_synth_atlas_option_reads_a_plants_own_defects(shared_data, tmp_path):
    """--atlas points the prompt writer, painter and judge at a plant's atlas: with grid's own bent wires kept (no
    leave_out) the painted defect differs from the shipped atlas's; the same rows marked leave_out paint what the
    shipped one paints. A file that is no atlas stops in one line."""
    from click.testing import CliRunner

    from local_agent.cli import main
    from local_agent.tools.atlas import Atlas

    grid = small_category(shared_data, tmp_path / "data", "grid", 1)
    shipped = Atlas.load()
    Atlas(shipped.rows, shipped.sources, {}).save(tmp_path / "plant.json")
    Atlas(shipped.rows, shipped.sources, {"leave_out": True}).save(tmp_path / "held_out.json")
    images = {}
    for name, extra in (("shipped", []), ("plant", ["--atlas", str(tmp_path / "plant.json")]),
                        ("held_out", ["--atlas", str(tmp_path / "held_out.json")])):
        r = CliRunner().invoke(main, ["synth", str(grid), "--type", "bent", "--n", "1", "--no-trajectories",
                                      "--out", str(tmp_path / name), *extra])
        assert r.exit_code == 0, r.output
        images[name] = Image.open(next((tmp_path / name).rglob("bent/000.png"))).tobytes()
    assert images["held_out"] == images["shipped"] != images["plant"]
    (tmp_path / "bad.json").write_text("{}")
    r = CliRunner().invoke(main, ["synth", str(grid), "--type", "bent", "--n", "1", "--out", str(tmp_path / "x"),
                                  "--atlas", str(tmp_path / "bad.json")])
    assert r.exit_code == 1 and "bad.json" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
