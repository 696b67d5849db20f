"""ResNet34, the paper's defect-type classifier, with torchvision's parameter names.

Why written here: torchvision has no build that imports with the CPU torch of this install, yet the paper's Table 2
number is a ResNet34's. The network is small (BasicBlocks, 3-4-6-3) and its state-dict layout is fixed, so a
``resnet34-b627a593.pth`` downloaded once on a connected machine (torchvision's ImageNet weights) loads into it
strictly, with or without torchvision. The user puts that file at ``weights/resnet34/resnet34.pth``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..tools.base import BackendUnavailable

RESNET34_FILE = Path("resnet34") / "resnet34.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet34(nn.Module):
    """torchvision's ``resnet34`` layout: stem, layer1-4 of 3/4/6/3 BasicBlocks, global pooling, ``fc``."""

    def __init__(self, num_classes: int = 1000, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        plan = [(w, 3, 1), (2 * w, 4, 2), (4 * w, 6, 2), (8 * w, 3, 2)]
        cin = w
        for i, (cout, blocks, stride) in enumerate(plan, 1):
            setattr(self, f"layer{i}", nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                                                       for b in range(blocks)]))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem to layer3: the part the harness keeps frozen."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """layer4, pooling and ``fc``: the part the harness fine-tunes."""
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer4(x), 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def load_resnet34(weights_dir: Path | None) -> ResNet34:
    """ImageNet ResNet34 from ``<weights_dir>/resnet34/resnet34.pth``, loaded strictly (any mismatch is an error)."""
    path = Path(weights_dir or "weights") / RESNET34_FILE
    if not path.is_file():
        raise BackendUnavailable(f"ResNet34 classifier: missing {path} (torchvision's resnet34-b627a593.pth, "
                                 "renamed); the EfficientNet-Lite0 classifier works without it")
    state = torch.load(path, map_location="cpu", weights_only=True)
    width = int(state["conv1.weight"].shape[0]) if "conv1.weight" in state else 64
    model = ResNet34(num_classes=int(state["fc.weight"].shape[0]) if "fc.weight" in state else 1000, width=width)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise BackendUnavailable(f"ResNet34 classifier: {path} is not a torchvision resnet34 state dict ({first})")
    return model


def to_input(images) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> ImageNet-normalised float (N, 3, S, S)."""
    import numpy as np

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
