"""The `local-agent` command line, through click's CliRunner and a real subprocess for start-up cost."""
import shutil
import subprocess
import sys

from click.testing import CliRunner

from local_agent.cli import main


def test_help_is_instant_and_imports_no_heavy_library():
    code = ("import sys; from local_agent.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'faiss', 'cv2') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "synth" in out and "HEAVY []" in out


def test_synth_command(shared_data, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted((shared_data / "mvtec" / "transistor" / "train" / "good").glob("*.png"))[:2]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(main, ["synth", str(src), "-c", "transistor", "-t", "bent_lead,cut_lead", "--n", "2",
                             "--out", str(out), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "done:" in r.output and (out / "report.html").is_file()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    again = runner.invoke(main, ["synth", str(src), "-c", "transistor", "-t", "bent_lead,cut_lead", "--n", "2",
                                 "--out", str(out), "--seed", "1"])
    assert again.exit_code == 0 and "resuming: 4 of 4" in again.output


def test_synth_bad_profile_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path), "-t", "crack", "--profile", "nope"])
    assert r.exit_code == 1 and "unknown profile 'nope'" in r.output
    assert len(r.output.strip().splitlines()) == 1
