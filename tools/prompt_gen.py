"""Prompt Generation (PG): write the first local-editing prompt for a category and anomaly type."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import Tool, ToolError, Workspace, build_backend, string_arg
from .imaging import TEXTURE_CATEGORIES, foreground_mask, luminance
from .painter.spec import KIND_PHRASES, defect_kind


def item_noun(category: str) -> str:
    return re.sub(r"[_\-]+", " ", category).strip() or "object"


def defect_phrase(anomaly_type: str) -> tuple[str, str]:
    """(kind, phrase) for a type name; unknown names keep their own words and borrow the nearest kind."""
    words = re.sub(r"[_\-]+", " ", anomaly_type).strip()
    kind = defect_kind(words)
    if kind is None:
        return "contamination", f"a {words} defect (a foreign particle contamination)"
    phrase = KIND_PHRASES[kind]
    return kind, phrase if words in phrase else f"{phrase} ({words})"


def place_phrase(image: np.ndarray, category: str, rng: np.random.Generator) -> str:
    """Look at the image: pick a plausible place on the object, in the words the painter reads."""
    if category.lower() in TEXTURE_CATEGORIES:
        return str(rng.choice(["upper left area", "upper right area", "centre", "lower left area",
                               "lower right area", "left side", "right side"]))
    fg = foreground_mask(image, category)
    return str(rng.choice(["upper part", "centre", "lower part", "left side", "right side", "edge"]
                          if fg.mean() < 0.9 else ["centre", "upper part", "lower part"]))


def first_sentence(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    s = m.group(1) if m else text
    return s[:limit].rstrip()


class TemplatePrompt:
    """Paper-form prompt from category, type, the image's foreground, and retrieved knowledge when given.

    ``atlas`` (``none`` | ``default`` | a file): with an atlas, size, look, place and count are the words for one real
    defect of the kind, drawn from the atlas (``Atlas.for_category``: the shipped one leaves the category out) (:func:`.painter.priors.describe`), so the
    first prompt asks for what real defects are like; the painter reads the same words back as the same bands of
    the real distribution. Without one, size and look are drawn from fixed lists (the atlas-free behaviour).

    ``describe: false`` writes no size, look, place or count at all ("change only one region of the …"): for an
    image generator that copies a whole real defect itself (the procedural painter with an atlas), words only
    replace parts of that defect. The first attempt is then the open-loop sample, and every difference from
    open-loop comes from the judge and the refinement.
    """

    def __init__(self, atlas: str | None = "none", describe: bool = True):
        from .painter.priors import load_atlas

        self.priors = load_atlas(atlas)      # an Atlas, or None
        self.describe = bool(describe)

    def generate(self, image: np.ndarray, category: str, anomaly_type: str, knowledge: str | None,
                 rng: np.random.Generator) -> str:
        item = item_noun(category)
        kind, phrase = defect_phrase(anomaly_type)
        tone = "dark" if luminance(image).mean() < 100 else "bright"  # not "light": that is an intensity word
        if not self.describe:
            place, what = "", ""
        elif self.priors is not None:
            from .painter.priors import describe

            on_object = category.lower() not in TEXTURE_CATEGORIES and foreground_mask(image, category).mean() < 0.9
            words = describe(self.priors.for_category(category), kind, rng, on_object)
            place = {"edge": "edge", "centre": "centre"}.get(words.get("place", ""), words.get("place", ""))
            place = place or place_phrase(image, category, rng)
            what = " ".join(w for w in (words.get("count"), words.get("look"), words.get("size")) if w)
        else:
            place = place_phrase(image, category, rng)
            what = f"{rng.choice(['visible', 'clearly visible', 'subtle'])} {rng.choice(['small', 'small', 'medium'])}"
        detail = f" It should look like a real {item} defect: {first_sentence(knowledge)}" if knowledge else ""
        noun = phrase.removeprefix("a ").removeprefix("an ")
        where = f"the {place}" if place else "one region"
        return (f"Using the provided image, change only {where} of the {item} to add {what + ' ' if what else ''}"
                f"{noun} on the {tone} surface, matching the local texture and lighting.{detail} Keep the rest of the "
                f"image, including the background and the {item}'s shape, unchanged.")


BACKENDS: dict[str, type | str] = {"template": TemplatePrompt, "vlm": "local_agent.tools.vlm:VLMPromptWriter", "smollm2": "local_agent.tools.vlm:SmolLM2PromptWriter"}


class PromptGen(Tool):
    name = "prompt_gen"
    description = ("Write a local-editing prompt that adds the requested anomaly to image 1. "
                   "Returns {'prompt': str}.")
    parameters = {
        "type": "object",
        "properties": {
            "item_name": {"type": "string", "description": "object category, e.g. 'transistor'"},
            "anomaly_type": {"type": "string", "description": "defect type, e.g. 'bent_lead'"},
            "knowledge": {"type": "string", "description": "optional retrieved defect knowledge to use"},
        },
        "required": ["item_name", "anomaly_type"],
    }

    def __call__(self, workspace: Workspace, **arguments: Any) -> dict[str, Any]:
        item = string_arg(arguments, "item_name")
        anomaly = string_arg(arguments, "anomaly_type")
        knowledge = arguments.get("knowledge")
        if knowledge is not None and not isinstance(knowledge, str):
            raise ToolError("argument 'knowledge' must be a string")
        rng = np.random.default_rng([workspace.seed, 1])
        return {"prompt": self.backend.generate(workspace.normal, item, anomaly, knowledge, rng)}


def build(config: dict[str, Any]) -> PromptGen:
    return PromptGen(build_backend(BACKENDS, PromptGen.name, config))
