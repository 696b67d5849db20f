"""The ``scripted`` policy: the paper's Algorithm 1, exactly, written as protocol messages.

p0 = PG(I, c, a); for t = 1..N: I't = IG(I, p_{t-1}); (s_t, f_t) = QE(I, I't); stop if passed;
k = KR(c, a) when s_t < δ and a KR backend is configured; p_t = Refine(p_{t-1}, f_t, k). Finally M = MG(I, I't).
After the last failed attempt the best attempt is masked and the answer says "failed".
"""
from __future__ import annotations

import re
from typing import Any

from ..episode import Episode
from ..protocol import format_answer, format_tool_call
from ..tools.prompt_gen import first_sentence

_LOCATION_WORDS = r"(?:top|upper|bottom|lower|left|right|centre|center|middle|edge|rim|border|corner)"


# Fault -> the fix in the painter's words, when the review does not carry its own advice for it.
_FIXES = {
    "missing": "make it clearly visible, more pronounced and high-contrast",
    "too faint": "make it clearly visible, more pronounced and high-contrast",
    "too large": "make it small",
    "too small": "make it medium sized",
    "hard seam": "blend it smoothly into the surrounding texture and lighting",
    "flat patch": "blend it smoothly into the surrounding texture and lighting",
    "scattered": "make it a single defect",
    "too strong": "make it subtle, blend it smoothly",
    "blurred edge": "make it distinct, sharp-edged",
    "too busy": "make it smooth and soft",
    "too few parts": "make several small ones",
}
# Faults that move the defect: the place words of the prompt are replaced, not just appended to.
_PLACES = {"off the object": "the centre", "on the edge": "the centre", "off the edge": "the edge"}
_IMPERATIVE = re.compile(r"\b(?:make|place|put|move|keep|blend|add|give|spread|turn)\b.*$", re.IGNORECASE)


def _review_advice(review: str) -> dict[str, str]:
    """Fault -> the judge's own imperative for it, from a review of the form "fault: why: make it …; fault: …".

    The calibrated judge writes what real defects of the kind measure ("real breaks cover about 2 % of the part")
    before its advice; only the imperative goes into the prompt (a "2 %" there would be read as a size). A size
    advice carries its own share at the painter's scale ("make it medium, about 4 % of the part"), which is meant
    to be read as one.
    """
    text = re.sub(r"^.*?(?:Not acceptable yet\.|Minor:)\s*", "", review.strip())
    out: dict[str, str] = {}
    for item in text.rstrip(".").split("; "):
        name, _, rest = item.partition(":")
        m = _IMPERATIVE.search(rest.rsplit(":", 1)[-1]) if rest else None
        if m:
            out[name.strip().lower()] = m.group(0).strip().rstrip(".")
    return out


def _painter_reads(text: str) -> bool:
    """Whether the image generator's vocabulary (tools/painter/spec.py) finds anything to act on in ``text``."""
    from ..tools.painter.spec import parse_prompt

    spec = parse_prompt(text)
    return bool(spec.size_word or spec.intensity_word or spec.shape or spec.location or spec.counted or spec.soft)


def refine_prompt(prompt: str, faults: list[str], review: str = "", knowledge: str | None = None) -> str:
    """Refine(p, f, k): act on each fault the judge named, in the words the image generator reads.

    Each fault's fix is the judge's own advice from the review when it gives one (the calibrated judge's advice
    follows the real defects of the kind: "make it large", "place it at the edge of the object"), else a fixed
    fix. Fixes go inside the "change only …" clause (before "Keep the rest"), later words overriding earlier ones;
    a fault about where the defect sits replaces the prompt's place words.
    """
    advice = _review_advice(review)
    fixes: list[str] = []
    for fault in faults:
        if fault in _PLACES:
            continue
        said = next((a for name, a in advice.items() if name.startswith(fault)), None)
        if said and fault in _FIXES and not _painter_reads(said):
            said = None  # "add the defect clearly" names no size, contrast, place, count or softness
        if fault == "wrong shape" and not said:
            said = "make it thin and long" if "elongated" in review else "make it compact and rounded"
        fix = said or _FIXES.get(fault)
        if fix and fix not in fixes:
            fixes.append(fix)
    head, sep, tail = prompt.partition(" Keep the rest")
    for fault in faults:
        if fault in _PLACES:
            head = re.sub(r"\b(?:the )?" + _LOCATION_WORDS + r"(?:[ -]" + _LOCATION_WORDS + r")*(?: (?:part|side|area))?\b",
                          _PLACES[fault], head, count=1)
            fixes.append({"the edge": "place it at the edge of the object"}.get(_PLACES[fault],
                                                                               "place it on the object surface"))
            break
    head = re.sub(r"\s*Refinement:.*$", "", head)  # keep one refinement sentence, not a growing list
    extra = ""
    if knowledge:
        extra = f" Physical reference: {first_sentence(knowledge)}"
    if fixes:
        extra += " Refinement: " + "; ".join(fixes) + "."
    return head.rstrip() + extra + (sep + tail if sep else "")


class ScriptedPolicy:
    """Algorithm 1 as a policy. ``kr_threshold`` is δ on the lower of the two judge scores (0-5)."""

    def __init__(self, kr_threshold: float = 3.0):
        self.kr_threshold = float(kr_threshold)

    def next_message(self, episode: Episode) -> str:
        ws = episode.workspace
        item, anomaly = ws.category, ws.anomaly_type
        tools = {s["name"] for s in episode.tool_specs}
        done = [s for s in episode.steps if s.result is not None]
        last = done[-1] if done else None
        if last is None:
            return format_tool_call("prompt_gen", {"item_name": item, "anomaly_type": anomaly},
                                    f"I need a local-editing prompt for a {anomaly} on the {item} in image 1.")
        if last.tool == "prompt_gen":
            return format_tool_call("image_gen", {"prompt": last.result["prompt"]},
                                    "Edit image 1 with the generated prompt.")
        if last.tool == "image_gen":
            k = last.result["image_index"]
            return format_tool_call("quality_eval", {"image_index": k, "item_name": item, "anomaly_type": anomaly},
                                    f"Judge attempt image {k} against the normal image.")
        if last.tool == "mask_gen":
            return self._answer(episode, last.result)
        evaluation = last.result if last.tool == "quality_eval" else episode.last_result("quality_eval")
        if evaluation is None:  # knowledge before any judgement cannot happen in Algorithm 1; start over safely
            return format_tool_call("prompt_gen", {"item_name": item, "anomaly_type": anomaly}, "Start with a prompt.")
        k = evaluation["image_index"]
        scores = f"location {evaluation['location_score']}/5, quality {evaluation['quality_score']}/5"
        if last.tool == "quality_eval":
            if evaluation["passed"]:
                return format_tool_call("mask_gen", {"image_index": k},
                                        f"Image {k} passed ({scores}). Generate its mask.")
            if len(episode.attempts) >= episode.max_attempts:
                best = self._best(episode)
                return format_tool_call("mask_gen", {"image_index": best},
                                        f"Image {k} failed ({scores}) and no attempts remain; keep the best attempt, "
                                        f"image {best}, and mask it.")
            low = min(evaluation["location_score"], evaluation["quality_score"]) < self.kr_threshold
            used_kr = any(s.tool == "knowledge_retrieval" for s in done)
            if low and not used_kr and "knowledge_retrieval" in tools:
                return format_tool_call(
                    "knowledge_retrieval", {"item_name": item, "anomaly_type": anomaly, "query": evaluation["review"]},
                    f"Image {k} scored low ({scores}): {evaluation['review']} Retrieve knowledge about {anomaly}.")
        knowledge = None
        if last.tool == "knowledge_retrieval" and last.result.get("passages"):
            knowledge = last.result["passages"][0]["text"]
        prompt = refine_prompt(self._current_prompt(episode), evaluation.get("faults", []), evaluation["review"],
                               knowledge)
        return format_tool_call("image_gen", {"prompt": prompt},
                                f"Image {k} was not acceptable ({scores}): {evaluation['review']} "
                                "Refine the prompt accordingly and edit image 1 again.")

    @staticmethod
    def _current_prompt(episode: Episode) -> str:
        for s in reversed(episode.steps):
            if s.tool == "image_gen" and s.arguments:
                return s.arguments["prompt"]
        return episode.last_result("prompt_gen")["prompt"]

    @staticmethod
    def _best(episode: Episode) -> int:
        evals = episode.evaluations()
        return max(evals, key=lambda i: (min(evals[i]["location_score"], evals[i]["quality_score"]),
                                         evals[i]["location_score"] + evals[i]["quality_score"], -i))

    @staticmethod
    def _answer(episode: Episode, mask: dict[str, Any]) -> str:
        k = mask["image_index"]
        evaluation = episode.evaluations().get(k, {})
        ok = bool(evaluation.get("passed")) and not mask.get("empty")
        n = len(episode.attempts)
        logic = (f"{n} attempt(s); image {k} {'passed' if ok else 'was the best but did not pass'} the judge "
                 f"(location {evaluation.get('location_score')}/5, quality {evaluation.get('quality_score')}/5); "
                 f"mask covers {mask.get('anomaly_ratio', 0):.2%} of the image.")
        return format_answer({"status": "success" if ok else "failed", "final_image_index": k,
                              "mask_generated": not mask.get("empty", False), "synthesis_logic": logic},
                             "The mask is generated; summarise the episode.")


