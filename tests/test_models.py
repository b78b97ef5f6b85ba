"""Model zoo: registry contract, forward/backward of every network, DCT-layer filters against libjpeg.

Every network is built from the registry (never hand-listed), so a newly registered one is tested
too. Forward+backward at 224 runs once per network (the heavy part, about 1 s each on 2 cores);
other sizes run forward only in eval mode.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jdct_cli.errors import ConfigError, JdctError, UnknownModelError
from jdct_cli.models import create_model, get_model_info, list_models, register_model
from jdct_cli.models.cost import example_inputs
from jdct_cli.models.resnet import Bottleneck, SameConv2d

ISSUE_NAMES = [
    "resnet50_rgb", "resnet50_ycbcr", "upsampling", "upsampling_rfa", "deconvolution_rfa", "downsampling",
    "downsampling_no_rfa", "late_concat", "late_concat_rfa", "late_concat_rfa_thinner", "channels_div1_1",
    "channels_div_sqrt2", "channels_div2", "less_id_blocks_2", "less_id_blocks_3", "less_id_blocks_4",
    "less_id_blocks_5", "less_id_blocks_6", "dct_learn", "dct_ortho", "dct_frozen", "dct_frozenx2",
    # issue 16: Torfason et al.'s cResNets on DCT input
    "cresnet39", "cresnet51", "cresnet72",
]


# ----------------------------------------------------------------------------------- registry
def test_registry_holds_every_network_the_issue_names():
    assert sorted(list_models()) == sorted(ISSUE_NAMES)
    for name in list_models():
        info = get_model_info(name)
        assert info.name == name and info.input_kind in ("dct", "rgb", "ycbcr") and info.description


def test_paper_results_are_those_of_table_1():
    # Table 1 of the paper, transcribed independently of the registry.
    table = {"resnet50_rgb": (24.22, 7.35, 208), "resnet50_ycbcr": (24.36, 7.36, 207),
             "upsampling": (25.07, 7.81, 396), "upsampling_rfa": (24.06, 7.14, 266),
             "deconvolution_rfa": (23.94, 6.98, 268), "downsampling": (27.00, 8.98, 451),
             "late_concat": (24.93, 7.62, 401), "late_concat_rfa": (24.08, 7.09, 267),
             "late_concat_rfa_thinner": (24.61, 7.43, 369)}
    for name in list_models():
        info = get_model_info(name)
        got = (info.paper_top1_error, info.paper_top5_error, info.paper_fps)
        assert got == table.get(name, (None, None, None)), name


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as err:
        create_model("resnet51")
    assert isinstance(err.value, JdctError) and isinstance(err.value, KeyError)
    assert "resnet51" in str(err.value) and "late_concat_rfa_thinner" in str(err.value)
    with pytest.raises(UnknownModelError):
        get_model_info("")


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model("upsampling", input_kind="dct", description="again")(lambda num_classes=1000: None)
    assert list_models().count("upsampling") == 1


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("upsampling", num_classes=0)
    with pytest.raises(ConfigError, match="ortho_weight"):
        create_model("upsampling", ortho_weight=1.0)


# --------------------------------------------------------------------------- forward / backward
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a CPU shared with other jobs, a second thread mostly waits at barriers
    (measured: forward+backward of ResNet-50 at 224 is ~2x faster single-threaded under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_224_then_other_sizes(name):
    """Train-mode forward+backward at 224, batch 2; then eval forward at 80x112 pixels (multiples of
    16, not of 32, and not square), called both as model(*inputs) and model(inputs).

    One test per network so that each (25M-parameter) model is built once: this is the slow part.
    """
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    assert model.input_kind == get_model_info(name).input_kind and model.arch == name
    inputs = example_inputs(model.input_kind, 224, batch=2)
    out = model(*inputs)
    assert out.shape == (2, 10) and out.dtype == torch.float32
    loss = F.cross_entropy(out, torch.tensor([3, 7]))
    reg = model.regularization_loss()
    assert (reg is not None) == (name == "dct_ortho")
    if reg is not None:
        assert reg.dim() == 0 and reg.item() > 0
        loss = loss + reg
    loss.backward()
    assert torch.isfinite(loss)
    frozen = 0
    for pname, p in model.named_parameters():
        assert p.requires_grad, pname  # fixed filters are buffers, not frozen Parameters
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for bname, b in model.named_buffers():
        if bname.endswith(".weight"):  # fixed filters (BN keeps running_mean/var/num_batches_tracked)
            frozen += b.numel()
            assert not b.requires_grad and b.grad is None, bname
    assert frozen == (3 * 64 * 64 if name.startswith("dct_frozen") else 0)
    # The first layer learns something: the gradient reaches the input end of the network. Residual
    # branches start at zero (their last BN scale is 0), so at initialization it gets there through
    # the stem or the first projection shortcut, and every branch's zeroed scale gets a gradient (so
    # the branches open from the first step).
    first = next(p for n, p in model.named_parameters() if p.requires_grad and p.dim() == 4 and ".branch2" not in n)
    assert first.grad.abs().sum() > 0
    from jdct_cli.models.resnet import Bottleneck

    for block_name, block in model.named_modules():
        if isinstance(block, Bottleneck):
            assert block.bn2c.weight.grad.abs().sum() > 0, block_name

    model.eval()
    h, w = 80, 112
    if model.input_kind == "dct":
        small = (torch.randn(1, 64, h // 8, w // 8), torch.randn(1, 64, h // 16, w // 16),
                 torch.randn(1, 64, h // 16, w // 16))
    else:
        small = (torch.randn(1, 3, h, w),)
    with torch.no_grad():
        a = model(*small)
        b = model(small)  # the tuple itself is accepted too
    assert a.shape == (1, 10) and torch.isfinite(a).all() and torch.equal(a, b)


def test_wrong_inputs_are_clear_errors():
    dct = create_model("late_concat", num_classes=3).eval()
    y, cb, cr = example_inputs("dct", 64)
    with pytest.raises(ConfigError, match=r"cb, cr \[B, 64, S/16, S/16\]"):
        dct(y, cb[..., :3], cr)
    with pytest.raises(ConfigError, match="takes DCT input"):
        dct(torch.randn(1, 3, 64, 64))
    pix = create_model("resnet50_rgb", num_classes=3).eval()
    with pytest.raises(ConfigError, match="multiple of 16"):
        pix(torch.randn(1, 3, 72, 72))


# ------------------------------------------------------------------------- building blocks
def test_same_padding_even_kernel_pads_after_like_tensorflow():
    """k=2 stride 1 "same": out[i, j] = sum_ab w[a, b] x[i+a, j+b], zero past the last row/column."""
    torch.manual_seed(1)
    conv = SameConv2d(1, 1, 2)
    x = torch.randn(1, 1, 5, 6)
    with torch.no_grad():
        got = conv(x)[0, 0].numpy()
    w = conv.weight[0, 0].detach().numpy()
    xp = np.zeros((6, 7), np.float32)
    xp[:5, :6] = x[0, 0].numpy()
    want = np.array([[sum(w[a, b] * xp[i + a, j + b] for a in range(2) for b in range(2)) for j in range(6)]
                     for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_conv_block_strides_on_the_first_1x1_keras_v1():
    block = Bottleneck(64, (32, 32, 128), kernel=3, stride=2)
    assert block.branch2a.stride == (2, 2) and block.branch2a.kernel_size == (1, 1)
    assert block.branch2b.stride == (1, 1) and block.branch2b.kernel_size == (3, 3)
    assert block.branch1.stride == (2, 2)
    # 55 -> 28 as in the diagrams (res3a: 55x55x256 -> 28x28x512).
    assert block.eval()(torch.randn(1, 64, 55, 55)).shape == (1, 128, 28, 28)


# --------------------------------------------------------------------- DCT-layer networks
def _jpeg_dct_basis_reference():
    """Independent JPEG basis: B[8v+u][y][x] = C(u)C(v)/4 cos((2x+1)u pi/16) cos((2y+1)v pi/16)."""
    out = np.zeros((64, 8, 8))
    for v in range(8):
        for u in range(8):
            cu = 1 / math.sqrt(2) if u == 0 else 1.0
            cv = 1 / math.sqrt(2) if v == 0 else 1.0
            for y in range(8):
                for x in range(8):
                    out[8 * v + u, y, x] = (cu * cv / 4 * math.cos((2 * x + 1) * u * math.pi / 16)
                                            * math.cos((2 * y + 1) * v * math.pi / 16))
    return out


@pytest.mark.parametrize("name", ["dct_frozen", "dct_frozenx2"])
def test_frozen_filters_are_the_jpeg_dct_basis(name):
    model = create_model(name, num_classes=4)
    ref = _jpeg_dct_basis_reference()
    for conv in (model.conv_y, model.conv_cb, model.conv_cr):
        assert not conv.weight.requires_grad
        np.testing.assert_allclose(conv.weight.detach()[:, 0].numpy(), ref, atol=1e-7)
        assert conv.stride == ((8, 8) if name == "dct_frozen" else (4, 4))
    # What a trainer might do (unfreeze everything, then step every parameter with weight decay)
    # leaves them as they are: they are buffers, which neither requires_grad_ nor an optimizer sees.
    model.requires_grad_(True)
    assert not any(n.startswith(("conv_y", "conv_cb", "conv_cr")) for n, _ in model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    np.testing.assert_allclose(model.conv_y.weight.detach()[:, 0].numpy(), ref, atol=1e-7)
    # They still travel with the model (device moves, state dict) under the same keys as before.
    assert model.state_dict()["conv_cb.weight"].shape == (64, 1, 8, 8)


def test_checkpoints_from_frozen_parameters_still_load():
    """Before the filters became buffers, dct_frozen had the module layout of dct_learn (three
    ``nn.Conv2d`` with ``weight`` Parameters, frozen): a state dict of that layout loads strictly,
    and the frozen network then computes exactly what the old one did."""
    old = create_model("dct_learn", num_classes=3)
    with torch.no_grad():
        basis = torch.from_numpy(_jpeg_dct_basis_reference()).float()[:, None]
        for conv in (old.conv_y, old.conv_cb, old.conv_cr):
            conv.weight.copy_(basis)
            conv.weight.requires_grad_(False)
    state = old.state_dict()
    new = create_model("dct_frozen", num_classes=3)
    assert {k: tuple(v.shape) for k, v in new.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    new.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(new.eval()(x), old.eval()(x))


def test_residual_branches_start_at_zero():
    """Goyal et al.'s initialisation: each bottleneck's last BN scale is 0 (every other BN scale 1),
    so at initialisation an identity block passes its (non-negative) input through unchanged."""
    from jdct_cli.models.resnet import Bottleneck

    model = create_model("late_concat_rfa_thinner", num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 17  # Y path 8, CbCr path 1, joint body 8
    zeroed = {id(b.bn2c) for b in blocks}
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            expected = 0.0 if id(module) in zeroed else 1.0
            assert torch.all(module.weight == expected) and torch.all(module.bias == 0)
    identity = model.body.res4b
    assert identity.branch1 is None
    x = torch.relu(torch.randn(4, 1024, 4, 4))
    identity.train()
    assert torch.equal(identity(x), x)


def test_a_misspelled_name_gets_a_suggestion():
    with pytest.raises(UnknownModelError) as err:
        create_model("late_concat_rfa_thiner")
    assert "did you mean 'late_concat_rfa_thinner'" in str(err.value)
    assert "known models: resnet50_rgb" in str(err.value)  # the whole list is still there
    with pytest.raises(UnknownModelError) as err:
        get_model_info("no_such_net")
    assert "did you mean" not in str(err.value)


def test_frozen_dct_layer_reproduces_libjpeg_coefficients(tmp_path):
    """On a real grayscale JPEG (scikit-image's "camera" photograph, encoded by libjpeg through
    Pillow), the frozen 8x8/8 layer applied to libjpeg's decoded pixels (level-shifted by 128) gives
    back the file's dequantized coefficients, up to the pixel rounding and clamping of decoding:
    round(out / q) equals the stored coefficient almost everywhere."""
    pytest.importorskip("jdct_cli._decoder", reason="C extension not built")
    import skimage.data
    from PIL import Image

    from jdct_cli._decoder import read_coefficients

    path = tmp_path / "camera_gray.jpg"
    Image.fromarray(skimage.data.camera()).resize((128, 120), Image.Resampling.BILINEAR).save(path, quality=85)
    data = path.read_bytes()
    (coefs,), quant, _warnings = read_coefficients(data)
    with Image.open(path) as im:
        assert im.mode == "L"
        pixels = np.asarray(im, dtype=np.float32)
    h, w = (pixels.shape[0] // 8) * 8, (pixels.shape[1] // 8) * 8
    model = create_model("dct_frozen", num_classes=2)
    with torch.no_grad():
        out = model.conv_y(torch.from_numpy(pixels[:h, :w] - 128)[None, None])[0].numpy()  # [64, H/8, W/8]
    stored = coefs[: h // 8, : w // 8].astype(np.float64).transpose(2, 0, 1)  # [64, H/8, W/8], 8v+u
    q = quant[0].astype(np.float64)[:, None, None]
    requant = np.round(out / q)
    assert np.mean(requant == stored) > 0.99
    # And the magnitudes agree: the error is the DCT of the decoder's rounding, well below 1 step.
    assert np.median(np.abs(out - stored * q)) < 1.0


def test_ortho_penalty_is_zero_exactly_for_orthonormal_filters():
    model = create_model("dct_ortho", num_classes=3, ortho_weight=0.5)
    random_penalty = model.regularization_loss()
    assert random_penalty.item() > 1.0
    random_penalty.backward()
    assert model.conv_y.weight.grad.abs().sum() > 0  # the penalty trains the filters
    basis = torch.from_numpy(_jpeg_dct_basis_reference()).float()[:, None]
    with torch.no_grad():
        for conv in (model.conv_y, model.conv_cb, model.conv_cr):
            conv.weight.copy_(basis)
    assert model.regularization_loss().item() < 1e-9
    # Any orthogonal matrix is as good: a random rotation of the basis also gives zero.
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    with torch.no_grad():
        model.conv_cb.weight.copy_((q @ basis.double().reshape(64, 64)).reshape(64, 1, 8, 8).float())
    assert model.regularization_loss().item() < 1e-9
    # A scaled basis is not orthonormal: cb doubled gives W W^T = 4 I, penalty 0.5 * 64 * (4 - 1)^2.
    with torch.no_grad():
        model.conv_cb.weight.copy_(2 * basis)
    assert model.regularization_loss().item() == pytest.approx(0.5 * 64 * 9, rel=1e-4)


def test_dct_network_learns_from_real_coefficients(real_tree):
    """The paper's best DCT network memorises 6 real photographs' crops (3 classes) from libjpeg's
    dequantized coefficients as they come (DC up to ~1000: the input BatchNorm is the only
    normalization), within a few SGD steps: the whole path from coefficients to loss trains."""
    pytest.importorskip("jdct_cli._decoder", reason="C extension not built")
    from jdct_cli import jpeg
    from jdct_cli._decoder import read_coefficients

    root = real_tree / "train"
    classes = sorted(p.name for p in root.iterdir())[:3]
    ys, cbs, crs, labels = [], [], [], []
    for label, cls in enumerate(classes):
        # two colour 4:2:0 files of at least 64x64 pixels per class
        usable = [p for p in sorted((root / cls).iterdir())
                  if (h := jpeg.read_header(p.read_bytes()))["width"] >= 64 and h["height"] >= 64
                  and h["num_components"] == 3 and [(c["h"], c["v"]) for c in h["components"]] == [(2, 2), (1, 1), (1, 1)]]
        assert len(usable) >= 2, cls
        for path in usable[:2]:
            (y, cb, cr), quant, _ = read_coefficients(path.read_bytes())
            # The top-left 64x64 pixels: Y blocks 8x8, chroma 4x4 (4:2:0); natural order, dequantized.
            deq = [np.asarray(c[:n, :n], np.float32) * quant[i].astype(np.float32)
                   for i, (c, n) in enumerate(((y, 8), (cb, 4), (cr, 4)))]
            for store, d in zip((ys, cbs, crs), deq):
                store.append(torch.from_numpy(d).permute(2, 0, 1))  # [64, H/8, W/8]
            labels.append(label)
    inputs = tuple(torch.stack(t) for t in (ys, cbs, crs))
    target = torch.tensor(labels)
    assert inputs[0].shape == (6, 64, 8, 8) and inputs[1].shape == (6, 64, 4, 4)
    torch.manual_seed(0)
    model = create_model("late_concat_rfa_thinner", num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(model(*inputs), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses
    with torch.no_grad():  # batch statistics: 8 steps are too few for BN's running averages
        assert (model(*inputs).argmax(1) == target).all()


# ------------------------------------------------------------------------------- cResNets
def test_cresnet39_is_the_upsampling_network():
    """cResNet-39 (ResNet-50 minus its root block and conv2_x, conv3_x at stride 1) on the
    UpSampling input is Gueguen et al.'s UpSampling: same modules, same weights, same logits."""
    torch.manual_seed(0)
    ups = create_model("upsampling", num_classes=7).eval()
    c39 = create_model("cresnet39", num_classes=7).eval()
    assert {k: v.shape for k, v in ups.state_dict().items()} == {k: v.shape for k, v in c39.state_dict().items()}
    c39.load_state_dict(ups.state_dict(), strict=True)
    inputs = example_inputs("dct", 64, batch=2)
    with torch.no_grad():
        assert torch.equal(ups(*inputs), c39(*inputs))


@pytest.mark.parametrize("name, conv4", [("cresnet39", 6), ("cresnet51", 10), ("cresnet72", 17)])
def test_cresnet_depth_counts_the_main_path_convolutions(name, conv4):
    """cResNet-k: k = the convolutions on the main path (3 per bottleneck block), blocks
    4 (conv3_x, 28x28), n4 (conv4_x, 14x14), 3 (conv5_x, 7x7) at 224 pixels."""
    from jdct_cli.models.resnet import Bottleneck

    with torch.device("meta"):
        model = create_model(name)
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, Bottleneck)}
    stages = [sum(n.startswith(f"body.res{s}") for n in blocks) for s in (3, 4, 5)]
    assert stages == [4, conv4, 3]
    main_path = sum(1 for b in blocks.values() for c in (b.branch2a, b.branch2b, b.branch2c))
    assert main_path == int(name.removeprefix("cresnet"))
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())  # no root block
    assert blocks["body.res3a"].branch2a.stride == (1, 1)  # conv3_x does not downsample 28x28
