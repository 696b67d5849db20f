"""From words to a defect: the vocabulary shared by the prompt writer, the painter and the judge.

``parse_prompt`` reads an edit prompt and returns a :class:`DefectSpec` (kind, place, size, intensity,
colour, count, orientation). Only the words decide: the same image and seed with other words gives
another defect. ``kind_of`` maps a free-text anomaly type name (``bent_lead``, ``metal_contamination``,
"shiny fracture") to one of the painter's kinds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Kind -> word stems that name it. Matched as word prefixes; the earliest mention in the prompt wins.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "scratch": ("scratch", "scuff", "abrasion", "abraded", "score mark"),
    "crack": ("crack", "fissure", "craze"),
    "hole": ("hole", "poke", "puncture", "pinhole", "perforat", "pit", "dimple", "blowhole", "blow hole", "bubble",
             "blister", "void", "pore"),
    "cut": ("cut", "gash", "slit", "incision", "nick", "sever", "clipped", "trimmed"),
    "contamination": ("contamina", "foreign", "particle", "debris", "dirt", "dust", "speck", "residue", "fleck"),
    "stain": ("stain", "liquid", "oil", "water", "smudge", "splash", "spill", "drip", "droplet", "wet", "grease",
              "leak"),
    "color": ("colour", "color", "discolo", "tint", "hue", "faded", "pigment", "burn", "scorch"),
    "print": ("print", "imprint", "label", "logo", "marking", "lettering", "ink"),
    "bent": ("bent", "bend", "deform", "dent", "warp", "squeez", "crush", "buckl", "twist", "distort", "misshap",
             "melt"),
    "missing": ("missing", "absent", "misplac", "removed", "lost", "wrong place", "displac"),
    "fold": ("fold", "crease", "wrinkl", "pleat"),
    "glue": ("glue", "adhesive", "resin", "sealant"),
    "thread": ("thread", "fibre", "fiber", "hair", "strand", "filament", "lint"),
    "rough": ("rough", "grain", "bump", "porous", "pitted surface", "uneven", "fray", "burr", "worn"),
    "broken": ("broken", "fractur", "chip", "break", "shatter", "split", "damag", "flake"),
}
KINDS = tuple(KIND_WORDS)

# Words that name a kind only when nothing above does: type names of public datasets whose words name no defect
# ("major_rust", "cable_swap": a wire of the wrong colour, "pill_type": another pill's speckles, "gray_stroke": a pen
# stroke, "extra_wax", "fabric_interior": damaged weave). A kind word still wins: "a rust stain" is a stain.
FALLBACK_KIND_WORDS: dict[str, tuple[str, ...]] = {
    "color": ("rust", "corros", "oxidi", "paint", "swap", "pill type"),
    "print": ("stroke", "pen mark", "marker"),
    "contamination": ("extra", "spot", "splatter"),
    "rough": ("fabric", "weave"),
}

# Shape the judge expects: linear kinds are thin and elongated, blob kinds compact.
LINEAR_KINDS = frozenset({"scratch", "crack", "thread", "cut", "fold"})
BLOB_KINDS = frozenset({"hole", "contamination", "stain", "glue"})
SOFT_KINDS = frozenset({"stain", "color", "glue", "rough", "bent"})

# How the prompt writer describes each kind (contains the kind's own words, so the painter reads it back).
KIND_PHRASES: dict[str, str] = {
    "scratch": "a thin straight scratch",
    "crack": "a thin jagged crack",
    "hole": "a round hole",
    "cut": "a clean cut",
    "contamination": "a foreign particle contamination",
    "stain": "a liquid stain",
    "color": "a colour change",
    "print": "a faulty print smear",
    "bent": "a bent deformation",
    "missing": "a missing part",
    "fold": "a fold crease",
    "glue": "a glue residue drop",
    "thread": "a loose thread fibre",
    "rough": "a rough surface patch",
    "broken": "a broken fracture",
}

SIZE_WORDS: tuple[tuple[str, float], ...] = (
    ("very small", 0.06), ("tiny", 0.06), ("minute", 0.06), ("small", 0.10), ("little", 0.10),
    ("very large", 0.40), ("huge", 0.40), ("large", 0.28), ("big", 0.28), ("broad", 0.28), ("wide", 0.26),
    ("long", 0.24),
    ("medium", 0.17), ("moderate", 0.17), ("mid-sized", 0.17),
)
INTENSITY_WORDS: tuple[tuple[str, float], ...] = (
    ("barely", 0.3), ("faint", 0.35), ("subtle", 0.4), ("slight", 0.4), ("light", 0.5), ("mild", 0.5),
    ("more pronounced", 1.0), ("high-contrast", 1.0), ("high contrast", 1.0), ("pronounced", 0.95),
    ("strong", 0.95), ("severe", 1.0), ("heavy", 0.95), ("deep", 0.95), ("obvious", 0.9), ("distinct", 0.85),
    ("clearly visible", 0.85), ("noticeable", 0.75), ("visible", 0.75), ("clear", 0.8),
)
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25), "white": (235, 235, 230), "grey": (128, 128, 128), "gray": (128, 128, 128),
    "brown": (110, 70, 35), "rust": (150, 70, 30), "red": (180, 40, 35), "yellow": (210, 185, 60),
    "amber": (200, 150, 60), "green": (60, 140, 60), "blue": (50, 80, 170), "orange": (220, 120, 40),
    "copper": (184, 115, 51), "silver": (200, 200, 205), "metallic": (170, 170, 175), "purple": (120, 60, 140),
    "pink": (220, 140, 160),
}
# Shape phrases (the judge's "wrong shape" advice): they set the defect's elongation, never its size ("thin and long"
# is not "long"). Bare "thin" is no shape word: the scratch and crack phrases say "a thin ..." of every such defect.
SHAPE_WORDS: tuple[tuple[str, str], ...] = (
    ("thin and long", "elongated"), ("long and thin", "elongated"), ("thin and elongated", "elongated"),
    ("elongated", "elongated"), ("slender", "elongated"),
    ("compact and rounded", "compact"), ("compact", "compact"), ("rounded", "compact"),
)
COUNT_WORDS = {"two": 2, "pair": 2, "three": 3, "several": 3, "multiple": 3, "few": 2, "many": 4}
_LOCATION_STEMS = {
    "top": ("top", "upper", "above"), "bottom": ("bottom", "lower", "below", "base"),
    "left": ("left",), "right": ("right",), "centre": ("centre", "center", "middle", "central"),
    "edge": ("edge", "border", "rim", "periphery", "outline", "boundary", "contour", "perimeter"),
    "corner": ("corner",),
    # stretches of an elongated part (a screw, a bolt, a pin), measured from its wider end: placement.part_band
    "head": ("head",), "neck": ("neck",), "shaft": ("shaft", "shank"), "tip": ("tip", "front"),
}
# A part name followed by a place word ("thread side", "thread top": damage on a screw's thread) names the stretch of
# the part, not a place in the image: the thread is the shaft, wherever on it.
PART_PLACES = {"thread": "shaft"}


@dataclass
class DefectSpec:
    """A defect as words describe it. ``size`` is a fraction of the object's shorter side."""

    kind: str = "contamination"
    location: tuple[str, ...] = ()
    size: float = 0.14
    intensity: float = 0.7
    colour: tuple[int, int, int] | None = None
    colour_word: str | None = None
    count: int = 1
    orientation: str | None = None
    metallic: bool = False
    soft: bool = False          # "blend smoothly", "soft-edged", "gradual": a wider fade into the surroundings
    # Which of the above the words set explicitly (an atlas prior fills in the rest; see :mod:`.priors`).
    size_word: str | None = None
    shape: str | None = None    # "elongated" | "compact": said in the words (SHAPE_WORDS)
    intensity_word: str | None = None
    counted: bool = False
    area: float | None = None   # share of the object's area: "3 %" in the words, or drawn from the atlas prior
    pinned: tuple[str, ...] = ()  # set by a pin- or broad-word default, not said in the prompt: "size"/"intensity"
    #                               words (pits: "tiny subtle"), "area" (broad: drawn from priors.BROAD_AREA)
    # Filled from a real defect of the atlas (painter option ``atlas``); None = the kind's own defaults.
    delta_e: float | None = None        # contrast to reach inside the defect (CIELAB ΔE)
    lighter: bool | None = None         # the real defect was lighter than its surroundings
    edge: bool | None = None            # anchored on the object's rim
    aim: tuple[float, float] | None = None  # (x, y) within the object's box, 0..1
    depth: float | None = None          # distance from the object's boundary, / sqrt(object area)
    elongation: float | None = None     # length / width of the real mask (linear kinds)


def _first_match(text: str, stems: tuple[str, ...]) -> int | None:
    best = None
    for stem in stems:
        m = re.search(r"(?<![a-z])" + re.escape(stem), text)
        if m and (best is None or m.start() < best):
            best = m.start()
    return best


def kind_of(text: str, default: str | None = None) -> str | None:
    """The kind named earliest in ``text`` (underscores read as spaces), else the earliest fallback word's kind,
    else ``default``."""
    text = text.lower().replace("_", " ").replace("-", " ")
    for words in (KIND_WORDS, FALLBACK_KIND_WORDS):
        hits = [(pos, kind) for kind, stems in words.items() if (pos := _first_match(text, stems)) is not None]
        if hits:
            return min(hits)[1]
    return default


# "thread" names a part of a screw or bolt as often as a loose fibre, "print" a printed area as often as a smear:
# "thread_side", "thread_top" are damage ON the thread. A part-name kind followed by a place word names no kind.
PART_KINDS = frozenset({"thread", "print"})
PLACE_WORDS = r"(?:side|top|front|back|bottom|head|neck|tip|base|left|right)"


def defect_kind(text: str, default: str | None = None) -> str | None:
    """``kind_of``, with a part name followed by a place word ("thread side") read as the part, not as the kind:
    the kind is then what the rest of the text names, else ``default``. The atlas (``atlas_kind``), the prompt
    writer and the painter read type names by this one rule."""
    low = text.lower().replace("_", " ").replace("-", " ")
    for part in PART_KINDS:
        low = re.sub(r"(?<![a-z])" + part + r" +" + PLACE_WORDS + r"(?![a-z])", " ", low)
    return kind_of(low, default)


def edit_clause(prompt: str) -> str:
    """The part of a paper-style prompt that describes the change ("change only … ." up to "Keep the rest")."""
    low = prompt.lower()
    start = low.find("change only")
    end = low.find("keep the rest")
    if start >= 0:
        return low[start:end if end > start else None]
    return low[:end] if end > 0 else low


# Pin-sized defects: without a size word they are tiny and subtle (real pitting covers a few pixels).
PIN_WORDS = ("pitting", "pinhole", "pin hole", "pore", "pits", "pit ", "blowhole", "blow hole")
# Broad defects: unevenness and mottled shading spread over a large share of the part with soft borders (real
# "uneven" areas cover about a third of a part). Without a size word their area is drawn from BROAD_AREA, not from
# the kind's real rows, which zero-shot are lent small defects of other kinds (priors.apply_priors).
BROAD_WORDS = ("uneven", "mottl", "patchy", "shading")
BROAD_KINDS = frozenset({"rough", "color"})


def parse_prompt(prompt: str, fallback_kind: str = "contamination") -> DefectSpec:
    clause = edit_clause(prompt)
    spec = DefectSpec(kind=defect_kind(clause) or defect_kind(prompt) or fallback_kind)
    pin = spec.kind == "hole" and any(w in clause for w in PIN_WORDS)
    if pin:  # read as "tiny subtle" unless words say more (or a plant's own pits say otherwise: priors.apply_priors)
        spec.size, spec.intensity, spec.size_word, spec.intensity_word = 0.05, 0.45, "tiny", "subtle"
        spec.pinned = ("size", "intensity")
    broad = spec.kind in BROAD_KINDS and _first_match(clause, BROAD_WORDS) is not None
    if broad:  # broad unless words size it (the area is drawn in priors.apply_priors), and always soft
        spec.size, spec.pinned = 0.55, ("area",)
    # Later modifiers override earlier ones: a refined prompt appends "make it more pronounced" etc.
    shapes = [(m.start(), m.end(), shape) for phrase, shape in SHAPE_WORDS
              for m in re.finditer(r"(?<![a-z-])" + re.escape(phrase) + r"(?![a-z])", clause)]
    if shapes:
        spec.shape = max(shapes)[2]
    sized = clause
    for start, end, _ in shapes:   # a shape phrase's words name no size
        sized = sized[:start] + " " * (end - start) + sized[end:]
    for words, attr in ((SIZE_WORDS, "size"), (INTENSITY_WORDS, "intensity")):
        hits = []
        for word, value in words:
            for m in re.finditer(r"(?<![a-z-])" + re.escape(word) + r"(?![a-z])", sized):
                hits.append((m.start(), m.end(), value))
        # "more pronounced" is one phrase, not "more" + "pronounced": drop hits inside a longer one.
        hits = [h for h in hits if not any(o[0] <= h[0] and h[1] <= o[1] and o != h for o in hits)]
        if hits:
            last = max(hits)
            setattr(spec, attr, last[2])
            setattr(spec, attr + "_word", clause[last[0]:last[1]])
            said = {attr, "area"} if attr == "size" else {attr}    # a size word also sizes a broad defect
            spec.pinned = tuple(a for a in spec.pinned if a not in said)
    pct = re.search(r"(\d+(?:\.\d+)?)\s*%", clause)
    if pct:
        spec.area = float(min(max(float(pct.group(1)) / 100.0, 0.0005), 0.6))
        spec.size = max(spec.area, 0.02) ** 0.5
        spec.size_word = pct.group(0)
        spec.pinned = tuple(a for a in spec.pinned if a not in ("size", "area"))
    colour_hits = [(m.start(), w) for w in COLOUR_WORDS for m in re.finditer(r"(?<![a-z])" + w + r"(?![a-z])", clause)]
    if colour_hits:
        spec.colour_word = min(colour_hits)[1]
        spec.colour = COLOUR_WORDS[spec.colour_word]
    spec.metallic = bool(re.search(r"metal|silver|steel|chrome|shiny", clause))
    spec.soft = broad or bool(re.search(r"smooth|blend|soft|gradual|feather|diffuse", clause))
    for word, n in COUNT_WORDS.items():
        if re.search(r"(?<![a-z])" + word + r"(?![a-z])", clause):
            spec.count = max(spec.count, n)
            spec.counted = True
    if re.search(r"single|one defect", clause):
        spec.count, spec.counted = 1, True
    for orient in ("horizontal", "vertical", "diagonal"):
        if orient in clause:
            spec.orientation = orient
    # Location: only words before the defect description's own "with/to show" tail matter most, but any counts.
    loc, placed = [], clause.replace("_", " ")
    for part, place in PART_PLACES.items():
        named = re.compile(r"(?<![a-z])" + part + r" +" + PLACE_WORDS + r"(?![a-z])")
        if named.search(placed):
            loc.append(place)
            placed = named.sub(" ", placed)
    for place, stems in _LOCATION_STEMS.items():
        if place not in loc and _first_match(placed, stems) is not None:
            loc.append(place)
    spec.location = tuple(loc)
    return spec
