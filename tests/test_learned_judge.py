"""The learned calibrated judge (``decide: learned``): a logistic regression on real defects vs their counterfeits,
trained leave-one-category-out from the atlas."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from local_agent.tools import calibrated_judge as cj
from local_agent.tools.atlas import MEASURES, Atlas
from local_agent.tools.calibrated_judge import CalibratedJudge
from local_agent.tools.imaging import foreground_mask
from local_agent.training.trajectories import FAILURE_MODES, make_failure

from test_atlas import _real  # tests/ is on sys.path (pytest rootdir-relative import)


def test_counterfeits_are_in_the_atlas_and_left_out_with_their_category():
    atlas = Atlas.load()
    fakes = atlas.counterfeits
    assert len(fakes) > len(atlas.rows)        # most real defects give several bad edits
    assert {r["mode"] for r in fakes} == set(FAILURE_MODES)
    assert all(set(MEASURES) <= set(r) for r in fakes)
    real_keys = {r["image"] for r in atlas.rows}
    assert {r["image"] for r in fakes} <= real_keys and set(atlas.categories) == {r["category"] for r in fakes}
    assert not any(r["mode"] == "misplaced" and r["texture"] for r in fakes)   # a texture has no off-object place
    out = atlas.without("grid")
    assert not any(r["category"] == "grid" for r in out.counterfeits)
    assert len(out.counterfeits) == len(fakes) - sum(r["category"] == "grid" for r in fakes) < len(fakes)


def test_training_never_sees_the_judged_category():
    """Scrambling every number of grid's real rows and counterfeits leaves grid's learned judge unchanged, while
    scrambling transistor's changes it; and the training rows' categories never include grid."""
    judge = CalibratedJudge(decide="learned")
    seen: list[list[str]] = []
    original = cj.training_set

    def spy(atlas, without_modes=()):
        X, y, cats = original(atlas, without_modes)
        seen.append(cats)
        return X, y, cats

    def scrambled(category: str) -> Atlas:
        a = copy.deepcopy(judge.atlas)
        rng = np.random.default_rng(1)
        for r in a.rows + a.counterfeits:
            if r["category"] == category:
                for k in MEASURES:
                    r[k] = float(rng.uniform(0, 50))
        return a

    def coefs(atlas: Atlas) -> np.ndarray:
        return cj.fit_learned(atlas.without("grid"))[-1].coef_

    mp = pytest.MonkeyPatch()
    mp.setattr(cj, "training_set", spy)
    try:
        model = judge.model("grid")
    finally:
        mp.undo()
    assert seen and "grid" not in set(seen[0]) and {"transistor", "screw"} <= set(seen[0])
    assert np.allclose(model[-1].coef_, coefs(scrambled("grid")))
    assert not np.allclose(model[-1].coef_, coefs(scrambled("transistor")))


@pytest.fixture(scope="module")
def learned():
    return CalibratedJudge(decide="learned")


def test_learned_judge_passes_a_real_grid_defect_and_fails_it_faded(learned, shared_data):
    fg = np.ones((256, 256), bool)
    anomaly, mask, normal = _real(shared_data, "grid", "bent", "000")
    real = learned.evaluate(normal, anomaly, "grid", "bent", foreground=fg)
    assert real["passed"] and real["measures"]["p_real"] >= 0.5 and real["quality_score"] >= 4, real["review"]
    faded = make_failure("faint", normal, anomaly, mask, fg, "bent", np.random.default_rng(0))
    v = learned.evaluate(normal, faded, "grid", "bent", foreground=fg)
    assert not v["passed"] and v["measures"]["p_real"] < 0.5 and v["quality_score"] < 4, v["review"]
    assert "Not acceptable" in v["review"] and v["faults"]          # the review still says what to fix


def test_learned_judge_fails_a_real_defect_moved_off_the_object_with_the_floor(learned, shared_data):
    """Moved onto the background, transistor's case damage: with transistor left out, the only object category with
    moved-off counterfeits is screw, whose real defects lie partly off GrabCut's foreground too, so the model learns
    almost no weight for the share on the object (p(real) about 0.96 here: a known limit, see docs/synthesis.md).
    The optional hard floor (``on_object``) is a rule the learned decision keeps, and it fails the attempt."""
    anomaly, mask, normal = _real(shared_data, "transistor", "damaged_case", "000")
    fg = foreground_mask(normal, "transistor")
    moved = make_failure("misplaced", normal, anomaly, mask, fg, "broken", np.random.default_rng(0))
    strict = CalibratedJudge(on_object=0.05, decide="learned")
    v = strict.evaluate(normal, moved, "transistor", "damaged_case", foreground=fg)
    assert v["measures"]["on_object"] < 0.05 and v["measures"]["p_real"] is not None
    assert not v["passed"] and "off the object" in v["faults"] and v["location_score"] == 0, v["review"]
    real = strict.evaluate(normal, anomaly, "transistor", "damaged_case", foreground=fg)
    assert "off the object" not in real["faults"]
    tails = strict.evaluate(normal, moved, "transistor", "damaged_case", foreground=fg, decide="tails")
    assert "p_real" not in tails["measures"]                        # the default decider is untouched


def test_decide_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="decide"):
        CalibratedJudge(decide="vote")
    bare = tmp_path / "atlas.json"
    a = Atlas.load()
    Atlas(a.rows, a.sources, a.meta).save(bare)
    with pytest.raises(ValueError, match="counterfeits"):
        CalibratedJudge(atlas=str(bare), decide="learned")
