"""``jdct export``: a checkpoint for sharing or deployment, checked against the checkpoint itself.

The output's extension chooses the kind (or ``kind=``):

- ``.pt``: a weights-only jdct checkpoint (:func:`jdct_cli.checkpoint.export_weights`) that
  ``jdct eval`` and ``jdct predict`` read;
- ``.onnx``: an ONNX model (``torch.onnx.export``, the dynamo exporter; needs the ``export`` extra:
  onnx, onnxscript, and onnxruntime for the check);
- ``.pt2``: a ``torch.export`` program (``torch.export.save``; load it with ``torch.export.load(path)
  .module()``).

ONNX and .pt2 models hold the network *with the loader's normalization in front*
(:class:`DeployableNet`), so a deployment feeds what a JPEG decoder gives:

- DCT networks: ``y`` [B, 64, H/8, W/8], ``cb``, ``cr`` [B, 64, H/16, W/16] float32, the
  *dequantized* coefficients (quantized coefficient x its quantization table entry), channel
  ``8*v + u`` (v vertical, u horizontal frequency), chroma 4:2:0;
- pixel networks: ``x`` [B, 3, H, W] float32 in [0, 1] (RGB, or YCbCr for ``ycbcr`` networks);

and get ``logits`` [B, classes] (softmax them for probabilities). The batch size and the image size
are dynamic: H and W any multiples of 16 pixels from :data:`MIN_SIDE` up to :data:`MAX_SIDE`.

The check: before the file is put in place, the exported model runs on two input shapes (batch 2
at the training size, batch 3 at another, non-square size) made from seeded JPEG-like
coefficients, and its logits must equal the checkpoint's own (jdct's predict path,
:func:`jdct_cli.evaluate.model_inputs` then the network) within :data:`CHECK_ATOL` in float32;
ONNX models run in ONNX Runtime on the CPU when it is installed, .pt2 programs in PyTorch.
A failed check is an :class:`jdct_cli.errors.ExportError` and leaves no output file.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .errors import CheckpointError, ConfigError, ExportError, SourceNotFoundError

#: Output kinds by file extension.
KINDS = {".pt": "weights", ".onnx": "onnx", ".pt2": "pt2"}
#: Largest |logit difference| accepted between the exported model and the checkpoint (float32).
CHECK_ATOL = 1e-4
#: Image sides the exported models take: multiples of 16 pixels in this range. Below 48 pixels the
#: last stage's feature map is 1x1, which the exporters treat as a special case of their own.
MIN_SIDE, MAX_SIDE = 48, 16384
#: Input and output names of the exported models.
DCT_INPUTS, PIXEL_INPUTS, OUTPUTS = ("y", "cb", "cr"), ("x",), ("logits",)


class DeployableNet(nn.Module):
    """A zoo network with the loader's normalization folded in front (see the module docstring).

    ``model``: the network (eval mode); ``kind``: its input kind; ``store``: the training store's
    facts (``stats`` for DCT and YCbCr networks). The normalization constants are buffers, taken
    from :func:`jdct_cli.data.device_constants`, the loader's own definition.
    """

    def __init__(self, model: nn.Module, kind: str, store: dict):
        super().__init__()
        from .data import device_constants

        self.model = model
        self.kind = kind
        ones = np.ones(64)
        consts = device_constants({"y": ones, "cb": ones, "cr": ones}, store.get("stats"), output=kind,
                                  normalize=True, device="cpu")
        if kind == "dct":
            for name in DCT_INPUTS:
                self.register_buffer(f"{name}_scale", consts[name][0].clone())
                self.register_buffer(f"{name}_shift", consts[name][1].clone())
        else:
            self.register_buffer("pix_mean", consts["pix_mean"].clone())
            self.register_buffer("pix_std", consts["pix_std"].clone())

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "dct":
            y, cb, cr = inputs
            return self.model(y * self.y_scale + self.y_shift, cb * self.cb_scale + self.cb_shift,
                              cr * self.cr_scale + self.cr_shift)
        (x,) = inputs
        return self.model((x - self.pix_mean) / self.pix_std)


class _DctSignature(nn.Module):
    """Named, fixed-arity inputs for the exporters (the zoo's ``forward(*inputs)`` has none)."""

    def __init__(self, net: DeployableNet):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
        return self.net(y, cb, cr)


class _PixelSignature(nn.Module):
    def __init__(self, net: DeployableNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def output_kind(out: os.PathLike | str, kind: Optional[str] = None) -> str:
    """"weights", "onnx" or "pt2": ``kind`` when given, else from ``out``'s extension (ConfigError
    for another one)."""
    if kind is not None:
        if kind not in KINDS.values():
            raise ConfigError(f"unknown export format {kind!r}: weights, onnx or pt2", "--format")
        return kind
    suffix = Path(out).suffix.lower()
    if suffix not in KINDS:
        raise ConfigError(f"cannot tell the export format from the extension {suffix or '(none)'!r}: name the "
                          "file .pt (weights-only checkpoint), .onnx (ONNX) or .pt2 (torch.export), or give "
                          "--format", out)
    return KINDS[suffix]


def export(checkpoint: os.PathLike | str, out: os.PathLike | str, *, kind: Optional[str] = None,
           opset: Optional[int] = None) -> dict[str, Any]:
    """Export ``checkpoint`` (a .pt file or a RUN_DIR's last.pt) to ``out`` (see the module docstring).

    Returns {"source", "out", "kind", "arch", "input_kind", "bytes", "inputs": {name: shape with
    symbolic sizes}, "outputs", "check": {"runtime", "max_abs_diff", "shapes"} or None (weights),
    plus for "weights" what :func:`jdct_cli.checkpoint.export_weights` returns}. Raises
    CheckpointError, SourceNotFoundError, ConfigError, ExportError (the exporter failed, a missing
    package, or the check found a difference).
    """
    kind = output_kind(out, kind)
    if kind == "weights":
        res = ckpt.export_weights(checkpoint, out)  # looked up at call time: one implementation
        res.update(kind="weights", check=None)
        return res
    from .evaluate import load_for_inference

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"is a folder: give the file to write, e.g. model.{'onnx' if kind == 'onnx' else 'pt2'}", out)
    if not out.parent.is_dir():
        raise SourceNotFoundError("no such folder to write the export into", out.parent)
    payload, model, input_kind = load_for_inference(checkpoint)
    store = payload.get("store") or {}
    if input_kind != "rgb" and not store.get("stats"):
        raise CheckpointError("the checkpoint lacks its training store's statistics, which the exported model's "
                              "normalization needs", checkpoint)
    net = DeployableNet(model, input_kind, store).eval()
    signature = _DctSignature(net) if input_kind == "dct" else _PixelSignature(net)
    names = DCT_INPUTS if input_kind == "dct" else PIXEL_INPUTS
    example = tuple(torch.from_numpy(a) for a in _deploy_inputs(_coefficients(2, 128, 128, store, seed=1),
                                                                input_kind, store)[0])
    dynamic = _dynamic_shapes(input_kind)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with _quiet():
            if kind == "onnx":
                _export_onnx(signature, example, dynamic, names, tmp, opset)
                runner = _onnx_runner(tmp, names)
            else:
                program = _torch_export(signature, example, dynamic)
                torch.export.save(program, os.fspath(tmp))
                loaded = torch.export.load(os.fspath(tmp)).module()
                runner = ("PyTorch " + torch.__version__.split("+")[0],
                          lambda arrays: loaded(*map(torch.from_numpy, arrays)).detach().numpy())
        check = check_export(model, input_kind, store, runner) if runner is not None else {
            "runtime": None, "max_abs_diff": None, "shapes": [],
            "note": "not checked: onnxruntime is not installed (pip install 'jdct[export]')"}
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    size = out.stat().st_size
    spatial = ("H/8", "W/8") if input_kind == "dct" else ("H", "W")
    inputs = ({"y": ["B", 64, *spatial], "cb": ["B", 64, "H/16", "W/16"], "cr": ["B", 64, "H/16", "W/16"]}
              if input_kind == "dct" else {"x": ["B", 3, "H", "W"]})
    return {"source": os.fspath(checkpoint), "out": os.fspath(out), "kind": kind, "arch": payload["arch"],
            "input_kind": input_kind, "bytes": size, "inputs": inputs, "outputs": {"logits": ["B", len(payload["classes"])]},
            "classes": list(payload["classes"]), "check": check}


# ------------------------------------------------------------------------------------------------
# exporters
# ------------------------------------------------------------------------------------------------


def _dynamic_shapes(input_kind: str):
    """Dynamic batch and image size: blocks of 16 pixels ``n`` (y has 2n rows, chroma n, pixels 16n)."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1 << 16)
    rows = Dim("rows16", min=MIN_SIDE // 16, max=MAX_SIDE // 16)
    cols = Dim("cols16", min=MIN_SIDE // 16, max=MAX_SIDE // 16)
    if input_kind == "dct":
        return ({0: batch, 2: 2 * rows, 3: 2 * cols}, {0: batch, 2: rows, 3: cols}, {0: batch, 2: rows, 3: cols})
    return ({0: batch, 2: 16 * rows, 3: 16 * cols},)


def _torch_export(module: nn.Module, example: tuple, dynamic) -> Any:
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic)
    except Exception as exc:  # torch raises many kinds; say which network and why, in one line
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}") from None


def _export_onnx(module: nn.Module, example: tuple, dynamic, names, path: Path, opset: Optional[int]) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing): "
                          "pip install 'jdct[export]'") from None
    kwargs = {} if opset is None else {"opset_version": int(opset)}
    try:
        program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic, input_names=list(names),
                                    output_names=list(OUTPUTS), verbose=False, **kwargs)
        program.save(os.fspath(path))
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}") from None


def _onnx_runner(path: Path, names):
    """(runtime name, run(arrays) -> logits) for the ONNX file, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    return (f"ONNX Runtime {ort.__version__} (CPU)",
            lambda arrays: session.run(list(OUTPUTS), dict(zip(names, arrays)))[0])


@contextlib.contextmanager
def _quiet():
    """The exporters' own warnings and log lines (missing optional ops, deprecations) stay out of
    the user's terminal: the library never prints."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------


def _coefficients(batch: int, height: int, width: int, store: dict, seed: int):
    """Seeded JPEG-like quantized coefficients for ``batch`` images of ``height`` x ``width`` pixels:
    int16 y [B, 64, H/8, W/8], cb, cr [B, 64, H/16, W/16] (a DC level and sparse, mostly small AC
    values, as real photographs have at the store's quality) and the store's tables."""
    rng = np.random.default_rng(seed)
    tables = store.get("quant_tables") or {}
    luma = np.asarray(tables.get("luma", np.ones(64)), np.float64)
    chroma = np.asarray(tables.get("chroma", np.ones(64)), np.float64)
    planes = []
    for rows, cols, table in ((height // 8, width // 8, luma), (height // 16, width // 16, chroma),
                              (height // 16, width // 16, chroma)):
        amplitude = 60.0 / np.maximum(table, 1.0) * np.exp(-np.arange(64) / 12.0)  # fewer at high frequency
        c = rng.laplace(0.0, 1.0, (batch, 64, rows, cols)) * amplitude[None, :, None, None]
        c[:, 0] = rng.normal(0.0, 400.0 / table[0], (batch, rows, cols))
        planes.append(np.round(c).astype(np.int16))
    return planes, np.stack([luma, chroma, chroma]).astype(np.uint16)


def _deploy_inputs(coefs, input_kind: str, store: dict):
    """(exported model's inputs as float32 arrays, the checkpoint path's model inputs) of ``coefs``."""
    from .evaluate import model_inputs

    planes, quant = coefs
    ours = [model_inputs(planes[0][i], planes[1][i], planes[2][i], quant, input_kind, store, "cpu")
            for i in range(planes[0].shape[0])]
    ours = tuple(torch.cat([o[j] for o in ours]) for j in range(len(ours[0])))
    if input_kind == "dct":
        deploy = [(p.astype(np.float32) * q.astype(np.float32)[None, :, None, None]) for p, q in zip(planes, quant)]
    else:
        from .data import device_constants

        consts = device_constants({"y": quant[0], "cb": quant[1], "cr": quant[2]}, store.get("stats"),
                                  output=input_kind, normalize=True, device="cpu")
        deploy = [(ours[0] * consts["pix_std"] + consts["pix_mean"]).numpy()]  # back to [0, 1] pixels
    return [np.ascontiguousarray(a, dtype=np.float32) for a in deploy], ours


def check_export(model: nn.Module, input_kind: str, store: dict, runner) -> dict[str, Any]:
    """Run the exported model (``runner``: (name, run(arrays) -> logits)) and the checkpoint's network
    on two seeded input shapes; ExportError when any |logit difference| reaches :data:`CHECK_ATOL`.
    Returns {"runtime", "max_abs_diff", "shapes": [[B, H, W] in pixels]}."""
    name, run = runner
    size = max(int(store.get("size") or 224), 64)  # the training size, within the exported range
    shapes = [(2, size, size), (3, size + 32, 2 * size)]
    worst = 0.0
    for i, (b, h, w) in enumerate(shapes):
        deploy, ours = _deploy_inputs(_coefficients(b, h, w, store, seed=100 + i), input_kind, store)
        with torch.no_grad():
            want = model(*ours).numpy()
        got = np.asarray(run(deploy))
        if got.shape != want.shape:
            raise ExportError(f"the exported model gives logits of shape {list(got.shape)} for {b} images of {h}x{w} "
                              f"pixels, the checkpoint {list(want.shape)}")
        diff = float(np.max(np.abs(got.astype(np.float64) - want)))
        worst = max(worst, diff)
        if not diff < CHECK_ATOL:
            raise ExportError(f"the exported model's logits differ from the checkpoint's by up to {diff:.3g} "
                              f"(limit {CHECK_ATOL:g}) for {b} images of {h}x{w} pixels in {name}; nothing was written")
    return {"runtime": name, "max_abs_diff": worst, "shapes": [list(s) for s in shapes]}
