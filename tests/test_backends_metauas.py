"""MG backend ``metauas``: the official key layout, strict loading, forward shapes, the MaskGen tool."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from tiny_backends import build_all

from local_agent.tools import mask_gen
from local_agent.tools.base import BackendUnavailable, Workspace
from local_agent.tools.metauas import MetaUASConfig, MetaUASMask, build_model

# Keys and shapes of the official metauas-256/512 checkpoints (EfficientNet-B4 encoder from efficientnet-pytorch,
# UNet decoder with scSE whose deepest two skips arrive doubled by the prompt concatenation, 3 alignment layers).
OFFICIAL_SHAPES = {
    "encoder._conv_stem.weight": (48, 3, 3, 3),
    "encoder._bn0.running_var": (48,),
    "encoder._blocks.0._depthwise_conv.weight": (48, 1, 3, 3),
    "encoder._blocks.0._se_reduce.weight": (12, 48, 1, 1),
    "encoder._blocks.2._expand_conv.weight": (144, 24, 1, 1),
    "encoder._blocks.31._project_conv.weight": (448, 2688, 1, 1),
    "encoder._conv_head.weight": (1792, 448, 1, 1),
    "encoder._bn1.weight": (1792,),
    "alignment.0.alignment_layer.dimensionality_reduction.weight": (224, 448, 1, 1),
    "alignment.1.alignment_layer.dimensionality_reduction.weight": (80, 160, 1, 1),
    "alignment.2.alignment_layer.dimensionality_reduction.bias": (28,),
    "decoder.blocks.0.conv1.0.weight": (256, 896 + 320, 3, 3),
    "decoder.blocks.0.attention1.attention.cSE.1.weight": (76, 1216, 1, 1),
    "decoder.blocks.0.attention1.attention.sSE.0.weight": (1, 1216, 1, 1),
    "decoder.blocks.1.conv1.0.weight": (128, 256 + 112, 3, 3),
    "decoder.blocks.2.conv1.0.weight": (64, 128 + 32, 3, 3),
    "decoder.blocks.3.attention2.attention.cSE.3.weight": (64, 4, 1, 1),
    "decoder.blocks.4.conv2.1.num_batches_tracked": (),
    "mask_head.weight": (1, 48, 1, 1),
}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def small_transistor(transistor_image):
    return cv2.resize(transistor_image, (64, 64), interpolation=cv2.INTER_AREA)


def test_full_size_model_has_the_official_key_layout():
    state = build_model().state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(1 for k in state if k.startswith("encoder._blocks.") and k.endswith("_depthwise_conv.weight")) == 32
    # the last block has no skip, yet both of its scSE modules exist (attention2 is applied there)
    assert tuple(state["decoder.blocks.4.attention1.attention.cSE.1.weight"].shape) == (4, 64, 1, 1)
    assert tuple(state["decoder.blocks.4.attention2.attention.cSE.1.weight"].shape) == (3, 48, 1, 1)
    assert not any(k.startswith(("encoder._fc", "segmentation_head", "preprocess")) for k in state)
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert 21e6 < params < 23e6  # the paper's ~22M


def test_small_instance_loads_strictly_and_segments(models, small_transistor):
    backend = MetaUASMask(str(models["metauas"]), image_size=64, **models["metauas_options"])
    saved = torch.load(models["metauas"], weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in backend.model.state_dict().items())
    edited = small_transistor.copy()
    edited[20:30, 20:30] = 255
    prob = backend.probability(small_transistor, edited)
    assert prob.shape == (64, 64) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    assert prob.std() > 0
    assert np.array_equal(backend.mask(small_transistor, edited), prob >= backend.threshold)
    other = backend.probability(edited, small_transistor)  # query and prompt play different roles
    assert not np.allclose(prob, other)


def test_forward_shapes_at_two_sizes():
    model = build_model(MetaUASConfig(width=0.25, depth=0.34, decoder_channels=(32, 32, 16, 16, 16)))
    for size in (64, 96):
        q, p = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
        with torch.no_grad():
            out = model(q, p)
        assert out.shape == (2, 1, size, size) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not any(p.requires_grad for p in model.encoder.parameters())  # frozen encoder
    assert any(p.requires_grad for p in model.decoder.parameters())


def test_wrong_or_missing_checkpoint_is_one_line(models, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"missing .*metauas-256\.ckpt.*local-agent doctor"):
        MetaUASMask(str(tmp_path / "metauas-256.ckpt"))
    with pytest.raises(BackendUnavailable, match="does not match") as e:
        MetaUASMask(str(models["metauas"]), image_size=64)  # official-size architecture, small checkpoint
    assert "\n" not in str(e.value)
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": torch.load(models["metauas"], weights_only=True), "epoch": 3}, lightning)
    MetaUASMask(str(lightning), image_size=64, **models["metauas_options"])


def test_mask_through_the_tool(models, small_transistor):
    tool = mask_gen.build({"backend": "metauas", "checkpoint": str(models["metauas"]), "image_size": 64,
                           "threshold": 0.5, **models["metauas_options"]})
    edited = small_transistor.copy()
    edited[30:40, 25:45] = (20, 20, 20)
    ws = Workspace(category="transistor", anomaly_type="hole", images=[small_transistor, edited])
    result = tool(ws, image_index=2)
    assert ws.masks[2].shape == (64, 64) and ws.masks[2].dtype == bool
    assert result["anomaly_ratio"] == round(float(ws.masks[2].mean()), 5)
