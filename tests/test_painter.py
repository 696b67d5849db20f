"""The procedural painter: the words decide kind, place and size; defects sit on the object; deterministic."""
import numpy as np
import pytest

from local_agent.tools.imaging import difference_map, difference_mask, elongation, foreground_mask
from local_agent.tools.painter import ProceduralPainter, parse_prompt
from local_agent.tools.painter.spec import KIND_PHRASES, KINDS, kind_of


def prompt(words: str, item: str = "transistor") -> str:
    return f"Using the provided image, change only {words}. Keep the rest of the image unchanged."


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


@pytest.mark.parametrize("name, kind", [
    ("bent_lead", "bent"), ("cut_lead", "cut"), ("damaged_case", "broken"), ("misplaced", "missing"),
    ("metal_contamination", "contamination"), ("glue", "glue"), ("thread", "thread"), ("faulty_imprint", "print"),
    ("poke", "hole"), ("color", "color"), ("oil", "stain"), ("fold", "fold"), ("rough", "rough"),
    ("broken_large", "broken"), ("squeeze", "bent"), ("crack", "crack"), ("scratch_head", "scratch"),
])
def test_type_names_map_to_kinds(name, kind):
    assert kind_of(name) == kind


def test_prompt_words_are_read():
    spec = parse_prompt(prompt("the top left corner of the grid to add two tiny faint black horizontal scratches"))
    assert spec.kind == "scratch" and spec.count == 2 and spec.orientation == "horizontal"
    assert "top" in spec.location and "left" in spec.location and "corner" in spec.location
    assert spec.size < 0.1 and spec.intensity < 0.5 and spec.colour_word == "black"
    refined = parse_prompt(prompt("the centre to add a faint small hole. Refinement: make it more pronounced; "
                                  "make it medium sized"))
    assert refined.intensity == 1.0 and refined.size == pytest.approx(0.17)
    # words after "Keep the rest" never change the defect
    assert parse_prompt(prompt("the centre to add a scratch") + " Keep the rest free of any hole").kind == "scratch"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("category", ["grid", "transistor"])
def test_every_kind_paints_on_the_object(kind, category, grid_image, transistor_image):
    image = grid_image if category == "grid" else transistor_image
    painter = ProceduralPainter()
    out, region = painter.edit_with_region(image, prompt(f"the centre to add a clearly visible {KIND_PHRASES[kind][2:]}"),
                                           seed=5, category=category)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert region.sum() > 10, "nothing visible was drawn"
    # Soft kinds fade out below visibility; nothing visible (> 6 ΔE) lies outside the reported region.
    assert (difference_map(image, out)[~region] > 6).mean() < 0.002, "visible changes outside the region"
    fg = foreground_mask(image, category)
    on_object = (region & fg).sum() / region.sum()
    assert on_object >= (0.6 if kind in ("missing", "broken", "bent") else 0.9)


def test_words_alone_change_kind_place_and_size(transistor_image):
    painter = ProceduralPainter(jitter=False)
    image = transistor_image

    def region(words):
        return painter.edit_with_region(image, prompt(words), seed=11, category="transistor")[1]

    scratch = region("the centre of the transistor to add a clearly visible medium thin straight scratch")
    hole = region("the centre of the transistor to add a clearly visible medium small round hole")
    assert elongation(scratch) > 3 * elongation(hole)

    top = region("the top part of the transistor to add a clearly visible small contamination particle")
    bottom = region("the bottom part of the transistor to add a clearly visible small contamination particle")
    left = region("the left side of the transistor to add a clearly visible small contamination particle")
    right = region("the right side of the transistor to add a clearly visible small contamination particle")
    assert centroid(top)[1] + 40 < centroid(bottom)[1]
    assert centroid(left)[0] + 40 < centroid(right)[0]

    small = region("the centre of the transistor to add a clearly visible tiny liquid stain")
    large = region("the centre of the transistor to add a clearly visible large liquid stain")
    assert large.sum() > 4 * small.sum()

    faint = painter.edit(image, prompt("the centre of the transistor to add a faint stain"), seed=3, category="transistor")
    strong = painter.edit(image, prompt("the centre of the transistor to add a pronounced stain"), seed=3,
                          category="transistor")
    d_faint, d_strong = difference_mask(image, faint)[1], difference_mask(image, strong)[1]
    assert d_strong.max() > 1.5 * d_faint.max()


def test_deterministic_per_seed(grid_image):
    painter = ProceduralPainter()
    p = prompt("the centre of the grid to add a visible medium crack")
    a = painter.edit(grid_image, p, seed=7, category="grid")
    b = ProceduralPainter().edit(grid_image, p, seed=7, category="grid")
    c = painter.edit(grid_image, p, seed=8, category="grid")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_difference_mask_recovers_the_painted_region(shared_data):
    """MG 'difference' against the painter's own edit region: IoU >= 0.9 on real grid and transistor images."""
    from PIL import Image

    painter = ProceduralPainter()
    ious = {}
    for category in ("grid", "transistor"):
        for name in ("000.png", "017.png"):
            image = np.asarray(Image.open(shared_data / "mvtec" / category / "train" / "good" / name).convert("RGB"))
            for kind in KINDS:
                p = prompt(f"the centre to add a visible medium {KIND_PHRASES[kind][2:]}")
                out, region = painter.edit_with_region(image, p, seed=1, category=category)
                mask, _ = difference_mask(image, out)
                ious.setdefault(kind, []).append((mask & region).sum() / max((mask | region).sum(), 1))
    per_kind = {k: float(np.mean(v)) for k, v in ious.items()}
    assert np.mean(list(per_kind.values())) >= 0.9, per_kind
    assert min(per_kind.values()) >= 0.8, per_kind
