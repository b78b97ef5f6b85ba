"""Distributed plumbing of ``jdct train``: the process group, and the few collectives the loop needs.

One process trains alone (:class:`Dist` with ``world_size`` 1: every function here is then a no-op
or the identity). Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls
:func:`init_dist` and they form one group (NCCL on CUDA, gloo on CPU). Scalars are reduced in
float64 so that sample counts stay exact.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: On CUDA the training loss is read back (and checked for NaN/inf) every this many steps, and
#: DDP on CUDA agrees on a Ctrl-C this often (see :func:`poll_stop`).
SYNC_EVERY = 10


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world_size``, GPU ``local_rank``.

    ``owns_group``: this code initialised the process group, so it destroys it at the end.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_dist(device_name: str) -> Dist:
    """Join the torchrun group when ``WORLD_SIZE`` > 1 (initialising it unless already done)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def close_dist(dctx: Dist) -> None:
    """Destroy the process group when :func:`init_dist` created it."""
    if dctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device, dctx: Dist) -> list[float]:
    """Sum a few scalars over the ranks (float64 so that counts stay exact)."""
    if not dctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device, dctx: Dist) -> bool:
    """True on every rank when ``flag`` is true on any: ranks must stop at the same step."""
    if not dctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sync_buffers(model, dctx: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each *training* forward, so after the last step every
    rank holds the statistics of its own last batch; validating with those would make each rank
    use a different model from the one rank 0 saves. Called before validation and saving.
    """
    if not dctx.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def poll_stop(step: int, steps_per_epoch: int, distributed_cuda: bool) -> bool:
    """Whether the ranks agree on a Ctrl-C after optimizer step ``step`` (1-based count so far).

    Agreeing is an all-reduce whose result the host reads, which on CUDA waits for the whole
    step to finish and so stops the host from queueing the next one ahead: DDP on CUDA asks every
    SYNC_EVERY steps and at the end of each epoch (a Ctrl-C then stops within SYNC_EVERY steps).
    Alone or on CPU (gloo) it costs nothing and is asked after every step. The same on every
    rank, since every rank has the same ``step``.
    """
    return not distributed_cuda or step % SYNC_EVERY == 0 or step % steps_per_epoch == 0


def global_partial_sums(sums: dict, device: torch.device, dctx: Dist) -> dict:
    """A mid-epoch checkpoint's train sums ({"loss", "correct", "count"}) over all ranks.

    Rank 0 alone writes the checkpoint, so it must hold every rank's part of the interrupted epoch
    (collective: every rank calls it). :func:`resumed_partial_sums` then hands them back to one rank.
    """
    loss, correct, count = all_reduce_sum([sums["loss"], sums["correct"], sums["count"]], device, dctx)
    return {"loss": loss, "correct": int(round(correct)), "count": int(round(count))}


def resumed_partial_sums(saved: dict, dctx: Dist) -> dict:
    """Each rank's starting sums when a mid-epoch checkpoint resumes: rank 0 takes the saved global
    sums, the other ranks start from zero, so the end-of-epoch all-reduce counts them once."""
    if dctx.rank == 0:
        return {"loss": float(saved["loss"]), "correct": int(saved["correct"]), "count": int(saved["count"])}
    return {"loss": 0.0, "correct": 0, "count": 0}
