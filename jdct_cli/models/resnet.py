"""The one ResNet-50 builder of the zoo: Keras "v1" bottleneck blocks, stages, head, base class.

Every network of the zoo is an *input transform* (model specific, see ``zoo.py``) followed by
stages of bottleneck blocks built here and a global-average-pool + fully connected head.

Conventions (read off the authors' Keras diagrams, ``architectures.md``):

- ConvBlock(k, [f1, f2, f3], s): 1x1 conv f1 **stride s** -> BN -> ReLU -> kxk conv f2 ("same",
  stride 1) -> BN -> ReLU -> 1x1 conv f3 -> BN; shortcut 1x1 conv f3 stride s -> BN; add -> ReLU.
  Keras v1 puts the stride on the first 1x1 convolution (torchvision's v1.5 puts it on the 3x3).
- IdentityBlock(k, [f1, f2, f3]): the same main path without stride, identity shortcut.
- TensorFlow "same" padding: for an even kernel the extra pad row/column goes *after* (k=2,
  stride 1: 0 before, 1 after), which PyTorch's symmetric ``padding=`` cannot express.
- Blocks are named like the diagrams (``res3a``, ``res4x``...) and their convolutions
  ``branch2a``/``branch2b``/``branch2c``/``branch1``, so forward hooks can be checked against them.

Tensors are NCHW float (any float dtype autocast accepts); spatial sizes may be any size the
strides allow, not only 224-pixel ones, since the head pools globally.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

#: Stage widths [f1, f2, f3] of ResNet-50, by stage number.
RESNET50_WIDTHS = {2: (64, 64, 256), 3: (128, 128, 512), 4: (256, 256, 1024), 5: (512, 512, 2048)}
#: Blocks per stage of ResNet-50.
RESNET50_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) along one axis of ``size`` pixels.

    The output has ceil(size / stride) pixels; an odd total pad puts the extra pixel after.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding, computed from the input size at run time.

    Odd kernels at stride 1 use the conv's own symmetric padding (no extra copy); other cases
    (even kernels, strided kernels > 1) pad explicitly with ``F.pad`` only when needed.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = False):
        self._static = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=kernel_size // 2 if self._static else 0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._static and self.kernel_size[0] > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class Bottleneck(nn.Module):
    """A Keras v1 ConvBlock (``projection=True``) or IdentityBlock; output [B, f3, ceil(H/s), ceil(W/s)]."""

    def __init__(self, in_channels: int, widths: Sequence[int], kernel: int = 3, stride: int = 1,
                 projection: bool = True):
        super().__init__()
        f1, f2, f3 = widths
        if not projection and (stride != 1 or in_channels != f3):
            raise ConfigError(f"an identity block needs stride 1 and {f3} input channels, got "
                             f"stride {stride} and {in_channels}")
        self.branch2a = SameConv2d(in_channels, f1, 1, stride=stride)
        self.bn2a = nn.BatchNorm2d(f1)
        self.branch2b = SameConv2d(f1, f2, kernel)
        self.bn2b = nn.BatchNorm2d(f2)
        self.branch2c = SameConv2d(f2, f3, 1)
        self.bn2c = nn.BatchNorm2d(f3)
        if projection:
            self.branch1 = SameConv2d(in_channels, f3, 1, stride=stride)
            self.bn1 = nn.BatchNorm2d(f3)
        else:
            self.branch1 = None
            self.bn1 = None
        self.out_channels = f3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn2a(self.branch2a(x)))
        out = F.relu(self.bn2b(self.branch2b(out)))
        out = self.bn2c(self.branch2c(out))
        shortcut = x if self.branch1 is None else self.bn1(self.branch1(x))
        return F.relu(out + shortcut)


@dataclass(frozen=True)
class Stage:
    """One stage: blocks ``{name}{letter}``, the first a ConvBlock unless ``continues``.

    ``kernels`` gives each block's middle kernel (ResNet-50: all 3; RFA stage: 1, 2, 3) and
    ``letters`` the diagram's block letters (default a, b, c...; LessIdBlocks keep the
    original letters of the surviving blocks, e.g. res3a, res3d; "" names a lone block like its
    stage, e.g. Late-Concat's ``res4x``). ``continues`` makes every
    block an IdentityBlock (a stage split by a concatenation, e.g. Late-Concat's res4b..res4f).
    """

    name: str
    widths: tuple[int, int, int]
    stride: int = 1
    kernels: tuple[int, ...] = (3, 3, 3)
    letters: Optional[str] = None
    continues: bool = False

    def block_names(self) -> list[str]:
        if self.letters == "" and len(self.kernels) == 1:  # a lone block named like its stage (res4x)
            return [self.name]
        letters = self.letters or "abcdefghijklmnopqrstuvwxyz"[: len(self.kernels)]
        if len(letters) != len(self.kernels):
            raise ConfigError(f"stage {self.name}: {len(letters)} letters for {len(self.kernels)} blocks")
        return [f"{self.name}{letter}" for letter in letters]


def resnet_stage(name: str, stage: int, stride: int, *, div: float = 1.0, blocks: Optional[int] = None,
                 letters: Optional[str] = None, kernels: Optional[Sequence[int]] = None,
                 widths: Optional[Sequence[int]] = None, continues: bool = False) -> Stage:
    """ResNet-50's stage ``stage`` (widths floor(c/div)), with optional overrides."""
    w = tuple(widths) if widths is not None else tuple(int(math.floor(c / div + 1e-9))
                                                       for c in RESNET50_WIDTHS[stage])
    if kernels is None:
        n = blocks if blocks is not None else (len(letters) if letters else RESNET50_BLOCKS[stage])
        kernels = (3,) * n
    return Stage(name, w, stride, tuple(kernels), letters, continues)


def rfa_stage(name: str = "res2", widths: Sequence[int] = RESNET50_WIDTHS[4]) -> Stage:
    """The "receptive-field aware" stage: ConvBlock k=1, IdentityBlock k=2, IdentityBlock k=3, stride 1."""
    return Stage(name, tuple(widths), 1, (1, 2, 3))


def build_stages(in_channels: int, stages: Sequence[Stage]) -> tuple[nn.Sequential, int]:
    """Bottleneck blocks of ``stages`` as one ``nn.Sequential`` named like the diagram, and its output width."""
    blocks: "OrderedDict[str, nn.Module]" = OrderedDict()
    channels = in_channels
    for stage in stages:
        for i, (name, kernel) in enumerate(zip(stage.block_names(), stage.kernels)):
            first = i == 0 and not stage.continues
            block = Bottleneck(channels, stage.widths, kernel, stage.stride if first else 1, projection=first)
            blocks[name] = block
            channels = block.out_channels
    return nn.Sequential(blocks), channels


class Head(nn.Module):
    """Global average pool -> fully connected: [B, C, H, W] -> logits [B, num_classes]."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Concat(nn.Module):
    """Channel concatenation as a module, so that hooks see it (diagram nodes ``concatenate_N``)."""

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, dim=1)


class FixedConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` whose filters ``weight`` [out, in, kh, kw] are a *buffer*: fixed
    filters (DCT-Frozen's DCT basis) that no optimizer, ``requires_grad_`` or weight decay can change.
    Saved in the state dict under the same ``weight`` key as a trained convolution's."""

    def __init__(self, weight: torch.Tensor, stride: int = 1):
        out_channels, in_channels, kh, kw = weight.shape
        super().__init__(in_channels, out_channels, (kh, kw), stride=stride, bias=False)
        device = self.weight.device  # meta while the zoo is only being measured
        del self.weight
        self.register_buffer("weight", weight.detach().clone().to(device))


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BN to identity except the last BN of each residual branch,
    which starts at zero (Goyal et al. 2017); fixed filters are left as they are.

    The zero start makes every block the identity (or its projection shortcut) at first, so the
    residual stream does not grow with depth. Measured on imagenette at 64 px: the pooled features
    fed to the classifier have norm 20 instead of 49 (the residual branches' unit variances add up),
    so the classifier's first SGD steps change the logits ~5x less; without it, the first step at
    the recipe's LR raises the loss of the next batch from 2.5 to 6.7 (chance 2.3).
    """
    for module in model.modules():
        if any(p.is_meta for p in module.parameters(recurse=False)):
            continue  # shape-only model (cost counting): there is nothing to initialise
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(module.weight, nn.Parameter):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, Bottleneck) and not module.bn2c.weight.is_meta:
            nn.init.zeros_(module.bn2c.weight)


class JdctNet(nn.Module):
    """Base of every zoo network: the input contract the trainer relies on.

    Attributes: ``input_kind`` ("dct", "rgb" or "ycbcr"), ``arch`` (registered name) and
    ``size_multiple`` (input side in pixels must be a multiple of it).

    - "dct" networks: ``forward(y, cb, cr)`` with y [B, 64, S/8, S/8] and cb, cr
      [B, 64, S/16, S/16] float (dequantized coefficients, channel 8*v+u).
    - pixel networks ("rgb", "ycbcr"): ``forward(x)`` with x [B, 3, S, S] float.

    Both can be called as ``model(*inputs)`` (inputs = (y, cb, cr) or (x,)) or with the tuple
    itself, ``model(inputs)``. Output: logits [B, num_classes].
    ``regularization_loss()`` returns a scalar tensor to add to the training loss, or None
    (the default; only DCT-Ortho has one), so a trainer can call it on every model;
    ``classifier_parameters()`` the final fully connected layer's (every network ends with
    ``self.head``, a :class:`Head`).
    """

    input_kind: str = "dct"
    arch: str = ""
    size_multiple: int = 16

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        self._check_inputs(inputs)
        return self.forward_features_and_head(*inputs)

    def forward_features_and_head(self, *inputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def regularization_loss(self) -> Optional[torch.Tensor]:
        """Extra training loss term (scalar tensor), or None when the network has none."""
        return None

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The parameters of the final classifier (``head.fc``: weight and bias), which a trainer may
        step with its own learning rate (see :func:`jdct_cli.config.default_head_lr_scale`)."""
        return list(self.head.parameters())

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> None:
        # Shape mistakes would otherwise surface as an opaque size mismatch deep in a concat.
        if self.input_kind == "dct":
            if len(inputs) != 3:
                raise ConfigError(f"model {self.arch!r} takes DCT input (y, cb, cr), got {len(inputs)} tensor(s)")
            y, cb, cr = inputs
            if y.dim() != 4 or y.shape[1] != 64:
                raise ConfigError(f"model {self.arch!r}: y must be [B, 64, S/8, S/8], got {list(y.shape)}")
            h, w = y.shape[-2:]
            want = (y.shape[0], 64, h // 2, w // 2)
            if h % 2 or w % 2 or tuple(cb.shape) != want or tuple(cr.shape) != want:
                raise ConfigError(
                    f"model {self.arch!r}: expected y [B, 64, S/8, S/8] and cb, cr [B, 64, S/16, S/16] "
                    f"(S a multiple of 16), got y {list(y.shape)}, cb {list(cb.shape)}, cr {list(cr.shape)}")
        else:
            if len(inputs) != 1:
                raise ConfigError(f"model {self.arch!r} takes one [B, 3, S, S] pixel tensor, got {len(inputs)}")
            x = inputs[0]
            m = self.size_multiple
            if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] % m or x.shape[-2] % m or x.shape[-1] < 32:
                raise ConfigError(f"model {self.arch!r}: expected [B, 3, S, S] pixels with S a multiple of "
                                  f"{m}, got {list(x.shape)}")
