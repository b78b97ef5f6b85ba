"""Diagnostics behind the learning check: why the recipe's first epoch blew up, and what fixes it.

    python3 benchmarks/learning_diagnostics.py STORE [--arch late_concat_rfa_thinner] [--steps 186]
        [--every 31] [--lr 0.025] [--head-scale 0.01] [--warmup-steps 0] [--default-init]

STORE is a jdct store (e.g. the one `benchmarks/learning.py` converts: bench-learning/imagenette-32.zarr).
Two measurements, on the store's train split, batch 64, SGD (momentum 0.9, wd 1e-4) as `jdct train`
steps it, one torch thread:

1. One step, attributed: the loss of a second batch after one SGD step (from the initialization,
   on the first batch) applied to nothing, to the classifier only, to the body only, to everything.
2. A run of ``--steps`` steps: mean loss over every ``--every`` steps, the logits' spread and the
   norm of the pooled features the classifier reads.

``--default-init`` undoes the zero start of the residual branches (every BN scale 1, as before);
``--head-scale`` is the classifier's LR as a fraction of ``--lr`` (1 = one LR for everything).
Results in benchmarks/RESULTS.md, "Learning check".
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jdct_cli.data import DCTLoader  # noqa: E402
from jdct_cli.models import create_model, get_model_info  # noqa: E402
from jdct_cli.models.resnet import Bottleneck  # noqa: E402


def build(arch: str, classes: int, default_init: bool):
    torch.manual_seed(0)
    model = create_model(arch, classes)
    if default_init:
        for module in model.modules():
            if isinstance(module, Bottleneck):
                torch.nn.init.ones_(module.bn2c.weight)
    return model


def optimizer(model, lr: float, head_scale: float):
    head = {id(p) for p in model.classifier_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head], "scale": 1.0},
              {"params": [p for p in model.parameters() if id(p) in head], "scale": head_scale}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=1e-4)


def one_step_attribution(args, loader) -> None:
    model = build(args.arch, len(loader.classes), args.default_init)
    model.train()
    batches = iter(loader)
    (x1, y1), (x2, y2) = next(batches), next(batches)
    x1, x2 = (x if isinstance(x, tuple) else (x,) for x in (x1, x2))
    F.cross_entropy(model(*x1), y1).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = copy.deepcopy(model.state_dict())
    for label, chosen in (("nothing", lambda n: False), ("the classifier only", lambda n: n.startswith("head.")),
                          ("the body only", lambda n: not n.startswith("head.")), ("everything", lambda n: True)):
        model.load_state_dict(state)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if chosen(n):
                    p -= args.lr * grads[n]
            logits = model(*x2)
        print(f"one step applied to {label:20s}: next batch loss {F.cross_entropy(logits, y2):.3f}, "
              f"logits std {logits.std():.2f}")


def run(args, loader) -> None:
    model = build(args.arch, len(loader.classes), args.default_init)
    opt = optimizer(model, args.lr, args.head_scale)
    pooled = {}
    model.head.register_forward_pre_hook(lambda _m, a: pooled.__setitem__("f", a[0].detach().mean((2, 3))))
    model.train()
    losses, step = [], 0
    while step < args.steps:
        loader.set_epoch(step // len(loader))
        for x, y in loader:
            x = x if isinstance(x, tuple) else (x,)
            lr = args.lr * min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else args.lr
            for group in opt.param_groups:
                group["lr"] = lr * group["scale"]
            logits = model(*x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            if step % args.every == 0:
                f = pooled["f"]
                print(f"steps {step - args.every + 1:4d}-{step:4d}: mean loss {np.mean(losses[-args.every:]):.3f}  "
                      f"logits std {logits.std():.2f}  |pooled features| {f.norm(dim=1).mean():.1f}", flush=True)
            if step >= args.steps:
                break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--arch", default="late_concat_rfa_thinner")
    ap.add_argument("--steps", type=int, default=186)
    ap.add_argument("--every", type=int, default=31)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--head-scale", type=float, default=1.0)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--default-init", action="store_true", help="every BN scale 1 (no zero start)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    loader = DCTLoader(args.store, "train", batch_size=64, seed=0, threads=1,
                       output=get_model_info(args.arch).input_kind)
    one_step_attribution(args, loader)
    run(args, loader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
