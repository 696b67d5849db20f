"""IG backend ``diffusers`` on tiny random pipelines saved and loaded like real checkpoints."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from tiny_backends import build_all

from local_agent.tools import image_gen
from local_agent.tools.base import BackendUnavailable, Workspace
from local_agent.tools.diffusion import DiffusersEditor, defect_region

PROMPT = ("Using the provided image, change only the {place} of the transistor to add a clearly visible medium "
          "round hole. Keep the rest of the image unchanged.")


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def small_transistor(transistor_image):
    return cv2.resize(transistor_image, (64, 64), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def inpainter(models):
    return DiffusersEditor(str(models["sd_inpaint"]), steps=2, resolution=64, guidance=5.0)


def test_region_follows_the_prompt_words(transistor_image):
    from local_agent.tools.imaging import foreground_mask

    fg = foreground_mask(transistor_image, "transistor")
    ys, xs = np.nonzero(fg)
    cy, cx = ys.mean(), xs.mean()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        upper_left = defect_region(transistor_image, PROMPT.format(place="upper left area"), "transistor", rng)
        lower_right = defect_region(transistor_image, PROMPT.format(place="lower right area"), "transistor", rng)
        for soft, sign in ((upper_left, -1), (lower_right, 1)):
            ry, rx = np.nonzero(soft > 0.5)
            assert len(ry) > 20
            assert sign * (ry.mean() - cy) > 0 and sign * (rx.mean() - cx) > 0
            assert fg[soft > 0.5].mean() > 0.8  # on the object
            assert soft.max() == 1.0 and (soft == 0).mean() > 0.8  # soft edge, exact zeros far from it


def test_scratch_region_is_elongated_and_size_words_matter(transistor_image):
    from local_agent.tools.imaging import elongation

    rng = np.random.default_rng(0)
    scratch = defect_region(transistor_image, "Using the provided image, change only the centre to add a thin "
                            "horizontal scratch. Keep the rest unchanged.", "transistor", rng) > 0.5
    assert elongation(scratch) > 2.5
    small = defect_region(transistor_image, PROMPT.format(place="centre").replace("medium", "small"), "transistor",
                          np.random.default_rng(1)) > 0.5
    large = defect_region(transistor_image, PROMPT.format(place="centre").replace("medium", "large"), "transistor",
                          np.random.default_rng(1)) > 0.5
    assert large.sum() > 2 * small.sum()


def test_inpainting_changes_only_the_region_and_restores_the_rest(inpainter, small_transistor):
    assert inpainter.mode == "inpaint" and inpainter.class_name == "StableDiffusionInpaintPipeline"
    out, region = inpainter.edit_with_region(small_transistor, PROMPT.format(place="centre"), seed=5,
                                             category="transistor")
    assert out.shape == small_transistor.shape and out.dtype == np.uint8
    assert np.array_equal(out[~region], small_transistor[~region])  # exactly the original outside
    assert (out[region] != small_transistor[region]).any()
    again = inpainter.edit(small_transistor, PROMPT.format(place="centre"), seed=5, category="transistor")
    assert np.array_equal(out, again)  # seed makes it reproducible
    other = inpainter.edit(small_transistor, PROMPT.format(place="centre"), seed=6, category="transistor")
    assert not np.array_equal(out, other)


def test_output_returns_at_input_size_and_grey_stays_grey(inpainter, grid_image):
    grey = cv2.resize(grid_image, (80, 48), interpolation=cv2.INTER_AREA)  # not square, not the run resolution
    out = inpainter.edit(grey, "Using the provided image, change only the centre of the grid to add a large dark "
                         "stain. Keep the rest unchanged.", seed=0, category="grid")
    assert out.shape == grey.shape
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_instruction_edit_uses_the_prompt_alone(models, small_transistor):
    editor = DiffusersEditor(str(models["instruct_pix2pix"]), steps=2, resolution=64)
    assert editor.mode == "instruct"
    out, region = editor.edit_with_region(small_transistor, "add a scratch on the transistor", seed=1)
    assert out.shape == small_transistor.shape and region.all()
    assert np.abs(out.astype(int) - small_transistor).mean() > 0


def test_missing_or_incomplete_folder_names_the_file(models, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"model_index\.json.*local-agent doctor"):
        DiffusersEditor(str(tmp_path / "nothing-here"))
    broken = tmp_path / "broken"
    shutil.copytree(models["sd_inpaint"], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BackendUnavailable, match=r"unet.*local-agent doctor") as e:
        DiffusersEditor(str(broken))
    assert "\n" not in str(e.value)
    shutil.copy(models["sd_inpaint"] / "unet" / "diffusion_pytorch_model.safetensors", broken / "unet")
    DiffusersEditor(str(broken), steps=1, resolution=64)  # complete again: loads
    shutil.rmtree(broken / "vae")
    with pytest.raises(BackendUnavailable, match="vae"):
        DiffusersEditor(str(broken))


def test_only_pipeline_classes_from_model_index(models, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(models["sd_inpaint"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    for name in ("AutoencoderKL", "os.system", "NoSuchPipeline"):
        index["_class_name"] = name
        (folder / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(BackendUnavailable):
            DiffusersEditor(str(folder), mode="inpaint")


def test_image_gen_tool_from_a_profile(models, small_transistor):
    tool = image_gen.build({"backend": "diffusers", "model": str(models["sd_inpaint"]), "steps": 2, "resolution": 64})
    ws = Workspace(category="transistor", anomaly_type="hole", images=[small_transistor], seed=3)
    result = tool(ws, prompt=PROMPT.format(place="centre"))
    assert result["image_index"] == 2 and ws.images[1].shape == small_transistor.shape
