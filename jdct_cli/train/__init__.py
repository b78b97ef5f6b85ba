"""``jdct train``: the paper's ResNet-50 recipe on a jdct store, from one CPU to many GPUs.

:func:`train` is the library entry point (the CLI only parses flags into a config and renders the
progress events). One process trains alone; under ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) every process runs :func:`train` and they form a DistributedDataParallel group
(NCCL on CUDA, gloo on CPU). Only rank 0 writes files and reports progress; the run directory's
files are described in :mod:`jdct_cli.train.rundir`.

Recipe: SGD (momentum 0.9, weight decay 1e-4 on every parameter), LR 0.1 x global batch / 256
(the final classifier's x min(1, classes/1000)), x0.1 at 1/3, 2/3 and 8/9 of the run, linear
warm-up (see :mod:`jdct_cli.config`), cross-entropy with optional label smoothing plus the model's
own ``regularization_loss()`` (dct_ortho's orthonormality penalty); every residual branch starts
at zero (:func:`jdct_cli.models.resnet.init_weights`). On CUDA: bf16 autocast (``amp``) and
channels_last.

Modules: :mod:`~jdct_cli.train.api` (set-up, resume, :func:`train`), :mod:`~jdct_cli.train.loop`
(the epoch loop), :mod:`~jdct_cli.train.runtime` (device, network, loaders and the validation pass,
shared with ``jdct eval``), :mod:`~jdct_cli.train.distributed` (process group and collectives),
:mod:`~jdct_cli.train.rundir` (the files of RUN_DIR), :mod:`~jdct_cli.train.signals` (Ctrl-C).
"""
from __future__ import annotations

from .api import STORE_KEYS_FOR_PREDICT, estimate_checkpoint_bytes, prepare_config, store_facts, train
from .distributed import Dist
from .loop import TrainResult
from .runtime import build_model, make_loader, resolve_device, run_validation

__all__ = ["train", "TrainResult", "Dist", "build_model", "make_loader", "resolve_device", "run_validation",
           "store_facts", "prepare_config", "estimate_checkpoint_bytes", "STORE_KEYS_FOR_PREDICT"]
