"""Fast tests of the training plumbing that needs no store: config layering, the LR schedule,
the checkpoint format (golden v1 fixture), atomic writes and their refusals."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from jdct_cli import checkpoint as ckpt
from jdct_cli.config import (TrainConfig, build_config, decay_step, default_head_lr_scale, default_milestones,
                             default_warmup_epochs, load_config_file, lr_at, resolve, warmup_steps)
from jdct_cli.errors import CheckpointError, ConfigError, SourceNotFoundError
from jdct_cli.fileio import atomic_write, atomic_write_text

GOLDEN = Path(__file__).parent / "golden" / "checkpoint_v1.pt"
GOLDEN_WEIGHTS = Path(__file__).parent / "golden" / "checkpoint_v1_weights_only.pt"


# ------------------------------------------------------------------------------------ config


def test_flags_override_yaml_and_json_config_files(tmp_path):
    (tmp_path / "c.yaml").write_text("arch: upsampling_rfa\ndata: a.zarr\nbatch-size: 32\nepochs: 9\nlr: 0.05\n")
    (tmp_path / "c.json").write_text(json.dumps({"arch": "late_concat", "data": "b.zarr", "label_smoothing": 0.1}))
    cfg = build_config(tmp_path / "c.yaml", epochs=12, lr=None)  # None = flag not given
    assert (cfg.arch, cfg.data, cfg.batch_size, cfg.epochs, cfg.lr) == ("upsampling_rfa", "a.zarr", 32, 12, 0.05)
    cfg = build_config(tmp_path / "c.json", arch="resnet50_rgb")
    assert (cfg.arch, cfg.data, cfg.label_smoothing, cfg.momentum) == ("resnet50_rgb", "b.zarr", 0.1, 0.9)


@pytest.mark.parametrize("text, needle", [
    ("arch: x\nbogus_key: 1\n", "unknown option 'bogus_key'"),
    ("arch: x\nepochs: ten\n", "'epochs' must be an integer"),
    ("[1, 2]\n", "mapping"),
    ("arch: [unclosed\n", "cannot parse"),
])
def test_bad_config_files_name_the_file_and_the_reason(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_missing_config_file_and_bad_ranges():
    with pytest.raises(SourceNotFoundError):
        load_config_file("/nonexistent/cfg.yaml")
    with pytest.raises(ConfigError, match="momentum"):
        build_config(arch="a", data="d", momentum=1.5)
    with pytest.raises(ConfigError, match="--arch"):
        build_config(data="d")


def test_resolve_default_lr_warmup_and_milestones():
    cfg = resolve(build_config(arch="a", data="d", batch_size=64), world_size=8)  # global 512
    assert cfg.global_batch_size == 512 and math.isclose(cfg.lr, 0.2)
    assert cfg.warmup_epochs == 5.0 and cfg.milestones == [30, 60, 80]
    cfg = resolve(build_config(arch="a", data="d", batch_size=64, epochs=18), world_size=8)
    assert math.isclose(cfg.warmup_epochs, 1.0)  # 5/90 of the run
    cfg = resolve(build_config(arch="a", data="d", batch_size=64), world_size=4)  # global 256: none
    assert cfg.warmup_epochs == 0.0 and math.isclose(cfg.lr, 0.1)
    cfg = resolve(build_config(arch="a", data="d", lr=0.3, warmup_epochs=2.0), world_size=1)
    assert (cfg.lr, cfg.warmup_epochs, cfg.out) == (0.3, 2.0, os.path.abspath(os.path.join("runs", "a")))
    assert cfg.data == os.path.abspath("d")  # absolute: --resume and eval work from any folder
    assert default_milestones(9) == [3, 6, 8] and default_milestones(1) == [0.3333, 0.6667, 0.8889]
    assert default_milestones(2) == [0.6667, 1.3333, 1.7778]  # not [1, 1, 2]: three distinct decays
    assert default_warmup_epochs(90, 257) == 5.0 and default_warmup_epochs(90, 256) == 0.0


# ------------------------------------------------------------------------------ LR schedule


def test_step_decay_matches_torch_multisteplr():
    """Independent reference: torch's MultiStepLR stepped once per epoch (no warm-up)."""
    epochs, spe, base = 90, 3, 0.4
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60, 80], gamma=0.1)
    for epoch in range(epochs):
        expected = opt.param_groups[0]["lr"]
        for s in range(spe):
            got = lr_at(epoch * spe + s, base_lr=base, steps_per_epoch=spe, warmup_epochs=0.0,
                        milestones=default_milestones(epochs))
            assert math.isclose(got, expected, rel_tol=1e-9), (epoch, s)
        opt.step()
        ref.step()


@pytest.mark.parametrize("global_batch", [64, 512])
def test_default_schedule_is_distinct_and_sensible_for_every_epoch_count(global_batch):
    """For 1..100 epochs: three distinct decays inside the run at 1/3, 2/3 and 8/9 of it, a warm-up
    (large batches only) that ends before the first decay, and, stepped through, four LR levels
    whose shares of the steps are the 90-epoch recipe's (1/3, 1/3, 2/9, 1/9) to within one step."""
    spe, base = 50, 0.2
    for epochs in range(1, 101):
        ms = default_milestones(epochs)
        warm = default_warmup_epochs(epochs, global_batch)
        assert len(ms) == 3 and 0 < ms[0] < ms[1] < ms[2] < epochs, (epochs, ms)
        assert [m / epochs for m in ms] == pytest.approx([1 / 3, 2 / 3, 8 / 9], abs=1e-4 / epochs + 1e-9)
        assert (warm > 0) == (global_batch > 256) and 0 <= warm < ms[0], (epochs, warm)
        total = epochs * spe
        lrs = [lr_at(s, base_lr=base, steps_per_epoch=spe, warmup_epochs=warm, milestones=ms) for s in range(total)]
        after_warmup = lrs[warmup_steps(warm, spe):]
        levels = sorted(set(after_warmup), reverse=True)
        assert levels == pytest.approx([base, base / 10, base / 100, base / 1000]), (epochs, levels)
        shares = [sum(1 for v in after_warmup if math.isclose(v, level)) / total for level in levels]
        shares[0] += warmup_steps(warm, spe) / total  # the warm-up steps belong to the first level
        assert shares == pytest.approx([1 / 3, 1 / 3, 2 / 9, 1 / 9], abs=1.01 / total), (epochs, shares)
        # the LR never rises after the warm-up
        assert all(b <= a for a, b in zip(after_warmup, after_warmup[1:]))


def test_fractional_milestones_decay_at_the_nearest_step():
    """An independent reference: milestone m (epochs) takes effect from step round(m * steps per epoch)."""
    spe, base = 7, 1.0
    ms = [0.5, 1.25, 2]
    starts = [round(m * spe) for m in ms]  # 4 (3.5 rounds to even), 9 (8.75), 14
    assert [decay_step(m, spe) for m in ms] == starts == [4, 9, 14]
    for s in range(21):
        want = base * 0.1 ** sum(s >= t for t in starts)
        assert math.isclose(lr_at(s, base_lr=base, steps_per_epoch=spe, warmup_epochs=0.0, milestones=ms), want)


def test_classifier_lr_scale_follows_the_class_count():
    """The recipe's 1000 classes keep one LR; fewer classes step the classifier K/1000 as far."""
    assert default_head_lr_scale(1000) == default_head_lr_scale(21841) == 1.0
    assert default_head_lr_scale(10) == pytest.approx(0.01) and default_head_lr_scale(2) == pytest.approx(0.002)
    with pytest.raises(ConfigError, match="classifier"):
        build_config(arch="a", data="d", head_lr_scale=-1.0)


def test_linear_warmup_reaches_base_lr_then_stays():
    spe, base = 10, 0.8
    lrs = [lr_at(s, base_lr=base, steps_per_epoch=spe, warmup_epochs=2.5, milestones=[30, 60, 80])
           for s in range(40)]
    warm = 25
    assert all(math.isclose(lrs[s], base * (s + 1) / warm) for s in range(warm))
    assert all(b > a for a, b in zip(lrs[:warm], lrs[1:warm]))
    assert all(math.isclose(v, base) for v in lrs[warm - 1:])


# ------------------------------------------------------------------------------ checkpoints


def test_golden_v1_checkpoint_loads_weights_only_and_matches_schema():
    jsonschema = pytest.importorskip("jsonschema")
    raw = torch.load(GOLDEN, weights_only=True)  # the safety contract itself
    payload = ckpt.load_checkpoint(GOLDEN)
    assert payload["format_version"] == ckpt.FORMAT_VERSION == 1
    ckpt.validate_json_part(payload, GOLDEN)
    schema = json.loads(ckpt.schema_path().read_text())
    jsonschema.validate(payload["config"], ckpt.sub_schema("config"))
    assert set(raw) == set(payload)
    # The stored weights are one SGD step (lr 0.05, momentum 0.9, wd 1e-4) from a seeded Linear(4, 3):
    # redo that step by hand (softmax gradient written out) and compare.
    torch.manual_seed(0)
    init = torch.nn.Linear(4, 3)
    w0, b0 = init.weight.detach().double(), init.bias.detach().double()
    x = (torch.arange(8, dtype=torch.float64).reshape(2, 4) / 8)
    y = torch.tensor([0, 2])
    p = torch.softmax(x @ w0.T + b0, dim=1)
    p[torch.arange(2), y] -= 1
    gw, gb = p.T @ x / 2, p.sum(0) / 2
    w1 = w0 - 0.05 * (gw + 1e-4 * w0)
    b1 = b0 - 0.05 * (gb + 1e-4 * b0)
    assert torch.allclose(payload["model"]["weight"].double(), w1, atol=1e-6)
    assert torch.allclose(payload["model"]["bias"].double(), b1, atol=1e-6)


def test_golden_weights_only_export_loads_and_cannot_be_resumed(tmp_path):
    """The committed weights-only fixture (what `jdct export` writes of the golden checkpoint):
    weights_only-loadable, valid against the same schema, same weights, refused by --resume."""
    pytest.importorskip("jsonschema")
    raw = torch.load(GOLDEN_WEIGHTS, weights_only=True)
    payload = ckpt.load_checkpoint(GOLDEN_WEIGHTS)
    ckpt.validate_json_part(payload, GOLDEN_WEIGHTS)
    assert raw["weights_only"] is True and ckpt.is_weights_only(payload)
    assert not set(ckpt.RESUME_KEYS) & set(raw)
    full = ckpt.load_checkpoint(GOLDEN)
    assert set(raw) == set(ckpt.EXPORT_KEYS) | {"weights_only"}
    for name, value in full["model"].items():
        assert torch.equal(payload["model"][name], value)
    with pytest.raises(CheckpointError, match="weights-only export"):
        ckpt.check_resumable(payload, GOLDEN_WEIGHTS)
    ckpt.check_resumable(full, GOLDEN)
    # exporting the golden checkpoint with the library gives the fixture's content
    out = ckpt.export_weights(GOLDEN, tmp_path / "exported.pt")
    again = torch.load(tmp_path / "exported.pt", weights_only=True)
    assert set(again) == set(raw) and again["config"] == raw["config"] and out["bytes"] < out["source_bytes"]
    for name, value in raw["model"].items():
        assert torch.equal(again["model"][name], value)


def test_checkpoint_refuses_other_versions_arch_and_non_checkpoints(tmp_path):
    payload = torch.load(GOLDEN, weights_only=True)
    with pytest.raises(CheckpointError, match="architecture 'golden_linear', not 'resnet50_rgb'"):
        ckpt.load_checkpoint(GOLDEN, arch="resnet50_rgb")
    future = dict(payload, format_version=2)
    torch.save(future, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match="format version 2 is not supported") as err:
        ckpt.load_checkpoint(tmp_path / "v2.pt")
    assert str(tmp_path / "v2.pt") in str(err.value)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a jdct checkpoint"):
        ckpt.load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"\xff\xd8\xff\xe0 not a torch file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(SourceNotFoundError):
        ckpt.load_checkpoint(tmp_path / "absent.pt")
    # A pickled class is refused by weights_only loading: never executed.
    torch.save(dict(payload, extra=Path("x")), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as err:
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    # the user is told what is wrong, never torch's advice to load untrusted files unsafely
    assert "pickled objects other than tensors" in str(err.value)
    assert "weights_only=False" not in str(err.value) and "weights_only` set to `False" not in str(err.value)
    with pytest.raises(CheckpointError, match="not a file written by torch.save"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


def test_weights_that_do_not_fit_the_architecture_are_refused():
    payload = ckpt.load_checkpoint(GOLDEN)
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.load_model_state(torch.nn.Linear(5, 3), payload, GOLDEN)
    model = torch.nn.Linear(4, 3)
    ckpt.load_model_state(model, payload, GOLDEN)
    assert torch.equal(model.weight, payload["model"]["weight"])


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    atomic_write_text(target, "old")

    def failing(fh):
        fh.write(b"half a checkp")
        raise KeyboardInterrupt  # Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind
    payload = torch.load(GOLDEN, weights_only=True)
    ckpt.save_checkpoint(target, payload)
    assert torch.equal(ckpt.load_checkpoint(target)["model"]["bias"], payload["model"]["bias"])
    with pytest.raises(CheckpointError, match="format"):
        ckpt.save_checkpoint(target, {"model": {}})


def test_run_config_json_is_a_valid_config_file(tmp_path):
    """RUN_DIR/config.json (a resolved config) can be given back to --config and resolves the same."""
    cfg = resolve(build_config(arch="upsampling_rfa", data="d.zarr", batch_size=128, label_smoothing=0.1), 4)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = resolve(build_config(path), 4)
    assert again == cfg
    assert resolve(build_config(path, batch_size=64), 4).lr == cfg.lr  # the saved LR is now explicit


# ------------------------------------------------------------------------------------ DDP sums


def _interrupt_and_resume_worker(rank, world, init_file, out_file):
    """One rank of a simulated interrupted epoch: partial sums, save (rank 0), resume, finish."""
    import torch.distributed as dist

    from jdct_cli.train.distributed import Dist, all_reduce_sum, global_partial_sums, resumed_partial_sums

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dctx = Dist(rank=rank, world_size=world)
        cpu = torch.device("cpu")
        # before Ctrl-C: rank r has seen 4 samples, loss sum 1+r, r+1 correct
        mine = {"loss": 1.0 + rank, "correct": rank + 1, "count": 4}
        saved = global_partial_sums(mine, cpu, dctx)  # what rank 0 writes into last.pt
        # resumed: every rank reads rank 0's checkpoint, then sees 4 more samples (loss 0.5, 1 correct)
        start = resumed_partial_sums(saved, dctx)
        final = all_reduce_sum([start["loss"] + 0.5, start["correct"] + 1, start["count"] + 4], cpu, dctx)
        if rank == 0:
            Path(out_file).write_text(json.dumps({"saved": saved, "final": final}))
    finally:
        dist.destroy_process_group()


def test_interrupted_ddp_epoch_counts_every_rank_once_after_resume(tmp_path):
    """Rank 0 alone saves a mid-epoch checkpoint: it must hold every rank's partial train sums, and
    after resuming the end-of-epoch all-reduce must count them once (not once per rank)."""
    import torch.multiprocessing as mp

    out = tmp_path / "out.json"
    mp.spawn(_interrupt_and_resume_worker, args=(2, os.fspath(tmp_path / "init"), os.fspath(out)), nprocs=2)
    res = json.loads(out.read_text())
    assert res["saved"] == {"loss": 3.0, "correct": 3, "count": 8}
    # before the resume 8 samples (loss 1 + 2, 1 + 2 correct); after, 4 per rank (loss 0.5, 1 correct)
    assert res["final"] == [3.0 + 2 * 0.5, 3 + 2, 8 + 8]


def test_best_pt_copy_fallback_without_hard_links(tmp_path, monkeypatch):
    """Where the filesystem refuses hard links, best.pt is a byte copy of last.pt, written
    atomically, and the source file is closed (no ResourceWarning for a leaked handle)."""
    import gc
    import warnings

    src = tmp_path / "last.pt"
    src.write_bytes(os.urandom(100_000))

    def no_links(*_args):
        raise OSError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt.atomic_link(src, tmp_path / "best.pt")
        gc.collect()
    assert (tmp_path / "best.pt").read_bytes() == src.read_bytes()
    assert not (tmp_path / "best.pt").samefile(src)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left


def test_ddp_on_cuda_polls_ctrl_c_every_sync_steps_and_at_epoch_ends():
    """The Ctrl-C agreement (a host-blocking all-reduce) runs after every step alone or on CPU,
    but only every SYNC_EVERY steps and at each epoch's last step under DDP on CUDA."""
    from jdct_cli.train.distributed import SYNC_EVERY, poll_stop

    assert all(poll_stop(s, 7, False) for s in range(1, 50))
    polled = [s for s in range(1, 3 * 25 + 1) if poll_stop(s, 25, True)]
    expected = sorted({s for s in range(1, 76) if s % SYNC_EVERY == 0} | {25, 50, 75})
    assert polled == expected


def test_checkpoint_payload_holds_only_cpu_tensors_even_with_state_elsewhere():
    """An optimizer's state lives on its parameters' device; the checkpoint must not (a checkpoint
    written on a GPU loads with plain torch.load where there is none): every tensor at any depth
    goes to the CPU, everything else (and the nesting) is kept. The GPU case itself runs in
    tests/test_cuda.py."""
    import torch

    from jdct_cli.checkpoint import _to_cpu

    state = {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}],
             "nested": [torch.zeros(2), (torch.ones(1),)]}
    moved = _to_cpu(state)
    tensors = [moved["state"][0]["momentum_buffer"], moved["nested"][0], moved["nested"][1][0]]
    assert all(t.device.type == "cpu" for t in tensors)
    assert moved["param_groups"] == state["param_groups"] and isinstance(moved["nested"][1], tuple)
    assert torch.equal(moved["state"][0]["momentum_buffer"], torch.ones(3))
