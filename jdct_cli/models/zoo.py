"""The registered networks: one small config function per name, all built from ``resnet.py``.

Specification: ``architectures.md`` (read off the authors' Keras diagrams; where a third-party
reimplementation disagrees, the diagrams win). Module names follow the diagrams' node names
(``conv1``, ``concatenate_1``, ``res4x``...), so shapes can be checked against them with hooks.

Input transforms (at 224x224 pixels; every size that is a multiple of 16 works):

- pixel ResNets: conv1 7x7/2 (pad 3) -> BN -> ReLU -> 3x3/2 max pool (valid) -> 55x55x64;
- UpSampling(-RFA): nearest x2 of Cb, Cr -> concat (28x28x192) -> BN;
- Deconvolution-RFA: ConvTranspose 2x2/2 64->64 per chroma plane -> concat -> BN;
- DownSampling: BN(Y) -> conv 2x2/2 256 -> BN; concat with BN(Cb, Cr) -> 14x14x384;
- Late-Concat family: BN(Y) -> Y path; BN(concat Cb, Cr) -> one ConvBlock; concat at 14x14;
- DCT-Learn/Ortho/Frozen: YCbCr pixels -> per-plane 8x8/8 conv (chroma: 2x2 average pool
  first, nearest x2 after) -> concat (28x28x192) -> BN; Frozenx2: stride 4, no pooling, 55x55x192.

BatchNorm on the inputs is how the paper normalizes coefficients, so DCT inputs need no other
scaling. Convolutions carry no bias (a BN follows each), which changes no count that matters.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..jpegmath.blockdct import dct_basis
from .registry import register_model
from .resnet import (Concat, FixedConv2d, Head, JdctNet, SameConv2d, Stage, build_stages, init_weights,
                     resnet_stage, rfa_stage)

# ---------------------------------------------------------------------------- network classes
class PixelResNet(JdctNet):
    """ResNet-50-style network on [B, 3, S, S] pixels (Keras stem, then ``stages``)."""

    def __init__(self, stages: Sequence[Stage], num_classes: int, input_kind: str, stem_width: int = 64):
        super().__init__()
        self.input_kind = input_kind
        # Keras: ZeroPadding2D(3) then a valid 7x7/2 conv (224 -> 112); max pool 3x3/2 valid (-> 55).
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn_conv1 = nn.BatchNorm2d(stem_width)
        self.max_pooling2d_1 = nn.MaxPool2d(3, stride=2)
        self.body, width = build_stages(stem_width, stages)
        self.head = Head(width, num_classes)

    def forward_features_and_head(self, x):
        x = self.max_pooling2d_1(F.relu(self.bn_conv1(self.conv1(x))))
        return self.head(self.body(x))


class UpsampledDctNet(JdctNet):
    """Chroma brought to luma resolution (nearest x2 or learned deconvolution), concat, BN, body."""

    def __init__(self, stages: Sequence[Stage], num_classes: int, chroma: str = "upsample"):
        super().__init__()
        self.chroma = chroma
        if chroma == "deconv":
            # One transposed conv per chroma plane: 64 -> 64 channels, kernel 2, stride 2 (14 -> 28).
            self.conv_cb_upsample = nn.ConvTranspose2d(64, 64, 2, stride=2, bias=False)
            self.conv_cr_upsample = nn.ConvTranspose2d(64, 64, 2, stride=2, bias=False)
        self.concatenate_1 = Concat()
        self.bn_input = nn.BatchNorm2d(192)
        self.body, width = build_stages(192, stages)
        self.head = Head(width, num_classes)

    def forward_features_and_head(self, y, cb, cr):
        if self.chroma == "deconv":
            cb, cr = self.conv_cb_upsample(cb), self.conv_cr_upsample(cr)
        else:
            cb = F.interpolate(cb, scale_factor=2, mode="nearest")
            cr = F.interpolate(cr, scale_factor=2, mode="nearest")
        x = self.bn_input(self.concatenate_1(y, cb, cr))
        return self.head(self.body(x))


class DownsampledDctNet(JdctNet):
    """Luma brought to chroma resolution by a 2x2/2 conv (256 ch), concat with Cb, Cr (384 ch), body."""

    def __init__(self, stages: Sequence[Stage], num_classes: int, y_width: int = 256):
        super().__init__()
        self.bn_y = nn.BatchNorm2d(64)
        self.bn_cbcr = nn.BatchNorm2d(128)
        self.conv_y = SameConv2d(64, y_width, 2, stride=2)
        self.bn_conv_y = nn.BatchNorm2d(y_width)
        self.concatenate_1 = Concat()
        self.body, width = build_stages(y_width + 128, stages)
        self.head = Head(width, num_classes)

    def forward_features_and_head(self, y, cb, cr):
        y = self.bn_conv_y(self.conv_y(self.bn_y(y)))
        cbcr = self.bn_cbcr(torch.cat((cb, cr), dim=1))
        x = self.concatenate_1(y, cbcr)
        return self.head(self.body(x))


class LateConcatDctNet(JdctNet):
    """Separate luma and chroma paths joined at 14x14 (S/16), then the rest of stage 4 and stage 5."""

    def __init__(self, y_stages: Sequence[Stage], cbcr_stages: Sequence[Stage], body: Sequence[Stage],
                 num_classes: int):
        super().__init__()
        self.bn_y = nn.BatchNorm2d(64)
        self.y_path, y_width = build_stages(64, y_stages)
        self.concatenate_1 = Concat()
        self.bn_cbcr = nn.BatchNorm2d(128)
        self.cbcr_path, c_width = build_stages(128, cbcr_stages)
        self.concatenate_2 = Concat()
        self.body, width = build_stages(y_width + c_width, body)
        self.head = Head(width, num_classes)

    def forward_features_and_head(self, y, cb, cr):
        y = self.y_path(self.bn_y(y))
        c = self.cbcr_path(self.bn_cbcr(self.concatenate_1(cb, cr)))
        return self.head(self.body(self.concatenate_2(y, c)))


class PixelDctLayerNet(JdctNet):
    """YCbCr pixels through a DCT-like 8x8 conv layer per plane, then a ResNet body.

    ``mode``: "learn" (random init, trained), "ortho" (trained, with an orthonormality
    penalty from :meth:`regularization_loss`), "frozen" (the 64 JPEG DCT filters, held in
    buffers: never trained; their state-dict keys are the same ``conv_y.weight``... as the
    trained modes', so checkpoints from when they were frozen Parameters load unchanged).
    ``stride`` 8: chroma average-pooled 2x2 first and upsampled x2 after, 28x28x192 at 224;
    stride 4 (Frozenx2): no pooling, overlapping filters, 55x55x192 at 224.
    """

    def __init__(self, stages: Sequence[Stage], num_classes: int, mode: str, stride: int = 8,
                 ortho_weight: float = 1e-3):
        super().__init__()
        self.input_kind = "ycbcr"
        self.mode = mode
        self.stride = stride
        self.ortho_weight = float(ortho_weight)
        if stride == 8:
            self.pool_cb = nn.AvgPool2d(2)
            self.pool_cr = nn.AvgPool2d(2)
        if mode == "frozen":
            # buffers, not Parameters: no optimizer, requires_grad_(True) or weight decay can move them
            basis = torch.from_numpy(dct_basis()).float()
            self.conv_y = FixedConv2d(basis, stride)
            self.conv_cb = FixedConv2d(basis, stride)
            self.conv_cr = FixedConv2d(basis, stride)
        else:
            self.conv_y = nn.Conv2d(1, 64, 8, stride=stride, bias=False)
            self.conv_cb = nn.Conv2d(1, 64, 8, stride=stride, bias=False)
            self.conv_cr = nn.Conv2d(1, 64, 8, stride=stride, bias=False)
        self.concatenate_1 = Concat()
        self.bn_input = nn.BatchNorm2d(192)
        self.body, width = build_stages(192, stages)
        self.head = Head(width, num_classes)

    def forward_features_and_head(self, x):
        y, cb, cr = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        if self.stride == 8:
            cb = F.interpolate(self.conv_cb(self.pool_cb(cb)), scale_factor=2, mode="nearest")
            cr = F.interpolate(self.conv_cr(self.pool_cr(cr)), scale_factor=2, mode="nearest")
        else:
            cb, cr = self.conv_cb(cb), self.conv_cr(cr)
        x = self.bn_input(self.concatenate_1(self.conv_y(y), cb, cr))
        return self.head(self.body(x))

    def regularization_loss(self) -> Optional[torch.Tensor]:
        """DCT-Ortho: ``ortho_weight`` * sum over the 3 layers of ||W W^T - I||_F^2 (W: 64 filters x 64 pixels).

        Brock et al.'s orthogonal regularization (the paper's ref. [2]). The default weight 1e-3
        keeps it a small term next to the cross-entropy (He-initialised 8x8 filters start at
        ~180 unweighted) yet strong enough to win against a typical weight decay: at equilibrium
        1 - |w|^2 = weight_decay / (4 ortho_weight), i.e. filter norms ~0.99 with decay 1e-4.

        Zero exactly when each layer's filters form an orthonormal basis, as the DCT's do.
        None for the other modes.
        """
        if self.mode != "ortho":
            return None
        total = None
        for conv in (self.conv_y, self.conv_cb, self.conv_cr):
            w = conv.weight.reshape(conv.weight.shape[0], -1)
            gram = w @ w.t()
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            term = ((gram - eye) ** 2).sum()
            total = term if total is None else total + term
        return self.ortho_weight * total


# ------------------------------------------------------------------------------- stage recipes
def _baseline_stages(div: float = 1.0, drop: int = 0) -> list[Stage]:
    """ResNet-50 stages 2-5 (Keras: stage 2 stride 1), widths floor(c/div), minus ``drop`` blocks.

    LessIdBlocks-N: 2 drops res2b, res2c; 3 drops stage 2 (res3a then strides 2); 4, 5, 6 also
    drop res3b, res3c, res3d. Surviving blocks keep their diagram names.
    """
    stages = []
    if drop < 3:
        stages.append(resnet_stage("res2", 2, 1, div=div, letters="a" if drop == 2 else "abc"))
    letters3 = {0: "abcd", 2: "abcd", 3: "abcd", 4: "acd", 5: "ad", 6: "a"}[drop]
    stages.append(resnet_stage("res3", 3, 2, div=div, letters=letters3))
    stages.append(resnet_stage("res4", 4, 2, div=div))
    stages.append(resnet_stage("res5", 5, 2, div=div))
    return stages


def _rfa_body() -> list[Stage]:
    """UpSampling-RFA's body at S/8: RFA stage (res2) -> S3 s=1 -> S4 s=2 -> S5 s=2."""
    return [rfa_stage("res2"), resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 2),
            resnet_stage("res5", 5, 2)]


def _late_concat_tail() -> list[Stage]:
    """After the Late-Concat join (1024 ch at S/16): res4b..res4f (5 IdentityBlocks) -> S5 s=2."""
    return [resnet_stage("res4", 4, 1, letters="bcdef", continues=True), resnet_stage("res5", 5, 2)]


# ------------------------------------------------------------------------------ registrations
def _paper(top1, top5, fps):
    return dict(paper_top1_error=top1, paper_top5_error=top5, paper_fps=fps)


@register_model("resnet50_rgb", input_kind="rgb", diagram="ResNet50-Baseline",
                description="ResNet-50 (Keras v1) on RGB pixels: the baseline", **_paper(24.22, 7.35, 208))
def resnet50_rgb(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(), num_classes, "rgb")


@register_model("resnet50_ycbcr", input_kind="ycbcr", diagram="ResNet50-Baseline",
                description="ResNet-50 (Keras v1) on YCbCr pixels", **_paper(24.36, 7.36, 207))
def resnet50_ycbcr(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(), num_classes, "ycbcr")


@register_model("upsampling", input_kind="dct", diagram="ResNet50-Upsampling",
                description="Cb, Cr nearest x2 -> concat 28x28x192 -> S3 s=1, S4, S5 (no stem, no stage 2)",
                **_paper(25.07, 7.81, 396))
def upsampling(num_classes: int = 1000) -> nn.Module:
    stages = [resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 2), resnet_stage("res5", 5, 2)]
    return UpsampledDctNet(stages, num_classes, "upsample")


@register_model("upsampling_rfa", input_kind="dct", diagram="ResNet50-UpSampling-RFA",
                description="Cb, Cr nearest x2 -> concat 28x28x192 -> RFA stage -> S3 s=1, S4, S5",
                **_paper(24.06, 7.14, 266))
def upsampling_rfa(num_classes: int = 1000) -> nn.Module:
    return UpsampledDctNet(_rfa_body(), num_classes, "upsample")


@register_model("deconvolution_rfa", input_kind="dct", diagram="ResNet50-Deconvolution-RFA",
                description="Cb, Cr each through a 2x2/2 transposed conv -> concat 28x28x192 -> RFA body",
                **_paper(23.94, 6.98, 268))
def deconvolution_rfa(num_classes: int = 1000) -> nn.Module:
    return UpsampledDctNet(_rfa_body(), num_classes, "deconv")


@register_model("downsampling", input_kind="dct", diagram="ResNet50-DownSampling",
                description="Y conv 2x2/2 256 ch + Cb, Cr -> 14x14x384 -> RFA stage -> S3 s=1, S4 s=1, S5",
                **_paper(27.00, 8.98, 451))
def downsampling(num_classes: int = 1000) -> nn.Module:
    stages = [rfa_stage("res2"), resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 1),
              resnet_stage("res5", 5, 2)]
    return DownsampledDctNet(stages, num_classes)


@register_model("downsampling_no_rfa", input_kind="dct", diagram="ResNet50-DownSampling",
                description="DownSampling as Fig. S1's text has it: no RFA stage (S3 s=1, S4 s=1, S5)")
def downsampling_no_rfa(num_classes: int = 1000) -> nn.Module:
    stages = [resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 1), resnet_stage("res5", 5, 2)]
    return DownsampledDctNet(stages, num_classes)


@register_model("late_concat", input_kind="dct", diagram="ResNet50-Late-Concat",
                description="Y: S3 s=1 + CB [256,256,512]/2; CbCr: CB k=1 [256,256,512]; concat 14x14x1024",
                **_paper(24.93, 7.62, 401))
def late_concat(num_classes: int = 1000) -> nn.Module:
    y = [resnet_stage("res3", 3, 1), resnet_stage("res4", 4, 2, letters="a", widths=(256, 256, 512))]
    c = [Stage("res4x", (256, 256, 512), 1, (1,), "")]
    return LateConcatDctNet(y, c, _late_concat_tail(), num_classes)


@register_model("late_concat_rfa", input_kind="dct", diagram="ResNet50-Late-Concat-RFA",
                description="Late-Concat with the RFA stage first on the Y path", **_paper(24.08, 7.09, 267))
def late_concat_rfa(num_classes: int = 1000) -> nn.Module:
    y = [rfa_stage("res2"), resnet_stage("res3", 3, 1),
         resnet_stage("res4", 4, 2, letters="a", widths=(256, 256, 512))]
    c = [Stage("res4x", (256, 256, 512), 1, (1,), "")]
    return LateConcatDctNet(y, c, _late_concat_tail(), num_classes)


@register_model("late_concat_rfa_thinner", input_kind="dct", diagram="ResNet50-Late-Concat-RFA-Thinner",
                description="Late-Concat-RFA with a thinner Y path (384/768 ch) and CbCr path (256 ch)",
                **_paper(24.61, 7.43, 369))
def late_concat_rfa_thinner(num_classes: int = 1000) -> nn.Module:
    y = [rfa_stage("res2", (96, 96, 384)), resnet_stage("res3", 3, 1, widths=(96, 96, 384)),
         resnet_stage("res4", 4, 2, letters="a", widths=(192, 192, 768))]
    c = [Stage("res4x", (128, 128, 256), 1, (1,), "")]
    return LateConcatDctNet(y, c, _late_concat_tail(), num_classes)


@register_model("channels_div1_1", input_kind="rgb", diagram="ResNet50-Channels-Div1.1",
                description="ResNet-50 on RGB with every block width floor(c/1.1); stem stays 64")
def channels_div1_1(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(div=1.1), num_classes, "rgb")


@register_model("channels_div_sqrt2", input_kind="rgb", diagram="ResNet50-Channels-DivSqrt2",
                description="ResNet-50 on RGB with every block width floor(c/sqrt2); stem stays 64")
def channels_div_sqrt2(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(div=math.sqrt(2)), num_classes, "rgb")


@register_model("channels_div2", input_kind="rgb", diagram="ResNet50-Channels-Div2",
                description="ResNet-50 on RGB with every block width floor(c/2); stem stays 64")
def channels_div2(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(div=2.0), num_classes, "rgb")


@register_model("less_id_blocks_2", input_kind="rgb", diagram="ResNet50-LessIdBlocks-2",
                description="ResNet-50 on RGB without res2b, res2c")
def less_id_blocks_2(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(drop=2), num_classes, "rgb")


@register_model("less_id_blocks_3", input_kind="rgb", diagram="ResNet50-LessIdBlocks-3",
                description="ResNet-50 on RGB without stage 2")
def less_id_blocks_3(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(drop=3), num_classes, "rgb")


@register_model("less_id_blocks_4", input_kind="rgb", diagram="ResNet50-LessIdBlocks-4",
                description="ResNet-50 on RGB without stage 2 and res3b")
def less_id_blocks_4(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(drop=4), num_classes, "rgb")


@register_model("less_id_blocks_5", input_kind="rgb", diagram="ResNet50-LessIdBlocks-5",
                description="ResNet-50 on RGB without stage 2, res3b, res3c")
def less_id_blocks_5(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(drop=5), num_classes, "rgb")


@register_model("less_id_blocks_6", input_kind="rgb", diagram="ResNet50-LessIdBlocks-6",
                description="ResNet-50 on RGB without stage 2, res3b, res3c, res3d")
def less_id_blocks_6(num_classes: int = 1000) -> nn.Module:
    return PixelResNet(_baseline_stages(drop=6), num_classes, "rgb")


@register_model("dct_learn", input_kind="ycbcr", diagram="ResNet50-DCT-Learn",
                description="YCbCr pixels -> learned 8x8/8 conv per plane (64 filters) -> UpSampling-RFA body")
def dct_learn(num_classes: int = 1000) -> nn.Module:
    return PixelDctLayerNet(_rfa_body(), num_classes, "learn", 8)


@register_model("dct_ortho", input_kind="ycbcr", diagram="ResNet50-DCT-Ortho",
                description="DCT-Learn plus an orthonormality penalty on the filters (regularization_loss)")
def dct_ortho(num_classes: int = 1000, ortho_weight: float = 1e-3) -> nn.Module:
    """``ortho_weight`` scales the penalty ``regularization_loss()`` returns (see PixelDctLayerNet)."""
    return PixelDctLayerNet(_rfa_body(), num_classes, "ortho", 8, ortho_weight=ortho_weight)


@register_model("dct_frozen", input_kind="ycbcr", diagram="ResNet50-DCT-Frozen",
                description="YCbCr pixels -> the 64 JPEG DCT filters (frozen), 8x8/8 -> UpSampling-RFA body")
def dct_frozen(num_classes: int = 1000) -> nn.Module:
    return PixelDctLayerNet(_rfa_body(), num_classes, "frozen", 8)


@register_model("dct_frozenx2", input_kind="ycbcr", diagram="ResNet50-DCT-Frozenx2",
                description="YCbCr pixels -> frozen DCT filters at stride 4 -> 55x55x192 -> ResNet-50 from stage 2")
def dct_frozenx2(num_classes: int = 1000) -> nn.Module:
    return PixelDctLayerNet(_baseline_stages(), num_classes, "frozen", 4)


__all__ = ["PixelResNet", "UpsampledDctNet", "DownsampledDctNet", "LateConcatDctNet", "PixelDctLayerNet",
           "dct_basis", "init_weights"]
