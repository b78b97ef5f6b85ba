"""Test helper: checkpoints for predict and export without a training run, and real JPEGs of chosen
sizes and samplings for --direct.

A checkpoint here is a weights-only export (the real on-disk format, written by the real
``checkpoint.save_checkpoint``) of a freshly initialised zoo network, seeded, with the facts of a
real store converted by ``jdct convert``: everything predict and export read, without the minutes
a training run costs. Fresh networks start their residual branches at zero, so their outputs hardly
depend on the input; :func:`make_checkpoint` opens every branch a little (seeded) so that
different images get different logits (spread ~0.1, far above float rounding), as a trained
network's do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from photos import photo_jpeg


def make_checkpoint(path: Path, store: Path, arch: str = "late_concat_rfa_thinner", *, classes: Sequence[str] = (),
                    seed: int = 0) -> Path:
    """A weights-only checkpoint at ``path`` for ``arch`` with the facts of ``store``; ``classes``
    default to the store's. Returns ``path``."""
    from jdct_cli import __version__
    from jdct_cli import checkpoint as ckpt
    from jdct_cli.store import read_metadata
    from jdct_cli.train import build_model, store_facts

    info = read_metadata(store)
    classes = list(classes) or list(info.classes)
    torch.manual_seed(seed)
    model, kind = build_model(arch, len(classes))
    from jdct_cli.models.resnet import Bottleneck

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Bottleneck):  # open every residual branch a little (seeded)
                module.bn2c.weight.uniform_(0.1, 0.3)
    payload = {"format": ckpt.FORMAT_NAME, "format_version": ckpt.FORMAT_VERSION, "jdct_version": __version__,
               "arch": arch, "num_classes": len(classes), "classes": classes, "input_kind": kind,
               "config": {"arch": arch, "data": os.fspath(store), "batch_size": 8, "seed": seed},
               "store": store_facts(info), "epoch": 0, "step": 0, "best_top1": None, "metrics": None,
               "model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "weights_only": True}
    ckpt.save_checkpoint(path, payload)
    return path


def direct_jpegs(folder: Path) -> dict[str, Path]:
    """Real 4:2:0 JPEGs whose sides are multiples of 16 (--direct takes them as they are), at three
    block-grid sizes, plus ones it refuses (4:4:4, a side not a multiple of 16, grayscale)."""
    from PIL import Image

    from photos import photo

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a_64x64": photo_jpeg(folder / "a_64x64.jpg", "astronaut", size=(64, 64), quality=85),
        "b_96x48": photo_jpeg(folder / "b_96x48.jpg", "chelsea", size=(96, 48), quality=75),
        "c_64x64": photo_jpeg(folder / "c_64x64.jpg", "coffee", size=(64, 64), quality=60),
        "d_48x80": photo_jpeg(folder / "d_48x80.jpg", "rocket", size=(48, 80), quality=95),
        "e_64x64": photo_jpeg(folder / "e_64x64.jpg", "chelsea", size=(64, 64), quality=50),
        "f_96x48": photo_jpeg(folder / "f_96x48.jpg", "astronaut", size=(96, 48), quality=90),
        "g_444": photo_jpeg(folder / "g_444.jpg", "coffee", size=(64, 64), quality=90, subsampling=0),
        "h_odd": photo_jpeg(folder / "h_odd.jpg", "rocket", size=(70, 50), quality=90),
    }
    gray = folder / "i_gray.jpg"
    Image.fromarray(photo("astronaut")).convert("L").resize((64, 64)).save(gray, quality=90)
    files["i_gray"] = gray
    return files
