"""Model zoo against the authors' diagrams and the cost table of ``architectures.md``.

The expected shapes below were read off the Keras diagrams (``shared/reference/diagrams``, node
text ``in-shape -> out-shape``), converted to PyTorch's (C, H, W), at 224x224 pixels. Both checks
run on PyTorch's ``meta`` device: shapes propagate, nothing is computed, so the whole zoo takes
seconds.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from jdct_cli.models import create_model, get_model_info, list_models, model_cost
from jdct_cli.models.cost import count_cost, example_inputs

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "architectures.md"
#: The cost section of REFERENCE, committed (the reference itself lives outside the repository).
COST_SECTION = Path(__file__).resolve().parent / "data" / "architectures-cost.md"

# Diagram node -> (C, H, W). Block names are the diagrams' (resNx = the block ending at add_k).
_RFA_BODY = {"body.res2a": (1024, 28, 28), "body.res2a.branch1": (1024, 28, 28), "body.res2b": (1024, 28, 28),
             "body.res3a": (512, 28, 28), "body.res4a": (1024, 14, 14), "body.res5a": (2048, 7, 7)}
_BASELINE_BODY = {"body.res2a": (256, 55, 55), "body.res3a": (512, 28, 28), "body.res4a": (1024, 14, 14),
                  "body.res5a": (2048, 7, 7)}
_LATE_TAIL = {"concatenate_1": (128, 14, 14), "concatenate_2": (1024, 14, 14), "body.res4b": (1024, 14, 14),
              "body.res5a": (2048, 7, 7)}
EXPECTED = {
    # Upsampling diagram: lambda_4/5 (14,14,64)->(28,28,64); concatenate_1 -> (28,28,192); res3a 28x28x512.
    "upsampling": {"concatenate_1": (192, 28, 28), "body.res3a": (512, 28, 28), "body.res3a.branch1": (512, 28, 28),
                   "body.res4a": (1024, 14, 14), "body.res5a": (2048, 7, 7)},
    # UpSampling-RFA: res2a_branch1 (28,28,192)->(28,28,1024).
    "upsampling_rfa": {"concatenate_1": (192, 28, 28), **_RFA_BODY},
    # Deconvolution-RFA: conv_cb_upsample 2/2 (14,14,64)->(28,28,64).
    "deconvolution_rfa": {"conv_cb_upsample": (64, 28, 28), "conv_cr_upsample": (64, 28, 28),
                          "concatenate_1": (192, 28, 28), **_RFA_BODY},
    # DownSampling: conv_y 2/2 (28,28,64)->(14,14,256); concatenate_1 -> (14,14,384); res2a (14,14,1024).
    "downsampling": {"conv_y": (256, 14, 14), "concatenate_1": (384, 14, 14), "body.res2a": (1024, 14, 14),
                     "body.res2b": (1024, 14, 14), "body.res3a": (512, 14, 14), "body.res4a": (1024, 14, 14),
                     "body.res5a": (2048, 7, 7)},
    # Fig. S1 text variant (no RFA stage): the same transform, the diagram's stages after it.
    "downsampling_no_rfa": {"conv_y": (256, 14, 14), "concatenate_1": (384, 14, 14), "body.res3a": (512, 14, 14),
                            "body.res4a": (1024, 14, 14), "body.res5a": (2048, 7, 7)},
    # Late-Concat: res3a (28,28,64)->(28,28,512); res4a 1/2 -> (14,14,512); res4x (14,14,128)->(14,14,512).
    "late_concat": {"y_path.res3a": (512, 28, 28), "y_path.res4a": (512, 14, 14),
                    "cbcr_path.res4x": (512, 14, 14), **_LATE_TAIL},
    # Late-Concat-RFA: res2a_branch1 (28,28,64)->(28,28,1024); res4x as Late-Concat.
    "late_concat_rfa": {"y_path.res2a": (1024, 28, 28), "y_path.res3a": (512, 28, 28),
                        "y_path.res4a": (512, 14, 14), "cbcr_path.res4x": (512, 14, 14), **_LATE_TAIL},
    # Late-Concat-RFA-Thinner: res2a (28,28,384), res3a (28,28,384), res4a (14,14,768), res4x (14,14,256).
    "late_concat_rfa_thinner": {"y_path.res2a": (384, 28, 28), "y_path.res3a": (384, 28, 28),
                                "y_path.res4a": (768, 14, 14), "cbcr_path.res4x": (256, 14, 14), **_LATE_TAIL},
    # DCT-Learn/Ortho/Frozen: conv_y 8/8 (224,224,1)->(28,28,64); conv_cb (112,112,1)->(14,14,64).
    **{name: {"conv_y": (64, 28, 28), "conv_cb": (64, 14, 14), "conv_cr": (64, 14, 14),
              "concatenate_1": (192, 28, 28), **_RFA_BODY} for name in ("dct_learn", "dct_ortho", "dct_frozen")},
    # DCT-Frozenx2: conv_y 8/4 (224,224,1)->(55,55,64); concatenate_1 (55,55,192); res2a (55,55,256).
    "dct_frozenx2": {"conv_y": (64, 55, 55), "conv_cb": (64, 55, 55), "concatenate_1": (192, 55, 55),
                     **_BASELINE_BODY},
    # Baseline: conv1 (224,224,3)->(112,112,64); max_pooling2d_1 -> (55,55,64).
    "resnet50_rgb": {"conv1": (64, 112, 112), "max_pooling2d_1": (64, 55, 55), **_BASELINE_BODY},
    # Channels-DivSqrt2: res2a_branch2a -> (55,55,45), res2a -> 181; Div1.1: res5a (7,7,1861), res4 930.
    "channels_div_sqrt2": {"conv1": (64, 112, 112), "body.res2a.branch2a": (45, 55, 55), "body.res2a": (181, 55, 55)},
    "channels_div1_1": {"body.res4a": (930, 14, 14), "body.res5a.branch2a": (465, 7, 7), "body.res5a": (1861, 7, 7)},
    # LessIdBlocks-3 and -5: max_pooling2d_1 (55,55,64) -> res3a 1/2 -> (28,28,512); -5 keeps res3a, res3d.
    "less_id_blocks_3": {"max_pooling2d_1": (64, 55, 55), "body.res3a": (512, 28, 28), "body.res3b": (512, 28, 28)},
    "less_id_blocks_5": {"body.res3a": (512, 28, 28), "body.res3d": (512, 28, 28), "body.res4a": (1024, 14, 14)},
    # cResNets (Torfason et al. 2018, Table 1 read as conv3_x/conv4_x/conv5_x = 4/n/3 blocks at
    # 28/14/7 pixels) on the UpSampling input: the last conv4_x block is res4f, res4j, res4q.
    **{name: {"concatenate_1": (192, 28, 28), "body.res3a": (512, 28, 28), "body.res3d": (512, 28, 28),
              "body.res4a": (1024, 14, 14), f"body.res4{last}": (1024, 14, 14), "body.res5a": (2048, 7, 7),
              "body.res5c": (2048, 7, 7)}
       for name, last in (("cresnet39", "f"), ("cresnet51", "j"), ("cresnet72", "q"))},
}


def _shapes(name: str, size: int = 224) -> dict[str, tuple[int, ...]]:
    """Output (C, H, W) of every named module of network ``name`` at ``size`` pixels, via hooks on meta."""
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
        inputs = example_inputs(model.input_kind, size, 1, device="meta")
    model.eval()
    seen = {}
    handles = [module.register_forward_hook(lambda m, a, out, n=n: seen.__setitem__(n, tuple(out.shape[1:])))
               for n, module in model.named_modules() if n]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return seen


def test_every_dct_network_has_a_diagram_table():
    dct = [n for n in list_models() if get_model_info(n).input_kind == "dct"]
    paper = [n for n in dct if not n.startswith("cresnet")]
    assert len(paper) == 8  # the paper's seven plus DownSampling without its RFA stage
    assert sorted(set(dct) - set(paper)) == ["cresnet39", "cresnet51", "cresnet72"]
    assert set(dct) <= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_match_the_diagrams(name):
    got = _shapes(name)
    for node, shape in EXPECTED[name].items():
        assert node in got, f"{name}: no module {node}; has {sorted(k for k in got if '.' not in k)}"
        assert got[node] == shape, f"{name}.{node}: {got[node]} != diagram {shape}"


def test_first_block_of_every_stage_is_covered():
    """Every ConvBlock (a block with a projection shortcut) of the DCT networks is in the table."""
    from jdct_cli.models.resnet import Bottleneck

    for name in [n for n in list_models() if get_model_info(n).input_kind == "dct"]:
        with torch.device("meta"):
            model = create_model(name)
        conv_blocks = {n for n, m in model.named_modules() if isinstance(m, Bottleneck) and m.branch1 is not None}
        assert conv_blocks <= set(EXPECTED[name]), (name, conv_blocks - set(EXPECTED[name]))


# ------------------------------------------------------------------------------------- cost
# architectures.md "Cost, counted from these specs": GMAC at 224 and params (millions).
COST_TABLE = {
    "resnet50_rgb": (3.83, 25.6), "upsampling": (3.04, 25.3), "upsampling_rfa": (5.40, 28.3),
    "deconvolution_rfa": (5.40, 28.3), "downsampling": (3.00, 28.6), "late_concat": (2.96, 25.1),
    "late_concat_rfa": (5.25, 28.1), "late_concat_rfa_thinner": (2.89, 24.7), "dct_learn": (5.40, 28.3),
    "dct_ortho": (5.40, 28.3), "dct_frozen": (5.40, 28.3), "dct_frozenx2": (3.88, 25.6),
}
_ROW_NAMES = {"ResNet-50 (Keras, 55x55 stage 2)": ["resnet50_rgb"], "UpSampling": ["upsampling"],
              "UpSampling-RFA": ["upsampling_rfa"], "Deconvolution-RFA": ["deconvolution_rfa"],
              "DownSampling (diagram, with RFA stage)": ["downsampling"], "Late-Concat": ["late_concat"],
              "Late-Concat-RFA": ["late_concat_rfa"], "Late-Concat-RFA-Thinner": ["late_concat_rfa_thinner"],
              "DCT-Learn/Ortho/Frozen": ["dct_learn", "dct_ortho", "dct_frozen"], "DCT-Frozenx2": ["dct_frozenx2"]}


def _cost_section() -> str:
    text = COST_SECTION.read_text()
    return text[text.index("## Cost"):]


def test_cost_table_transcription_matches_architectures_md():
    """COST_TABLE against the committed copy of the reference's cost section (and, where the
    reference itself is at hand in ../shared, the copy against it)."""
    rows = re.findall(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) M \|$", _cost_section(), flags=re.M)
    assert len(rows) == len(_ROW_NAMES)
    for label, gmac, params in rows:
        for name in _ROW_NAMES[label]:
            assert COST_TABLE[name] == (float(gmac), float(params)), label
    if REFERENCE.is_file():
        text = REFERENCE.read_text()
        assert _cost_section() == text[text.index("## Cost"):text.index("## Results")].rstrip() + "\n"


@pytest.mark.parametrize("name", sorted(COST_TABLE))
def test_params_and_gmacs_within_1_percent_of_the_table(name):
    gmac, mparams = COST_TABLE[name]
    cost = model_cost(name, 224)
    assert cost.gmacs == pytest.approx(gmac, rel=0.01)
    assert cost.params / 1e6 == pytest.approx(mparams, rel=0.01)


def test_cresnets_match_the_compute_torfason_et_al_matched():
    """cResNet-51 and -72 were sized to the compute of ResNet-50 and ResNet-71 (ResNet-50 with 13
    conv4_x blocks): within 3 % here, counted by the same hooks; cResNet-39 is ResNet-50 without
    its root block and conv2_x, about 0.8 GMACs less."""
    from jdct_cli.models.resnet import resnet_stage
    from jdct_cli.models.zoo import PixelResNet, _baseline_stages

    stages = _baseline_stages()
    stages[2] = resnet_stage("res4", 4, 2, blocks=13)
    with torch.device("meta"):
        resnet71 = PixelResNet(stages, 1000, "rgb").eval()
        macs71 = count_cost(resnet71, example_inputs("rgb", 224, 1, device="meta"))
    resnet50 = model_cost("resnet50_rgb").macs
    assert model_cost("cresnet51").macs == pytest.approx(resnet50, rel=0.03)
    assert model_cost("cresnet72").macs == pytest.approx(macs71, rel=0.03)
    assert 0.7e9 < resnet50 - model_cost("cresnet39").macs < 0.9e9
    assert model_cost("cresnet39").macs == model_cost("upsampling").macs


def test_mac_hooks_agree_with_a_hand_count():
    """A tiny network counted by hand: conv, transposed conv and linear, per image."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ConvTranspose2d(8, 4, 2, stride=2),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 10))
    x = torch.randn(2, 3, 8, 8)
    want = 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 4 * 4 + 4 * 16 * 16 * 10
    assert count_cost(net, (x,)) == want


def test_cost_scales_with_the_input_area():
    """Convolution MACs grow with the pixel count (the FC head does not): 448 vs 224 is ~4x."""
    small, big = model_cost("upsampling_rfa", 224), model_cost("upsampling_rfa", 448)
    fc = 2048 * 1000
    assert (big.macs - fc) == 4 * (small.macs - fc)
    assert big.params == small.params


# ------------------------------------------------------------------------- receptive fields
def _receptive_fields(blocks, rf: int, jump: int) -> dict[str, tuple[int, int]]:
    """(receptive field, cumulative stride) in pixels after each block of ``blocks``, walking the
    main path: the 1x1 branch2a carries the stride, branch2b's kxk widens the field by (k-1) jumps."""
    out = {}
    for name, block in blocks.named_children():
        jump *= block.branch2a.stride[0]
        rf += (block.branch2b.kernel_size[0] - 1) * jump
        out[name] = (rf, jump)
    return out


def test_receptive_fields_grow_like_the_diagrams_say():
    """The diagrams' third column, "RF / cumulative stride": architectures.md gives the stage ends
    32/8, 96/8, 288/16, 480/32 for the RFA networks vs 35/4, 99/8, 291/16, 483/32 for ResNet-50;
    the other values are nodes read off the crops (e.g. DownSampling add_3 64/16, res4b_branch2b
    256/16; Late-Concat res3d_branch2c 72/8, res4a_branch2b 104/16; Thinner res2b_branch2b 16/8,
    res3d_branch2b 96/8; Late-Concat-RFA, whose Y path has the same kernels, res4b_branch2b 160/16)."""
    with torch.device("meta"):
        base, rfa = create_model("resnet50_rgb"), create_model("upsampling_rfa")
        down, late = create_model("downsampling"), create_model("late_concat")
        thin = create_model("late_concat_rfa_thinner")
    # ResNet-50: conv1 7/2 then max pool 3/2 -> 11/4 (diagram: max_pooling2d_1 11/4).
    got = _receptive_fields(base.body, 11, 4)
    assert [got[b] for b in ("res2c", "res3d", "res4f", "res5c")] == [(35, 4), (99, 8), (291, 16), (483, 32)]
    # DCT input: one 8x8 block, stride 8.
    got = _receptive_fields(rfa.body, 8, 8)
    assert [got[b] for b in ("res2a", "res2b", "res2c", "res3d", "res4f", "res5c")] == [
        (8, 8), (16, 8), (32, 8), (96, 8), (288, 16), (480, 32)]
    # DownSampling: conv_y 2/2 on Y -> 16/16 (diagram: conv_y 16/16).
    got = _receptive_fields(down.body, 16, 16)
    assert got["res2c"] == (64, 16) and got["res3a"] == (96, 16) and got["res4b"] == (256, 16)
    # Late-Concat: the Y path, then the joint body continues from its 14x14 output.
    y = _receptive_fields(late.y_path, 8, 8)
    assert y["res3d"] == (72, 8) and y["res4a"] == (104, 16)
    y = _receptive_fields(thin.y_path, 8, 8)
    assert y["res2b"] == (16, 8) and y["res3d"] == (96, 8) and y["res4a"] == (128, 16)
    assert _receptive_fields(thin.body, *y["res4a"])["res4b"] == (160, 16)
