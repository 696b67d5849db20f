"""The judge's self-check on a plant's own defects, and the loop that refines only where the judge passes it."""
from __future__ import annotations

import json

import pytest
import yaml
from categories import small_category
from click.testing import CliRunner

from local_agent.cli import main
from local_agent.tools.atlas import Atlas
from local_agent.tools.judge_check import self_check


def _plant(fakes_like_reals: str | None = None) -> Atlas:
    """The shipped rows as a plant's atlas (no leave_out: each category's judge reads its own defects). With
    ``fakes_like_reals``: that category's counterfeits are copies of its real defects, so no judge can fail them."""
    shipped = Atlas.load()
    fakes = shipped.counterfeits
    if fakes_like_reals:
        fakes = [c for c in fakes if c["category"] != fakes_like_reals] + [
            {**r, "mode": "faint"} for r in shipped.rows if r["category"] == fakes_like_reals]
    return Atlas(shipped.rows, shipped.sources, {}, fakes)


def test_self_check_measures_the_judge_on_the_categorys_own_defects_leave_one_out():
    """On screw's 100-odd real defects the judge passes most and fails most bad edits of them; when the bad edits
    look exactly like the real ones, it cannot fail them and is not trusted. The shipped atlas (leave_out) and a
    category the atlas does not hold give no check: there is nothing of their own to measure on."""
    check = self_check(_plant(), "screw")
    assert check.n_real == sum(r["category"] == "screw" for r in Atlas.load().rows) and check.n_bad > check.n_real
    assert check.real_pass >= 0.7 and check.bad_fail >= 0.7 and check.trusted
    fooled = self_check(_plant(fakes_like_reals="screw"), "screw")
    assert fooled.n_real == check.n_real and fooled.bad_fail < 0.3 and not fooled.trusted
    assert self_check(Atlas.load(), "screw") is None and self_check(_plant(), "widget") is None


def test_each_real_defect_is_judged_without_itself():
    """Five real defects of a type, one of them 30x larger than the other four: judged among all five (itself
    included) it is inside the real range and passes; left out, as a new defect would be, it is far beyond the other
    four and fails. A category with one defect and no bad edits has nothing to measure trust on."""
    from local_agent.tools.calibrated_judge import judged_rows, tail_scores

    shipped = Atlas.load()
    others = [r for r in shipped.rows if r["category"] != "screw"]
    base = [r for r in shipped.rows if r["category"] == "screw" and r["type"] == "scratch_head"][:5]
    mine = [dict(r) for r in base]
    mine[0].update(area_frac_object=30 * mine[0]["area_frac_object"], area_frac_image=30 * mine[0]["area_frac_image"])
    atlas = Atlas(others + mine, shipped.sources, {})
    rows, object_rows = judged_rows(atlas, "screw", "scratch_head")
    assert len(rows) == 5
    location, quality, _ = tail_scores(mine[0], rows, object_rows, False)
    assert location >= 4 and quality >= 4                       # with itself among the five: typical
    plain = self_check(Atlas(others + base, shipped.sources, {}), "screw")
    big = self_check(atlas, "screw")
    assert big.n_real == plain.n_real == 5
    assert big.real_pass == pytest.approx(plain.real_pass - 0.2)     # left out, it fails

    one = Atlas(others + base[:1], shipped.sources, {})
    check = self_check(one, "screw")
    assert check.n_real == 1 and check.n_bad == 0 and not check.trusted and "no bad edits" in check.words()


def test_with_trust_auto_synth_refines_only_where_the_judge_passes_its_self_check(shared_data, tmp_path):
    """A plant atlas whose judge cannot fail grid's bad edits, and ``trust: auto``: synth says why in one line and
    makes one attempt per sample; evaluate's key of the agent's samples says one attempt. The default (``always``)
    refines as before."""
    from local_agent.evaluation.synthesis import synthesis_inputs
    from local_agent.profile import load_profile, with_atlas
    from local_agent.synth import loop_attempts

    grid = small_category(shared_data, tmp_path / "data", "grid", 2)
    _plant(fakes_like_reals="grid").save(tmp_path / "fooled.json")
    _plant().save(tmp_path / "plant.json")
    default = with_atlas(load_profile(), tmp_path / "fooled.json")
    profile = _trust(default, "auto")
    warnings: list[str] = []
    assert loop_attempts(profile, ["grid", "widget"], 3, warnings) == {"grid": 1, "widget": 3}
    assert len(warnings) == 1 and warnings[0].startswith("grid: the judge passes") and "one attempt" in warnings[0]
    assert loop_attempts(default, ["grid"], 3) == loop_attempts(_trust(default, "always"), ["grid"], 3) == {"grid": 3}
    trusted = _trust(with_atlas(load_profile(), tmp_path / "plant.json"), "auto")
    assert loop_attempts(trusted, ["grid"], 3) == {"grid": 3}
    assert synthesis_inputs("agent", profile, None, 3, "grid")["max_attempts"] == 1
    assert synthesis_inputs("agent", profile, None, 3, "widget")["max_attempts"] == 3
    assert synthesis_inputs("agent", default, None, 3, "grid")["max_attempts"] == 3
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(profile))

    r = CliRunner().invoke(main, ["synth", str(grid), "--type", "bent", "--n", "2", "--no-trajectories",
                                  "--out", str(tmp_path / "out"), "--profile", str(tmp_path / "auto.yaml")])
    assert r.exit_code == 0, r.output
    assert "grid: the judge passes" in r.output and "one attempt per sample" in r.output
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(rec["attempts"] == 1 for rec in records)


def _trust(profile: dict, trust: str) -> dict:
    return {**profile, "tools": {**profile["tools"], "quality_eval": {**profile["tools"]["quality_eval"],
                                                                      "trust": trust}}}


def test_atlas_check_command(tmp_path):
    _plant(fakes_like_reals="grid").save(tmp_path / "plant.json")
    r = CliRunner().invoke(main, ["atlas", "check", str(tmp_path / "plant.json")])
    assert r.exit_code == 0, r.output
    lines = {line.split(":")[0]: line for line in r.output.strip().splitlines()}
    assert set(lines) == set(Atlas.load().categories)
    assert lines["grid"].endswith("not trusted (with trust: auto, one attempt per sample)")
    assert lines["screw"].endswith(": trusted")
    r = CliRunner().invoke(main, ["atlas", "check", _shipped_path()])
    assert r.exit_code == 1 and "leave-category-out" in r.output and "Traceback" not in r.output


def _shipped_path() -> str:
    from local_agent.tools.atlas import default_path

    return str(default_path())


def test_bad_options_are_named():
    from local_agent.profile import load_profile
    from local_agent.synth import SynthError, loop_attempts
    from local_agent.tools.calibrated_judge import CalibratedJudge

    with pytest.raises(ValueError, match="trust"):
        CalibratedJudge(trust="sometimes")
    profile = load_profile()
    for option, value in (("trust", "sometimes"), ("pass_location", "high")):
        bad = _trust(profile, "auto")
        bad["tools"]["quality_eval"][option] = value
        with pytest.raises(SynthError, match=f"tools.quality_eval.{option}"):
            loop_attempts(bad, ["grid"], 3)
