"""MG backend ``metauas``: MetaUAS (Gao, 2025), "one normal prompt image segments any anomaly", written here from
the published architecture so that the official ``metauas-256.ckpt`` / ``metauas-512.ckpt`` load with strict=True.

Architecture (the paper, MIT-licensed code): a frozen EfficientNet-B4 encoder (the ``efficientnet-pytorch`` layout
that segmentation-models-pytorch wraps, static "same" padding computed for its 380 px reference size) encodes the
query (the anomaly image) and the prompt (the normal image). At the 3 deepest levels the prompt's features are
softly aligned to the query (attention over all prompt positions, keys and queries through a shared 1x1 reduction)
and concatenated to the query's; a UNet decoder with scSE attention and a 1x1 sigmoid head gives the anomaly
probability at the input resolution. Module names mirror the checkpoint's keys (``encoder._blocks.N._depthwise_conv``,
``decoder.blocks.N.attention1.attention.cSE.1``, ``alignment.N.alignment_layer.dimensionality_reduction``,
``mask_head``) — that naming is the only thing shared with the official code.

Torch is imported inside the functions that need it: importing this module costs nothing until a profile asks for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable

# EfficientNet base block groups: (repeats, kernel, stride, expand ratio, in, out); SE ratio 0.25 everywhere.
BASE_GROUPS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
# The encoder yields a feature map at the end of these groups (strides 4, 8, 16, 32); the stem gives stride 2.
STAGE_END_GROUPS = (1, 2, 4, 6)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MetaUASConfig:
    """Defaults are the published model (EfficientNet-B4: width 1.4, depth 1.8, 380 px reference)."""

    width: float = 1.4
    depth: float = 1.8
    reference_size: int = 380
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 48)
    alignment_levels: int = 3


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: multiply, round to a multiple of 8, never drop below 90 %."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF "same" padding for a square input of ``size``, as (left, right, top, bottom)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2, pad // 2, pad - pad // 2


def encoder_channels(config: MetaUASConfig) -> list[int]:
    """Channels of the 6 encoder outputs: the input, the stem, then the 4 stage ends."""
    stem = round_filters(32, config.width)
    outs = [round_filters(BASE_GROUPS[g][5], config.width) for g in STAGE_END_GROUPS]
    return [3, stem, *outs]


def build_model(config: MetaUASConfig | None = None):
    """The MetaUAS network (random weights; the encoder is frozen and in eval mode)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    config = config or MetaUASConfig()
    bn_args = {"eps": 1e-3, "momentum": 0.01}

    class PaddedConv(nn.Conv2d):
        """Conv2d with fixed asymmetric zero padding (efficientnet-pytorch's static same padding); no extra keys."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
                     size: int = 1):
            super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=bias)
            self.pads = same_padding(size, kernel, stride) if kernel > 1 else (0, 0, 0, 0)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return super().forward(F.pad(x, self.pads) if any(self.pads) else x)

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = PaddedConv(cin, mid, 1)
                self._bn0 = nn.BatchNorm2d(mid, **bn_args)
            self._depthwise_conv = PaddedConv(mid, mid, kernel, stride, groups=mid, size=size)
            self._bn1 = nn.BatchNorm2d(mid, **bn_args)
            squeezed = max(1, int(cin * 0.25))
            self._se_reduce = nn.Conv2d(mid, squeezed, 1)
            self._se_expand = nn.Conv2d(squeezed, mid, 1)
            self._project_conv = PaddedConv(mid, cout, 1)
            self._bn2 = nn.BatchNorm2d(cout, **bn_args)
            self.residual = stride == 1 and cin == cout

        def forward(self, inputs: "torch.Tensor") -> "torch.Tensor":
            x = F.silu(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
            x = F.silu(self._bn1(self._depthwise_conv(x)))
            x = x * torch.sigmoid(self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(x, 1)))))
            x = self._bn2(self._project_conv(x))
            return x + inputs if self.residual else x

    class EfficientNetEncoder(nn.Module):
        """EfficientNet without its classifier; keeps ``_conv_head``/``_bn1`` because the checkpoint holds them."""

        def __init__(self) -> None:
            super().__init__()
            size = config.reference_size
            stem = round_filters(32, config.width)
            self._conv_stem = PaddedConv(3, stem, 3, 2, size=size)
            self._bn0 = nn.BatchNorm2d(stem, **bn_args)
            size = math.ceil(size / 2)
            blocks, self.stage_ends = [], []
            for g, (repeats, kernel, stride, expand, cin, cout) in enumerate(BASE_GROUPS):
                cin, cout = round_filters(cin, config.width), round_filters(cout, config.width)
                for r in range(round_repeats(repeats, config.depth)):
                    blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand, size))
                    if r == 0:
                        size = math.ceil(size / stride)
                if g in STAGE_END_GROUPS:
                    self.stage_ends.append(len(blocks))
            self._blocks = nn.ModuleList(blocks)
            head_in, head = round_filters(320, config.width), round_filters(1280, config.width)
            self._conv_head = PaddedConv(head_in, head, 1)
            self._bn1 = nn.BatchNorm2d(head, **bn_args)

        def forward(self, x: "torch.Tensor") -> list["torch.Tensor"]:
            features = [x]
            x = F.silu(self._bn0(self._conv_stem(x)))
            features.append(x)
            for i, block in enumerate(self._blocks, start=1):
                x = block(x)
                if i in self.stage_ends:
                    features.append(x)
            return features

    class SoftAlignment(nn.Module):
        """Each query position attends over all prompt positions; returns the prompt's features re-arranged."""

        def __init__(self, channels: int, hidden: int):
            super().__init__()
            self.dimensionality_reduction = nn.Conv2d(channels, hidden, 1)

        def forward(self, query: "torch.Tensor", prompt: "torch.Tensor") -> "torch.Tensor":
            q = self.dimensionality_reduction(query).flatten(2)  # b, h, Nq
            k = self.dimensionality_reduction(prompt).flatten(2)  # b, h, Np
            attention = torch.softmax(torch.einsum("bcq,bcp->bqp", q, k), dim=-1)
            aligned = torch.einsum("bqp,bcp->bcq", attention, prompt.flatten(2))
            return aligned.reshape(query.shape)

    class AlignmentModule(nn.Module):
        def __init__(self, channels: int, hidden: int):
            super().__init__()
            self.alignment_layer = SoftAlignment(channels, hidden)

        def forward(self, query: "torch.Tensor", prompt: "torch.Tensor") -> "torch.Tensor":
            return torch.cat([query, self.alignment_layer(query, prompt)], dim=1)

    class SCSE(nn.Module):
        """Concurrent spatial and channel squeeze-and-excitation."""

        def __init__(self, channels: int, reduction: int = 16):
            super().__init__()
            self.cSE = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // reduction, 1),
                                     nn.ReLU(inplace=True), nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())
            self.sSE = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x * self.cSE(x) + x * self.sSE(x)

    class Attention(nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.attention = SCSE(channels)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.attention(x)

    def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class DecoderBlock(nn.Module):
        def __init__(self, cin: int, skip: int, cout: int):
            super().__init__()
            self.conv1 = conv_bn_relu(cin + skip, cout)
            # Both attentions exist in every block (so the checkpoint has their weights), even the last one,
            # which has no skip: there attention1 is never applied but attention2 is.
            self.attention1 = Attention(cin + skip)
            self.conv2 = conv_bn_relu(cout, cout)
            self.attention2 = Attention(cout)

        def forward(self, x: "torch.Tensor", skip: "torch.Tensor | None") -> "torch.Tensor":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if skip is not None:
                x = self.attention1(torch.cat([x, skip], dim=1))
            return self.attention2(self.conv2(self.conv1(x)))

    class UnetDecoder(nn.Module):
        def __init__(self, channels: list[int]):
            super().__init__()
            levels = channels[1:][::-1]  # deepest first, input resolution dropped
            n = config.alignment_levels
            widths = list(config.decoder_channels)
            cins = [levels[0] * (2 if n else 1)] + widths[:-1]
            skips = list(levels[1:]) + [0]
            for i in range(n - 1):  # the aligned levels arrive doubled by concatenation
                skips[i] *= 2
            self.blocks = nn.ModuleList(DecoderBlock(c, s, o) for c, s, o in zip(cins, skips, widths))

        def forward(self, features: list["torch.Tensor"]) -> "torch.Tensor":
            levels = features[1:][::-1]
            x = levels[0]
            for i, block in enumerate(self.blocks):
                x = block(x, levels[i + 1] if i + 1 < len(levels) else None)
            return x

    class MetaUAS(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            channels = encoder_channels(config)
            self.encoder = EfficientNetEncoder()
            self.decoder = UnetDecoder(channels)
            self.alignment = nn.ModuleList(AlignmentModule(channels[-(i + 1)], channels[-(i + 1)] // 2)
                                           for i in range(config.alignment_levels))
            self.mask_head = nn.Conv2d(config.decoder_channels[-1], 1, 1)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
            self.encoder.requires_grad_(False)

        def train(self, mode: bool = True) -> "MetaUAS":
            super().train(mode)
            self.encoder.eval()  # frozen, always with its running statistics
            return self

        def forward(self, query: "torch.Tensor", prompt: "torch.Tensor") -> "torch.Tensor":
            """query, prompt: (B, 3, H, W) in [0, 1], H and W multiples of 32. Returns (B, 1, H, W) probabilities."""
            with torch.no_grad():
                q = self.encoder((query - self.mean) / self.std)
                p = self.encoder((prompt - self.mean) / self.std)
            for i, align in enumerate(self.alignment):
                q[-(i + 1)] = align(q[-(i + 1)], p[-(i + 1)])
            return torch.sigmoid(self.mask_head(self.decoder(q)))

    model = MetaUAS()
    model.eval()
    return model


def load_state_dict(path: Path) -> dict[str, Any]:
    """A plain state dict, or a Lightning checkpoint's ``state_dict``; tensors only (weights_only)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BackendUnavailable(f"metauas: {path} holds no state dict; run `local-agent doctor`")
    return obj


class MetaUASMask:
    """MG backend ``metauas``: mask = MetaUAS(query = the edit, prompt = the normal image) >= ``threshold``.

    ``checkpoint`` is the official file (256 or 512 px model; ``image_size`` must match it). The architecture
    options exist so tests can load a small instance through this exact code; leave them at their defaults for
    the official checkpoints.
    """

    def __init__(self, checkpoint: str = "weights/metauas/metauas-256.ckpt", image_size: int = 256,
                 threshold: float = 0.5, device: str = "cpu", width: float = 1.4, depth: float = 1.8,
                 decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64, 64, 48)):
        path = Path(checkpoint)
        if not path.is_file():
            raise BackendUnavailable(f"mask_gen backend metauas: missing {path} (the official MetaUAS checkpoint); "
                                     "the 'difference' backend needs no weights; run `local-agent doctor`")
        if image_size % 32:
            raise ValueError(f"metauas image_size must be a multiple of 32, got {image_size}")
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.device = device
        import torch

        self.model = build_model(MetaUASConfig(width=float(width), depth=float(depth),
                                               decoder_channels=tuple(int(c) for c in decoder_channels)))
        try:
            self.model.load_state_dict(load_state_dict(path), strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise BackendUnavailable(f"metauas: {path} does not match the MetaUAS architecture ({first[:160]}); "
                                     "run `local-agent doctor`") from e
        self.model.to(device)
        self._torch = torch

    def probability(self, normal: np.ndarray, edited: np.ndarray) -> np.ndarray:
        """Anomaly probability per pixel of ``edited`` (float32 HxW in [0, 1]), at the input's size."""
        torch, F = self._torch, self._torch.nn.functional
        h, w = edited.shape[:2]

        def tensor(image: np.ndarray) -> "torch.Tensor":
            rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
            t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255).to(self.device)
            return F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

        with torch.inference_mode():
            prob = self.model(tensor(edited), tensor(normal))
            prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        return prob[0, 0].float().cpu().numpy()

    def mask(self, normal: np.ndarray, edited: np.ndarray) -> np.ndarray:
        return self.probability(normal, edited) >= self.threshold
