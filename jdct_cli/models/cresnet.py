"""Torfason et al.'s cResNets (ICLR 2018, "Towards Image Understanding from Deep Compression
without Decoding") on jdct's DCT input.

A cResNet-k is ResNet-50 fed a 28x28xC compressed representation instead of 224x224 pixels: the
root block (conv1 + max pool) and every residual stage above 28x28 (conv2_x) are removed, conv3_x
starts at stride 1, and conv4_x gets extra 14x14 blocks to buy back the computation that was cut.
``k`` counts the convolutional layers of the main path (3 per bottleneck block, shortcuts and the
fully connected layer not counted), so k = 3 x (4 + n4 + 3) with n4 conv4_x blocks:

- ``cresnet39``: conv3_x/conv4_x/conv5_x = 4/6/3 blocks, 3.04 GMACs at 224 (jdct's counting):
  ResNet-50 minus its root and conv2_x;
- ``cresnet51``: 4/10/3 blocks, 3.91 GMACs, ResNet-50's compute (3.83 GMACs, +2 %);
- ``cresnet72``: 4/17/3 blocks, 5.44 GMACs, the compute of ResNet-71 (ResNet-50 with 13 conv4_x
  blocks, 5.36 GMACs, +1.5 %).

The input here is jdct's: Y's 28x28x64 coefficient planes with Cb and Cr (14x14x64 each)
upsampled by nearest neighbour and concatenated (28x28x192), then BatchNorm, exactly the
UpSampling network's input transform, so ``cresnet39`` is the same network as ``upsampling``
(Gueguen et al.'s UpSampling is a cResNet-39 on DCT coefficients).
"""
from __future__ import annotations

from torch import nn

from .registry import register_model
from .resnet import resnet_stage
from .zoo import UpsampledDctNet

#: conv4_x blocks of each cResNet (conv3_x has 4 and conv5_x 3, as in ResNet-50).
CRESNET_CONV4_BLOCKS = {39: 6, 51: 10, 72: 17}


def cresnet_stages(depth: int) -> list:
    """The residual stages of cResNet-``depth`` at S/8: conv3_x stride 1, conv4_x stride 2 with
    :data:`CRESNET_CONV4_BLOCKS` blocks, conv5_x stride 2 (diagram-style names res3, res4, res5)."""
    return [resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 2, blocks=CRESNET_CONV4_BLOCKS[depth]),
            resnet_stage("res5", 5, 2)]


@register_model("cresnet39", input_kind="dct",
                description="Torfason et al.'s cResNet-39 on DCT input (Cb, Cr nearest x2, 28x28x192): "
                            "conv3_x s=1, 6 conv4_x, conv5_x; the same network as upsampling")
def cresnet39(num_classes: int = 1000) -> nn.Module:
    return UpsampledDctNet(cresnet_stages(39), num_classes, "upsample")


@register_model("cresnet51", input_kind="dct",
                description="Torfason et al.'s cResNet-51 on DCT input: 10 conv4_x blocks, ResNet-50's compute")
def cresnet51(num_classes: int = 1000) -> nn.Module:
    return UpsampledDctNet(cresnet_stages(51), num_classes, "upsample")


@register_model("cresnet72", input_kind="dct",
                description="Torfason et al.'s cResNet-72 on DCT input: 17 conv4_x blocks, ResNet-71's compute")
def cresnet72(num_classes: int = 1000) -> nn.Module:
    return UpsampledDctNet(cresnet_stages(72), num_classes, "upsample")
