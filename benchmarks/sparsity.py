"""How sparse are the DCT networks' inputs and activations, and does sparse convolution pay on a CPU?

The CPO/CPS paper (Gonzalez and Hernandez, "High Performance Convolution Using Sparsity and
Patterns for Inference in Deep Convolutional Neural Networks", arXiv 2104.08314) computes a
convolution from the non-zero elements of its input only (a sparse matrix times the dense
filters), and picks, per layer and offline, whichever of that and the dense convolution is faster.
This script measures, then tries it:

1. **Input sparsity**: the share of zero quantized coefficients (Y, Cb, Cr) of imagenette-5k val
   images re-encoded by Pillow (4:2:0) at qualities 50, 75, 95, and of the same images through
   the store's val transform at quality 100 (what a ``jdct convert`` q100 store holds, computed
   here with the same recipe, :func:`jdct_cli.transforms.convert_image`).
2. **Activation sparsity**: the share of exact zeros in the input of every convolution of each
   DCT network (forward pre-hooks), fed those coefficients as ``jdct predict`` feeds them.
   Weights: a fresh network (seeded) whose residual branches are opened a little and whose
   BatchNorm statistics are calibrated on the images (no trained ImageNet weights are at hand;
   the ReLU outputs of a trained network are sparser, 50-90 % in published measurements).
   The network input itself is standardized coefficients, so a zero coefficient is not a zero
   input: the first layers can only see the coefficients' sparsity when the input standardization
   and BatchNorm are folded into their weights (done below for the pointwise first layers).
3. **Sparse path**: a CPO-style pointwise convolution (the non-zero positions of the input as a
   CSR matrix times the dense 1x1 filters, ``torch.sparse.mm``), chosen per layer by measured
   time against the dense convolution, on each 1x1 convolution and on the first layers with the
   input normalization folded in (raw, sparse dequantized coefficients in). End to end: images/s
   of the network with the chosen sparse layers against the dense one, logits compared.

It is kept in jdct only if end-to-end CPU inference gets >= 1.1x faster with the same logits
(within float rounding). Results go to benchmarks/RESULTS.md ("Sparse convolution").

    python3 benchmarks/sparsity.py                    # 32 images, batch 8, 1 thread
    python3 benchmarks/sparsity.py --images 64 --threads 2 --json out.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jdct_cli import jpeg  # noqa: E402
from jdct_cli.models import create_model, get_model_info, list_models  # noqa: E402
from jdct_cli.models.resnet import Bottleneck  # noqa: E402
from jdct_cli.transforms import SampleRecipe, convert_image  # noqa: E402

SHARED = Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data"))
QUALITIES = (50, 75, 95)
#: The networks of the end-to-end trial (those of benchmarks/predict.py).
TRIAL = ("late_concat_rfa_thinner", "upsampling")


# ------------------------------------------------------------------------------------ inputs
def coefficients(files, quality: int | str, size: int = 224):
    """[(y, cb, cr) dequantized float32 (64, h, w) planes, zero fractions (y, cb, cr)] per file.

    ``quality`` 50..95: Pillow re-encodes the decoded 224x224 crop at that quality, 4:2:0;
    "q100-store": the store's val transform at quality 100 (convert_image)."""
    from PIL import Image

    from jdct_cli.jpegmath.quant import ijg_tables

    out = []
    for f in files:
        data = Path(f).read_bytes()
        if quality == "q100-store":
            y, cb, cr, _ = convert_image(data, f, train=False, rng=np.random.default_rng(0),
                                         opts=SampleRecipe(size=size, quality=100))
            luma, chroma = ijg_tables(100)[:2]
            planes, tables = (y, cb, cr), (luma, chroma, chroma)
        else:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=quality, subsampling=2)
            comps, quant, _ = jpeg.read_coefficients(buf.getvalue())
            planes = tuple(np.moveaxis(np.asarray(c), -1, 0) for c in comps[:3])
            tables = quant[:3]
        zeros = tuple(float(np.mean(p == 0)) for p in planes)
        deq = tuple(torch.from_numpy(p.astype(np.float32) * np.asarray(t, np.float32)[:, None, None])
                    for p, t in zip(planes, tables))
        out.append((deq, zeros))
    return out


def batches(samples, batch: int):
    for i in range(0, len(samples), batch):
        chunk = [s for s, _ in samples[i:i + batch]]
        yield tuple(torch.stack([c[j] for c in chunk]) for j in range(3))


# ------------------------------------------------------------------------------------ networks
def prepared_network(name: str, calibration) -> nn.Module:
    """A fresh ``name`` (seeded) with residual branches opened a little and BatchNorm statistics
    calibrated on ``calibration`` batches (cumulative averages), in eval mode."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.bn2c.weight.uniform_(0.1, 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                m.reset_running_stats()
        model.train()
        for inputs in calibration:
            model(*inputs)
    return model.eval()


def conv_input_zeros(model: nn.Module, data) -> dict[str, float]:
    """Share of exact zeros in the input of every convolution of ``model`` over ``data`` batches."""
    zeros: dict[str, list[int]] = {}

    def hook(name):
        def record(_module, args):
            x = args[0]
            z = zeros.setdefault(name, [0, 0])
            z[0] += int((x == 0).sum())
            z[1] += x.numel()
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            for inputs in data:
                model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return {n: z / t for n, (z, t) in zeros.items()}


# ------------------------------------------------------------------------------------ sparse path
class SparsePointwise(nn.Module):
    """A 1x1 convolution computed from the non-zero input positions only (CPO for pointwise layers):
    the input as a CSR matrix [positions, in_channels] times the dense filters [in, out].

    ``weight`` [out, in] and ``bias`` [out] may fold an affine normalization of the input
    (:func:`fold_affine`). Output [B, out, H', W'] (channels-last strides), equal to the dense
    convolution up to float rounding.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, sparse: bool = True):
        super().__init__()
        self.register_buffer("weight_t", weight.t().contiguous())  # [in, out]
        self.register_buffer("bias", bias if bias is not None else torch.zeros(weight.shape[0]))
        self.stride = stride
        self.sparse = sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        if self.sparse:
            out = torch.sparse.mm(rows.to_sparse_csr(), self.weight_t)
        else:
            out = rows @ self.weight_t
        out += self.bias
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def fold_affine(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) of ``conv(x * scale + shift)`` for a bias-free 1x1 ``conv``:
    the normalization in front folded in, so that the layer reads the raw (sparse) input."""
    w = conv.weight.detach()[:, :, 0, 0]
    return w * scale[None, :], w @ shift


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    a = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias.detach() - bn.running_mean * a


def first_layer_plan(name: str, model: nn.Module):
    """[(input BN module path, [1x1 convs reading its output])] for the networks whose first
    convolutions are pointwise and read a BatchNorm'd coefficient input directly."""
    if name in ("upsampling",) or name.startswith("cresnet"):
        return [("bn_input", ["body.res3a.branch2a", "body.res3a.branch1"])]
    if name.startswith("late_concat") and name != "late_concat":
        return [("bn_y", ["y_path.res2a.branch2a", "y_path.res2a.branch1"]),
                ("bn_cbcr", ["cbcr_path.res4x.branch2a", "cbcr_path.res4x.branch1"])]
    return []


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def choose_layers(model: nn.Module, name: str, sample, repeats: int) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` whose first pointwise layers read the raw coefficients (normalization
    folded in) and whose every 1x1 convolution is sparse or dense, whichever measured faster on
    ``sample``'s real input to that layer. Returns (network, one row per candidate layer)."""
    import copy

    net = copy.deepcopy(model)
    rows = []
    captured: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda _m, a, n=n: captured.__setitem__(n, a[0]))
               for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.inference_mode():
        net(*sample)
    for h in handles:
        h.remove()
    folded = {}
    for bn_path, convs in first_layer_plan(name, net):
        a, b = bn_affine(net.get_submodule(bn_path))
        _set(net, bn_path, nn.Identity())
        for path in convs:
            folded[path] = fold_affine(net.get_submodule(path), a, b)
            captured[path] = captured[bn_path]  # the raw dequantized coefficients the BN read
    with torch.inference_mode():
        for path, conv in [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]:
            if conv.kernel_size != (1, 1) or conv.groups != 1:
                continue
            weight, bias = folded.get(path, (conv.weight.detach()[:, :, 0, 0], conv.bias))
            x = captured[path]
            dense = SparsePointwise(weight, bias, conv.stride[0], sparse=False)
            sparse = SparsePointwise(weight, bias, conv.stride[0], sparse=True)
            ref = F.conv2d(x, weight[:, :, None, None], bias, stride=conv.stride) if path not in folded else dense(x)
            t_conv = timed(lambda: conv(x) if path not in folded else dense(x), repeats)
            t_sparse = timed(lambda: sparse(x), repeats)
            err = float((sparse(x) - ref).abs().max())
            use_sparse = t_sparse < t_conv
            rows.append({"layer": path, "input_zeros": round(float((x == 0).float().mean()), 4),
                         "dense_ms": round(1e3 * t_conv, 3), "sparse_ms": round(1e3 * t_sparse, 3),
                         "folded": path in folded, "chosen": "sparse" if use_sparse else "dense", "max_abs_err": err})
            if path in folded:
                _set(net, path, sparse if use_sparse else dense)
            elif use_sparse:
                _set(net, path, sparse)
    return net, rows


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--networks", nargs="+",
                    default=[n for n in list_models() if get_model_info(n).input_kind == "dct"])
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no real data at {SHARED} (set JDCT_SHARED_DATA)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    every = sorted((SHARED / "imagenette-5k" / "val").rglob("*.JPEG"))
    files = every[:: max(1, len(every) // args.images)][: args.images]
    report: dict = {"images": len(files), "inputs": {}, "activations": {}, "trial": {}}

    data = {}
    for q in (*QUALITIES, "q100-store"):
        samples = coefficients(files, q)
        data[q] = samples
        z = np.array([zs for _, zs in samples])
        report["inputs"][str(q)] = {"y": round(float(z[:, 0].mean()), 4), "cb": round(float(z[:, 1].mean()), 4),
                                    "cr": round(float(z[:, 2].mean()), 4)}
        print(f"zero coefficients at {q}: Y {z[:, 0].mean():.1%}  Cb {z[:, 1].mean():.1%}  Cr {z[:, 2].mean():.1%}",
              flush=True)

    for name in args.networks:
        model = prepared_network(name, list(batches(data[75], args.batch)))
        per_q = {}
        for q in (*QUALITIES, "q100-store"):
            zeros = conv_input_zeros(model, batches(data[q], args.batch))
            per_q[str(q)] = zeros
        first = next(iter(per_q["75"]))
        mean75 = float(np.mean(list(per_q["75"].values())))
        report["activations"][name] = per_q
        print(f"{name}: conv inputs zero (q75): mean {mean75:.1%}, first conv {per_q['75'][first]:.1%}, "
              f"max {max(per_q['75'].values()):.1%}", flush=True)

        if name not in TRIAL:
            continue
        sample = next(batches(data[75], args.batch))
        net, rows = choose_layers(model, name, sample, args.repeats)
        chosen = [r for r in rows if r["chosen"] == "sparse"]
        with torch.inference_mode():
            dense_t = timed(lambda: model(*sample), args.repeats)
            sparse_t = timed(lambda: net(*sample), args.repeats)
            diff = float((model(*sample) - net(*sample)).abs().max())
            scale = float(model(*sample).abs().max())
        report["trial"][name] = {"layers": rows, "sparse_layers": len(chosen), "dense_s": dense_t, "sparse_s": sparse_t,
                                 "speedup": dense_t / sparse_t, "max_abs_logit_diff": diff, "logit_scale": scale}
        print(f"  trial: {len(chosen)} of {len(rows)} pointwise layers faster sparse; end to end "
              f"{dense_t * 1e3:.0f} ms dense vs {sparse_t * 1e3:.0f} ms -> {dense_t / sparse_t:.3f}x, "
              f"max |logit diff| {diff:.2g} (logits up to {scale:.2g})", flush=True)
        for r in rows[:6] + [r for r in rows[6:] if r["chosen"] == "sparse"]:
            print(f"    {r['layer']:28s} zeros {r['input_zeros']:.1%}  dense {r['dense_ms']:.2f} ms  sparse "
                  f"{r['sparse_ms']:.2f} ms  -> {r['chosen']}{' (normalization folded)' if r['folded'] else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
