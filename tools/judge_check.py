"""The judge's self-check on a plant's own defects: may the closed loop trust its verdicts on a category?

The loop refines until the judge passes an attempt, so it pays only where the judge tells real defects from bad
edits. Stop 23 measured it on five categories: the loop with the plant's judge gained +6.5 pixel AP on grid, where that
judge passed 84 % of held-out real defects and failed 86 % of bad edits, and cost −3.7 on transistor (45 % / 68 %).
A plant's atlas already holds what is needed to measure this without any test set: the category's real defects and
their counterfeits (the bad edits ``trajectories.make_failure`` builds from each: faint, moved off the object, scaled
up, wrong shape), measured as the judge measures an attempt. So the check runs leave-one-out on the atlas rows:
each real defect is judged against the atlas without it (as a new real defect would be), each counterfeit against
the atlas without the defect it was made from. Measures only, no image: a fraction of a second.

It checks the tails decider (the default). The label-agreement rule (a feature change outside the mask) needs images
and can only add failures. The bar, 70 % of real defects passed and 70 % of bad edits failed, is the validity
target set for the judge in issue 14, not tuned on any category.

With ``tools.quality_eval.trust: auto`` synth refines a category only where the judge passes this check. It is not
the default: designed on one draw of the five-shot split, it did not replicate on two fresh draws, where the loop it
stopped paid most on ball_screw (docs/synthesis.md, stop 24). ``local-agent atlas check`` prints it either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atlas import MIN_ROWS, Atlas, _norm
from .calibrated_judge import TRUST_CHOICES, borrowed, judged_rows, tail_scores

TRUST_REAL_PASS = 0.7
TRUST_BAD_FAIL = 0.7


@dataclass(frozen=True)
class SelfCheck:
    """The judge's validity on one category's own real defects (leave-one-out). Untrusted when there is nothing to
    measure it on (no bad edits: an atlas built before they were): the loop then makes open-loop's samples."""

    category: str
    real_pass: float     # share of the category's real defects the judge passes
    bad_fail: float      # share of the bad edits of them it fails
    n_real: int
    n_bad: int

    @property
    def trusted(self) -> bool:
        return self.n_real > 0 and self.n_bad > 0 and (
            self.real_pass >= TRUST_REAL_PASS and self.bad_fail >= TRUST_BAD_FAIL)

    def words(self) -> str:
        bad = (f"fails {100 * self.bad_fail:.0f} % of {self.n_bad} bad edits of them" if self.n_bad else
               "has no bad edits of them to fail (rebuild the atlas with `local-agent atlas build`)")
        return (f"{self.category}: the judge passes {100 * self.real_pass:.0f} % of its {self.n_real} own real "
                f"defects and {bad} (leave-one-out; trusted from {100 * TRUST_REAL_PASS:.0f} % and "
                f"{100 * TRUST_BAD_FAIL:.0f} %)")


def self_check(atlas: Atlas, category: str, pass_location: int = 4, pass_quality: int = 4) -> SelfCheck | None:
    """The tails judge's leave-one-out validity on ``category``'s own rows of a plant's atlas; None when the atlas
    holds none of them or leaves the category out (the shipped atlas: a category's judge never sees its defects)."""
    if atlas.leave_out:
        return None
    cat = _norm(category)
    real = [r for r in atlas.rows if _norm(r["category"]) == cat]
    if not real:
        return None
    bad = [c for c in atlas.counterfeits if _norm(c["category"]) == cat]
    rows_of: dict[str, Atlas] = {}   # image key -> the atlas without that image's defect

    def passes(m: dict[str, Any]) -> bool:
        image = m.get("image")
        if image not in rows_of:
            rows_of[image] = Atlas([r for r in atlas.rows if r.get("image") != image], atlas.sources, atlas.meta)
        # the deployed judge reads the category's own rows of the type from MIN_ROWS of them; one is left out here
        rows, object_rows = judged_rows(rows_of[image], category, m["type"], own_at_least=MIN_ROWS - 1)
        location, quality, _ = tail_scores(m, rows, object_rows, bool(m.get("texture")),
                                           borrowed(rows_of[image], category, m["type"], own_at_least=MIN_ROWS - 1))
        return location >= pass_location and quality >= pass_quality

    real_pass = sum(passes(r) for r in real) / len(real)
    bad_fail = sum(not passes(c) for c in bad) / len(bad) if bad else 0.0
    return SelfCheck(category, real_pass, bad_fail, len(real), len(bad))


def judge_self_check(quality_eval: dict[str, Any], category: str) -> SelfCheck | None:
    """``self_check`` of the judge a profile's ``tools.quality_eval`` configures, for ``category``, when the profile
    asks the loop to depend on it (``trust: auto``); None when it does not (``always``, the default), when it is not
    the calibrated tails judge, or when its atlas holds none of the category's defects."""
    trust = str(quality_eval.get("trust", "always"))
    if trust not in TRUST_CHOICES:
        raise ValueError(f"tools.quality_eval.trust: {trust!r} is not one of {', '.join(TRUST_CHOICES)}")
    if (quality_eval.get("backend") != "calibrated" or trust == "always"
            or quality_eval.get("decide", "tails") != "tails"):
        return None
    try:
        marks = int(quality_eval.get("pass_location", 4)), int(quality_eval.get("pass_quality", 4))
    except (TypeError, ValueError):
        raise ValueError("tools.quality_eval.pass_location and pass_quality must be whole numbers (0-5)") from None
    path = quality_eval.get("atlas")
    atlas = Atlas.load(Path(path) if path and path != "default" else None)   # AtlasError names an unreadable file
    return self_check(atlas, category, *marks)
