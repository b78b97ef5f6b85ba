"""Parameters and multiply-accumulates of the zoo, counted with forward hooks.

MACs count convolutions, transposed convolutions and fully connected layers only (BN, ReLU,
pooling, additions and upsampling are not counted), per image:

- Conv2d: output elements x (in_channels / groups) x kh x kw;
- ConvTranspose2d: input elements x (out_channels / groups) x kh x kw (every input pixel is
  scattered through the whole kernel);
- Linear: output elements x in_features.

Counting runs one forward pass at batch 1 on PyTorch's ``meta`` device: shapes are propagated,
nothing is computed or allocated (a few seconds for the whole zoo; counts are kept for the life of
the process only, so a network registered from outside jdct is counted like the zoo's own).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .registry import create_model, get_model_info, list_models
from .resnet import FixedConv2d

#: ``jdct models --json`` document: format name and version (schemas/models.v1.schema.json).
MODELS_FORMAT = "jdct-models"
MODELS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelCost:
    """Cost of network ``name`` at ``size`` x ``size`` pixels, per image.

    ``params``: every weight, fixed filters included (DCT-Frozen's, held in buffers; BN running
    statistics excluded), ``trainable_params``: the parameters with requires_grad,
    ``macs``: multiply-accumulates.
    """

    name: str
    size: int
    params: int
    trainable_params: int
    macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def example_inputs(input_kind: str, size: int = 224, batch: int = 1, device="cpu",
                   dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes: (y [B,64,S/8,S/8], cb, cr [B,64,S/16,S/16]) or (x [B,3,S,S],)."""
    if input_kind == "dct":
        return (torch.randn(batch, 64, size // 8, size // 8, device=device, dtype=dtype),
                torch.randn(batch, 64, size // 16, size // 16, device=device, dtype=dtype),
                torch.randn(batch, 64, size // 16, size // 16, device=device, dtype=dtype))
    return (torch.randn(batch, 3, size, size, device=device, dtype=dtype),)


def count_cost(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """MACs per image of one forward pass of ``model(*inputs)`` (batch = inputs[0].shape[0])."""
    batch = int(inputs[0].shape[0])
    total = [0]

    def conv_hook(module, args, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output.numel() * (module.in_channels // module.groups) * k

    def deconv_hook(module, args, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += args[0].numel() * (module.out_channels // module.groups) * k

    def linear_hook(module, args, output):
        total[0] += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(deconv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total[0] // batch


@functools.lru_cache(maxsize=None)
def model_cost(name: str, size: int = 224, num_classes: int = 1000) -> ModelCost:
    """Params and MACs of registered network ``name`` at ``size`` pixels (a multiple of 16).

    Built on the ``meta`` device (no memory, no arithmetic); cached per process.
    Raises UnknownModelError for an unknown name.
    """
    info = get_model_info(name)
    check_size(size)
    with torch.device("meta"):
        model = create_model(name, num_classes)
        inputs = example_inputs(info.input_kind, size, 1, device="meta")
    model.eval()
    macs = count_cost(model, inputs)
    params = (sum(p.numel() for p in model.parameters())
              + sum(m.weight.numel() for m in model.modules() if isinstance(m, FixedConv2d)))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelCost(name, size, params, trainable, macs)


def check_size(size: int) -> int:
    """``size`` (pixels) if the zoo accepts it (a multiple of 16, at least 32), else ConfigError."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 16:
        raise ConfigError(f"input size must be a multiple of 16 pixels, at least 32; got {size!r}")
    return size


def zoo_table(size: int = 224, names: Optional[Sequence[str]] = None,
              progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """One row per network for ``jdct models``: ModelInfo fields plus params and GMACs at ``size``.

    Rows follow ``schemas/models.v1.schema.json`` ("models" items). ``progress(name)`` is
    called before each network is counted.
    """
    check_size(size)
    names = list(names) if names is not None else list_models()
    for name in names:
        get_model_info(name)  # unknown names fail before any counting
    rows = []
    for name in names:
        if progress is not None:
            progress(name)
        info = get_model_info(name)
        cost = model_cost(name, size)
        row = info.to_dict()
        row.update(params=cost.params, trainable_params=cost.trainable_params, macs=cost.macs,
                   gmacs=round(cost.gmacs, 4))
        rows.append(row)
    return rows


def zoo_document(size: int = 224, names: Optional[Sequence[str]] = None,
                 progress: Optional[Callable[[str], None]] = None) -> dict:
    """The ``jdct models --json`` document (schemas/models.v1.schema.json)."""
    return {"format": MODELS_FORMAT, "format_version": MODELS_FORMAT_VERSION, "size": check_size(size),
            "mac_counting": "conv, transposed conv and fully connected layers, per image",
            "paper_fps_note": "images/s at batch 1024 on one Pascal GPU, as reported by Gueguen et al. 2018",
            "models": zoo_table(size, names, progress)}


def render_table(rows: Sequence[dict], size: int = 224, descriptions: bool = False) -> str:
    """Plain-text table of :func:`zoo_table` rows (params in millions, GMACs at ``size``)."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = ["name", "input", "params", f"GMACs@{size}", "top-1 err", "top-5 err", "paper FPS"]
    lines = []
    for r in rows:
        line = [r["name"], r["input_kind"], f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.2f}",
                fmt(r["paper_top1_error"], ".2f"), fmt(r["paper_top5_error"], ".2f"), fmt(r["paper_fps"], ".0f")]
        if descriptions:
            line.append(r["description"])
        lines.append(line)
    if descriptions:
        header.append("description")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    for line in [header] + lines:
        cells = [str(c).ljust(w) if i < 2 or i == 7 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
