"""Regenerates tests/golden/checkpoint_v1.pt, the committed format-version-1 checkpoint fixture, and
tests/golden/checkpoint_v1_weights_only.pt, the same checkpoint as `jdct export` writes it.

Run only when deliberately creating a new format version (then add checkpoint_v2.pt beside it and
keep this one: old checkpoints must keep loading or be refused with a clear CheckpointError).
The model is a tiny Linear(4, 3) after one SGD step on fixed data, so the files stay a few KB.
"""
from pathlib import Path

import torch


def build():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4) / 8
    y = torch.tensor([0, 2])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    config = {
        "arch": "golden_linear", "data": "golden.zarr", "out": "runs/golden", "epochs": 3,
        "batch_size": 2, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0001, "label_smoothing": 0.0,
        "warmup_epochs": 0.0, "seed": 0, "device": "cpu", "threads": None, "amp": True,
        "channels_last": True, "compile": False, "train_split": "train", "val_split": "val",
        "world_size": 1, "global_batch_size": 2, "milestones": [1, 2, 3],
    }
    metrics = {"epoch": 1, "step": 1, "lr": 0.05, "train_loss": 1.25, "train_top1": 0.5, "val_loss": 1.5,
               "val_top1": 0.5, "val_top5": 1.0, "val_samples": 2, "images_per_s": 10.0, "epoch_time_s": 0.2}
    return {
        "format": "jdct-checkpoint", "format_version": 1, "jdct_version": "0.1.0",
        "arch": "golden_linear", "num_classes": 3, "classes": ["n01", "n02", "n03"], "input_kind": "dct",
        "config": config,
        "store": {"path": "golden.zarr", "size": 32, "quality": 100, "subsampling": "4:2:0"},
        "epoch": 1, "step": 1, "mid_epoch": False,
        "epoch_sums": {"loss": 0.0, "correct": 0, "count": 0},
        "best_top1": 0.5, "metrics": metrics,
        "scheduler": {"step": 1, "base_lr": 0.05, "steps_per_epoch": 1},
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scaler": {},
        "loader": {"epoch": 1, "position": 0, "seed": 0},
        "rng": {"torch": torch.get_rng_state()},
    }


#: What a weights-only export keeps of a training checkpoint (written out here, not imported from jdct).
WEIGHTS_ONLY_KEYS = ("format", "format_version", "jdct_version", "arch", "num_classes", "classes", "input_kind",
                     "config", "store", "epoch", "step", "best_top1", "metrics", "model")


def build_weights_only():
    full = build()
    return {**{k: full[k] for k in WEIGHTS_ONLY_KEYS}, "weights_only": True}


if __name__ == "__main__":
    torch.save(build(), Path(__file__).with_name("checkpoint_v1.pt"))
    torch.save(build_weights_only(), Path(__file__).with_name("checkpoint_v1_weights_only.pt"))
