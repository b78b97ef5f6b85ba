"""jdct's CUDA paths: the loader's device batches, bf16 + channels_last training of every network,
``--compile``, NCCL, checkpoints crossing devices. Marker ``cuda``: ``pytest -m cuda``.

Skipped without a GPU; the prepared GPU run (``benchmarks/gpu/run.sh``) runs them on one.
``JDCT_CUDA_TESTS_DEVICE=cpu`` runs them with the CPU standing in for the GPU (gloo for NCCL, no
``torch.compile``: inductor on a small CPU takes minutes): that proves nothing about CUDA but keeps
the tests themselves working where no GPU is, and ``tests/test_gpu_run.py`` does it on every run.

Stores come from :func:`jdct_cli.convert.convert` over the ``photo_tree`` fixture (real JPEGs made
at test time): 4 classes, 48 train images (2 views) and 16 val images, 32 px.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

DEVICE = os.environ.get("JDCT_CUDA_TESTS_DEVICE", "cuda")
STANDIN = DEVICE != "cuda"
ARCH = "late_concat_rfa_thinner"  # the DCT network the training tests use (fast, RFA-free stem)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not STANDIN and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (JDCT_CUDA_TESTS_DEVICE=cpu runs these with the CPU standing in)"),
]


def _convert_offers_images_layout() -> bool:
    """The images layout is covered once both ends have it: conversion (ConvertOptions.layout)
    and the loader (``jdct_cli.data.LAYOUTS``)."""
    try:
        from jdct_cli.convert import ConvertOptions
        from jdct_cli import data
    except Exception:  # an unbuilt extension: the tests report that themselves
        return False
    return ("layout" in {f.name for f in dataclasses.fields(ConvertOptions)}
            and "images" in getattr(data, "LAYOUTS", ("crops",)))


#: Store layouts every loader test covers. The images layout (issue 12: JPEG bytes in the store,
#: crops made on the device) joins as soon as ConvertOptions has its ``layout`` field.
LAYOUTS = ["crops", pytest.param("images", marks=pytest.mark.skipif(
    not _convert_offers_images_layout(), reason="this jdct has no images layout yet (issue 12)"))]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if STANDIN:
        env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def stores(photo_tree, tmp_path_factory):
    """``stores(layout)`` -> path of a store of ``photo_tree`` in that layout (converted once)."""
    from jdct_cli.convert import ConvertOptions, convert

    made = {}
    root = tmp_path_factory.mktemp("cuda-stores")

    def get(layout: str) -> Path:
        if layout not in made:
            opts = ConvertOptions(size=32, views=2, chunk_samples=8, shard_samples=16)
            if layout != "crops":
                opts = dataclasses.replace(opts, layout=layout, views=1)  # an images store has one
            made[layout] = root / f"{layout}.zarr"
            convert(photo_tree, made[layout], options=opts, workers=1)
        return made[layout]

    return get


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensor_devices(obj) -> set[str]:
    if isinstance(obj, torch.Tensor):
        return {obj.device.type}
    if isinstance(obj, dict):
        return set().union(*(_tensor_devices(v) for v in obj.values())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(_tensor_devices(v) for v in obj)) if obj else set()
    return set()


def _train_cmd(store, out, device, *extra) -> list[str]:
    return [sys.executable, "-m", "jdct_cli", "train", "--arch", ARCH, "--data", os.fspath(store), "--out",
            os.fspath(out), "--batch-size", "8", "--device", device, "--threads", "1", "--seed", "0", *extra]


# ------------------------------------------------------------------ the loader on the device


#: (split, output, normalize) cases of the loader comparison.
LOADER_CASES = [(split, output, normalize) for split in ("train", "val")
                for output, normalize in (("dct", False), ("dct", True), ("rgb", True), ("ycbcr", False))]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loader_device_batches_equal_its_cpu_batches(stores, layout):
    """The same loader on the device and on the CPU, for each split and output: same samples,
    labels and flips in the same order over two epochs (train: shuffled and flipped).
    Dequantized coefficients are int16 x a quantization step, exact in float32, so they must match
    bit for bit (the int16 batches crossed the pinned buffers and the side-stream copy intact);
    standardized coefficients and pixels within float32 rounding. Device batches are all
    collected before any is read back, so a pinned buffer reused before its copy finished would
    show. Every case runs; the failures are listed together."""
    failures = []
    for split, output, normalize in LOADER_CASES:
        try:
            _compare_loaders(stores(layout), layout, split, output, normalize)
        except AssertionError as exc:
            failures.append(f"{split} output={output} normalize={normalize}: {str(exc).strip()[:600]}")
    assert not failures, "\n".join(failures)


def _compare_loaders(store, layout, split, output, normalize):
    from jdct_cli.data import DCTLoader

    kw = dict(batch_size=8, seed=5, threads=2, output=output, normalize=normalize)
    ref = DCTLoader(store, split, device="cpu", **kw)
    dev = DCTLoader(store, split, device=DEVICE, **kw)
    assert len(ref) == len(dev) > 0
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        dev.set_epoch(epoch)
        expected = [(tuple(x.clone() for x in _tuple(xs)), labels.clone()) for xs, labels in ref]
        got = list(dev)  # no read-back while iterating
        if torch.device(DEVICE).type == "cuda":
            torch.cuda.synchronize()
        assert len(got) == len(expected) == len(ref), f"epoch {epoch}: {len(got)} batches, expected {len(expected)}"
        for (xs_ref, lab_ref), (xs_dev, lab_dev) in zip(expected, got):
            xs_dev = _tuple(xs_dev)
            assert lab_dev.device.type == torch.device(DEVICE).type
            assert torch.equal(lab_dev.cpu(), lab_ref), f"epoch {epoch}: labels differ"
            assert len(xs_dev) == len(xs_ref) == (3 if output == "dct" else 1)
            for a, b in zip(xs_ref, xs_dev):
                assert b.device.type == torch.device(DEVICE).type and b.dtype == a.dtype == torch.float32
                assert b.shape == a.shape
                if b.device.type == "cuda":
                    assert b.is_contiguous(memory_format=torch.channels_last), "not channels_last (the CUDA default)"
                b = b.cpu()
                if output == "dct" and not normalize:
                    _assert_coefficients_equal(a, b, exact=layout == "crops")
                elif output == "dct":
                    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
                else:
                    # block IDCT as a 64-term float32 matmul, summed in another order on the GPU:
                    # 1e-4 is 0.006 of a grey level after ImageNet normalization
                    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)


def _assert_coefficients_equal(a: torch.Tensor, b: torch.Tensor, exact: bool) -> None:
    """Dequantized coefficients: bit for bit; or, where the device computes them (images layout:
    a float DCT then rounding, where a tie may round the other way on another device), equal but
    for under 0.1 % of them, none off by more than one quantization step."""
    if exact:
        assert torch.equal(a, b), f"{int((a != b).sum())} of {a.numel()} dequantized coefficients differ"
        return
    diff = (a - b).abs()
    steps = torch.where(a != 0, a.abs(), torch.ones_like(a))  # |c*q| >= q wherever c != 0
    assert (diff > 0).float().mean().item() < 1e-3
    assert bool((diff <= steps + 1e-3).all())


# ------------------------------------------------------------------ every network, bf16 + channels_last


def _zoo():
    """Every network; with the CPU standing in, one per input kind and the one with a penalty
    (the same code for all, and each costs seconds on a small CPU)."""
    from jdct_cli.models import get_model_info, list_models

    names = list_models()
    if not STANDIN:
        return names
    first = {}
    for name in names:
        first.setdefault(get_model_info(name).input_kind, name)
    return sorted(set(first.values()) | ({"dct_ortho"} & set(names)), key=names.index)


def test_bf16_channels_last_training_step_of_every_network():
    """One SGD step of each zoo network as `jdct train` runs it on CUDA: channels_last weights and
    inputs, bf16 autocast; the logits are bf16 (autocast really on), the loss and every gradient
    finite, and the step changes the weights. Every network runs; the failures are listed together."""
    names = _zoo()
    failures = []
    for name in names:
        try:
            _training_step(name)
        except Exception as exc:  # one network's error must not hide the others'
            failures.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:400]}")
    assert not failures, f"{len(failures)} of {len(names)} networks:\n" + "\n".join(failures)


def _training_step(name: str) -> None:
    from jdct_cli.models import create_model

    torch.manual_seed(0)
    size, batch = 64, 4
    model = create_model(name, num_classes=10).to(DEVICE).to(memory_format=torch.channels_last).train()
    if model.input_kind == "dct":
        shapes = [(batch, 64, size // 8, size // 8)] + [(batch, 64, size // 16, size // 16)] * 2
    else:
        shapes = [(batch, 3, size, size)]
    inputs = [torch.randn(s, device=DEVICE).contiguous(memory_format=torch.channels_last) for s in shapes]
    labels = torch.arange(batch, device=DEVICE) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    with torch.autocast(device_type=torch.device(DEVICE).type, dtype=torch.bfloat16):
        logits = model(*inputs)
    assert logits.dtype == torch.bfloat16 and logits.shape == (batch, 10), (logits.dtype, logits.shape)
    loss = F.cross_entropy(logits.float(), labels)
    reg = model.regularization_loss()
    if reg is not None:
        loss = loss + reg
    opt.zero_grad(set_to_none=True)
    loss.backward()
    assert math.isfinite(loss.item()), f"loss {loss.item()}"
    bad = [k for k, p in model.named_parameters() if p.requires_grad
           and (p.grad is None or not bool(torch.isfinite(p.grad).all()))]
    assert not bad, f"missing or non-finite gradients: {bad[:5]}"
    opt.step()
    assert any(not torch.equal(before[k], p.detach()) for k, p in model.named_parameters() if p.requires_grad), \
        "the step changed no weight"


# ------------------------------------------------------------------ NCCL


NCCL_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist, torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP
    from jdct_cli.models import create_model

    device, backend, init = sys.argv[1:4]
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=init, rank=0, world_size=1)
    t = torch.arange(1, 5, dtype=torch.float32, device=device)
    dist.all_reduce(t)
    dist.broadcast(t, src=0)
    torch.manual_seed(0)
    model = create_model("late_concat_rfa_thinner", num_classes=4).to(device)
    ddp = DDP(model, device_ids=[0] if device == "cuda" else None)
    y = torch.randn(4, 64, 4, 4, device=device)
    cb, cr = torch.randn(4, 64, 2, 2, device=device), torch.randn(4, 64, 2, 2, device=device)
    loss = F.cross_entropy(ddp(y, cb, cr), torch.arange(4, device=device))
    loss.backward()
    grads = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    dist.barrier()
    print(json.dumps({"backend": dist.get_backend(), "world": dist.get_world_size(), "sum": t.tolist(),
                      "loss": loss.item(), "grads": grads}))
    dist.destroy_process_group()
""")


def test_one_process_nccl_group_initializes_and_runs_a_ddp_step(tmp_path):
    """A one-process NCCL group (what torchrun gives each process, minus the others): collectives
    return the right values and a DDP step of a zoo network gives finite gradients."""
    backend = "gloo" if STANDIN else "nccl"
    proc = subprocess.run([sys.executable, "-c", NCCL_SCRIPT, DEVICE, backend, f"file://{tmp_path / 'rendezvous'}"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["backend"] == backend and res["world"] == 1
    assert res["sum"] == [1.0, 2.0, 3.0, 4.0]
    assert math.isfinite(res["loss"]) and res["grads"] is True


# ------------------------------------------------------------------ checkpoints across devices


@pytest.fixture(scope="module")
def interrupted(stores, tmp_path_factory):
    """``interrupted(device)`` -> RUN_DIR of a 2-epoch `jdct train` on ``device`` stopped by Ctrl-C
    once set up (made once per device; copy it before resuming)."""
    made = {}

    def get(device: str) -> Path:
        if device in made:
            return made[device]
        run = tmp_path_factory.mktemp(f"interrupted-{device}") / "run"
        proc = subprocess.Popen(_train_cmd(stores("crops"), run, device, "--epochs", "2"), cwd=REPO, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = []
            for _ in range(100):  # "training <arch> ..." is printed once the run is set up (warnings may come first)
                seen.append(proc.stderr.readline())
                if not seen[-1] or seen[-1].startswith(f"training {ARCH}"):
                    break
            assert seen[-1].startswith(f"training {ARCH}"), "".join(seen)[-4000:]
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err[-4000:]
        made[device] = run
        return run

    return get


#: With the CPU standing in, both directions are the same CPU -> CPU run: one is enough.
DIRECTIONS = [pytest.param(DEVICE, "cpu", id="device-to-cpu")] + \
    ([] if STANDIN else [pytest.param("cpu", DEVICE, id="cpu-to-device")])


@pytest.mark.parametrize("first, second", DIRECTIONS)
def test_interrupted_run_resumes_on_the_other_device(stores, interrupted, tmp_path, first, second):
    """Ctrl-C a 2-epoch run on one device, `--resume` it on the other: it completes every step
    of both epochs exactly once (the loader position and LR schedule carried over), and the
    finished weights are finite. Device -> CPU also evaluates the final checkpoint on both
    devices: the same top-1 within one sample and the same loss within bf16 noise."""
    store = stores("crops")
    run = tmp_path / "run"
    shutil.copytree(interrupted(first), run)
    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert saved["config"]["device"] == first and saved["step"] < 12
    res = subprocess.run([sys.executable, "-m", "jdct_cli", "train", "--resume", os.fspath(run), "--device", second,
                          "--threads", "1", "-q"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = _metrics(run)
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["step"] == 12  # 2 x 48 / 8
    final = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert final["step"] == 12 and not final["mid_epoch"] and final["config"]["device"] == second
    assert all(bool(torch.isfinite(v).all()) for v in final["model"].values() if v.is_floating_point())
    if first != DEVICE:
        return
    evals = {}
    for device in dict.fromkeys((DEVICE, "cpu")):
        out = subprocess.run([sys.executable, "-m", "jdct_cli", "eval", "--checkpoint", os.fspath(run), "--data",
                              os.fspath(store), "--device", device, "--threads", "1", "--json"],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        evals[device] = json.loads(out.stdout)
    a, b = evals[DEVICE], evals["cpu"]  # the same run when the CPU stands in
    assert a["samples"] == b["samples"] == 16
    assert abs(a["top1"] - b["top1"]) <= 1 / 16 + 1e-9
    assert math.isclose(a["loss"], b["loss"], rel_tol=0.05)


@pytest.mark.skipif(STANDIN, reason="a checkpoint written on the CPU holds CPU tensors only")
def test_checkpoint_written_on_the_device_loads_where_there_is_no_gpu(interrupted):
    """A checkpoint is read with plain ``torch.load(weights_only=True)`` (README), also on a machine
    without a GPU, where a CUDA tensor anywhere in it (optimizer state included) cannot be
    deserialized: every tensor of a checkpoint written on the device must be a CPU tensor."""
    payload = torch.load(interrupted(DEVICE) / "last.pt", weights_only=True)  # no map_location: as on a CPU-only machine
    assert _tensor_devices(payload) == {"cpu"}, {k: sorted(_tensor_devices(v)) for k, v in payload.items()}


# ------------------------------------------------------------------ --compile (last: the slowest)


@pytest.mark.timeout(900)  # compiling takes most of a minute: only the run's time box bounds it
@pytest.mark.skipif(STANDIN, reason="torch.compile of a ResNet-50-sized network takes minutes on a small CPU")
def test_compile_trains_a_dct_network_like_eager(stores, tmp_path):
    """`jdct train --compile` on the device: a DCT network trains its 6 steps, and its epoch's
    train and val loss agree with the same run uncompiled (same seed, data and flips; the
    kernels differ, so within bf16 noise, not bit for bit)."""
    store = stores("crops")
    runs = {}
    for compiled in (False, True):
        out = tmp_path / ("compiled" if compiled else "eager")
        proc = subprocess.run(_train_cmd(store, out, DEVICE, "--epochs", "1", "-q",
                                         *(["--compile"] if compiled else [])),
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        (runs[compiled],) = _metrics(out)
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["compile"] is True
    eager, compiled = runs[False], runs[True]
    assert compiled["step"] == eager["step"] == 6  # 48 samples / 8
    for key in ("train_loss", "val_loss"):
        assert math.isfinite(compiled[key])
        assert math.isclose(compiled[key], eager[key], rel_tol=0.05), (key, compiled[key], eager[key])
