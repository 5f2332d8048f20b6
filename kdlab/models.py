"""Model zoo: small MNIST teachers/students and the CIFAR networks of the KD literature.

``create_model(name, num_classes)`` builds a fresh, randomly initialised network; ``list_models()``
lists the names. Every model maps float images ``(B, C, H, W)`` to logits ``(B, num_classes)``.

MNIST (28x28, 1 channel; built for fast CPU training):

================  =========================================================  ===========
name              architecture                                               parameters
================  =========================================================  ===========
``cnn``           teacher: [conv5x5-BN-ReLU-maxpool] x2 (16, 32 ch),            417,578
                  FC 256 + dropout 0.3
``small_cnn``     student: [conv3x3-ReLU-maxpool] x2 (8, 16 ch), linear          9,098
``mlp256``        student: 784 -> 256 -> 10                                     203,530
``mlp64``         student: 784 -> 64 -> 10                                       50,890
``mlp16``         student: 784 -> 16 -> 10                                       12,730
================  =========================================================  ===========

The students have no BatchNorm, no dropout and no in-place ops, so a batch of them can be run as
one network with ``torch.func.stack_module_state`` + ``vmap`` (see ``kdlab.sweeps``).

CIFAR (32x32, 3 channels): our own implementations of the networks used by RepDistiller (Tian et
al., CRD, ICLR 2020) and mdistiller (Zhao et al., DKD, CVPR 2022), with the same layers and hence
exactly the same parameter counts (checked in ``tests/test_models.py``):

* ``resnet8 ... resnet110``: the CIFAR ResNets of He et al. (2016), depth 6n+2, 16/32/64 channels;
  ``resnet8x4`` / ``resnet32x4``: the same with 4x wider stages (64/128/256, stem 32).
* ``wrn_D_W``: pre-activation Wide ResNets (Zagoruyko & Komodakis 2016), depth D = 6n+4, width W.
* ``vgg8/11/13``: VGG with BatchNorm and a single linear classifier after global average pooling.

Differences from the reference code that do not change the function or the parameter count: no
``is_feat`` feature outputs, no in-place ReLU, ``torch.flatten`` instead of ``.view`` (so
``channels_last`` inputs work).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["create_model", "list_models", "count_parameters"]


# --------------------------------------------------------------------------------------------------
# MNIST models


def _mlp(hidden: int, in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """One hidden layer: flatten -> linear -> ReLU -> linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _mnist_cnn(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """The teacher: two 5x5 conv blocks with BatchNorm and 2x2 max pooling, then 256 units with
    dropout. Chosen by measurement on mnist10k (8,000 training images): it reaches ~98.7-98.9 %
    test accuracy in 8-10 epochs, where a 3x3 32/64-channel net without dropout overfits (~98.0 %)."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, 256), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(256, num_classes),
    )


def _small_cnn(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """A tiny convolutional student (no BatchNorm, no dropout)."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, num_classes),
    )


# --------------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, "option B" 1x1-conv shortcuts as in RepDistiller)


class _BasicBlock(nn.Module):
    """out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: stem conv, three stages of n basic blocks, avg-pool, linear."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for stage, width in enumerate(widths[1:]):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(_BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # = AvgPool2d(8) on 32x32 inputs
        return self.fc(x)


# --------------------------------------------------------------------------------------------------
# Wide ResNets (pre-activation blocks, Zagoruyko & Komodakis 2016)


class _WideBlock(nn.Module):
    """Pre-activation block. When the shape changes, the shortcut (a 1x1 conv) is applied to the
    *activated* input ReLU(BN(x)), as in the reference WRN code."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-width: stem conv (16), three stages of (depth-4)/6 blocks (16w, 32w, 64w channels)."""

    def __init__(self, depth: int, width: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages, channels = [], widths[0]
        for stage, out_channels in enumerate(widths[1:]):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(_WideBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------------------------------
# VGG with BatchNorm, CIFAR variant (global average pooling + one linear layer)

_VGG_STAGES = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class CifarVGG(nn.Module):
    """Five stages of conv3x3(+bias)-BN-ReLU; 2x2 max pools after the first three stages (32->4),
    global average pooling after the last, and a linear classifier on the 512 features."""

    def __init__(self, stages: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        layers, channels = [], in_channels
        for index, stage in enumerate(stages):
            for width in stage:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            if index < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------------------
# registry

_MNIST_MODELS = {
    "cnn": _mnist_cnn,
    "small_cnn": _small_cnn,
    "mlp16": lambda c, s, k: _mlp(16, c, s, k),
    "mlp64": lambda c, s, k: _mlp(64, c, s, k),
    "mlp256": lambda c, s, k: _mlp(256, c, s, k),
}

_RESNET_WIDTHS, _RESNET_X4_WIDTHS = (16, 16, 32, 64), (32, 64, 128, 256)
_CIFAR_MODELS = {
    **{f"resnet{depth}": (lambda d: lambda c, k: CifarResNet(d, _RESNET_WIDTHS, k, c))(depth)
       for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": lambda c, k: CifarResNet(8, _RESNET_X4_WIDTHS, k, c),
    "resnet32x4": lambda c, k: CifarResNet(32, _RESNET_X4_WIDTHS, k, c),
    "wrn_16_1": lambda c, k: WideResNet(16, 1, k, c),
    "wrn_16_2": lambda c, k: WideResNet(16, 2, k, c),
    "wrn_40_1": lambda c, k: WideResNet(40, 1, k, c),
    "wrn_40_2": lambda c, k: WideResNet(40, 2, k, c),
    **{name: (lambda n: lambda c, k: CifarVGG(_VGG_STAGES[n], k, c))(name) for name in _VGG_STAGES},
}


def list_models(kind: str | None = None) -> list[str]:
    """Sorted model names; ``kind`` = None (all), ``"mnist"`` or ``"cifar"``."""
    if kind is None:
        return sorted([*_MNIST_MODELS, *_CIFAR_MODELS])
    if kind == "mnist":
        return sorted(_MNIST_MODELS)
    if kind == "cifar":
        return sorted(_CIFAR_MODELS)
    raise ValueError(f"kind must be None, 'mnist' or 'cifar', got {kind!r}")


def create_model(name: str, num_classes: int = 10, in_channels: int | None = None, image_size: int | None = None) -> nn.Module:
    """A freshly initialised model (seed with ``torch.manual_seed`` before calling for reproducibility).

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the output layer.
        in_channels: image channels; default 1 for MNIST models, 3 for CIFAR models.
        image_size: side of the square input, only used by the MNIST models (their flatten size
            depends on it); default 28. Must be divisible by 4 for the CNNs. CIFAR models accept
            any size the network can downsample (32 is the standard).
    """
    if not isinstance(name, str) or name not in _MNIST_MODELS and name not in _CIFAR_MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    for argument, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if value is None and argument != "num_classes":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{argument} must be a positive int, got {value!r}")
    if name in _MNIST_MODELS:
        image_size = 28 if image_size is None else image_size
        if name in ("cnn", "small_cnn") and image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 for {name!r}, got {image_size}")
        return _MNIST_MODELS[name](1 if in_channels is None else in_channels, image_size, num_classes)
    if image_size is not None:
        raise ValueError(f"image_size is only used by the MNIST models, not by {name!r}")
    return _CIFAR_MODELS[name](3 if in_channels is None else in_channels, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the figure quoted in the KD papers' tables)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
