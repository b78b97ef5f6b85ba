"""The sparse-convolution trial of benchmarks/sparsity.py (CPO on pointwise layers): its sparse path
computes the dense convolution, the input normalization folds exactly, and the zero counting hooks
count what they claim, on real JPEG coefficients made at test time.

The trial's decision (not kept: no end-to-end gain of 1.1x) is recorded in benchmarks/RESULTS.md;
these tests keep the measurement honest, so that a rerun on other hardware can be trusted.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from photos import photo_jpeg


@pytest.fixture(scope="module")
def sparsity():
    spec = importlib.util.spec_from_file_location("bench_sparsity", REPO / "benchmarks" / "sparsity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sparsity"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_planes(tmp_path_factory, sparsity):
    """Dequantized coefficients of two real JPEGs (112x96 at qualities 60 and 90), re-encoded at 96x96 quality 75 4:2:0."""
    folder = tmp_path_factory.mktemp("sparse")
    files = [photo_jpeg(folder / "a.jpg", "astronaut", size=(112, 96), quality=60),
             photo_jpeg(folder / "b.jpg", "coffee", size=(112, 96), quality=90)]
    return sparsity.coefficients(files, 75, size=96), files


def test_sparse_pointwise_equals_the_dense_convolution(sparsity, real_planes):
    torch.manual_seed(0)
    samples, _ = real_planes
    y = torch.stack([s[0][0] for s in samples])  # [2, 64, 12, 12], real and sparse
    assert 0.2 < float((y == 0).float().mean()) < 0.95
    for stride in (1, 2):
        conv = nn.Conv2d(64, 40, 1, stride=stride, bias=False)
        with torch.no_grad():
            want = conv(y)
            for sparse in (True, False):
                got = sparsity.SparsePointwise(conv.weight[:, :, 0, 0], None, stride, sparse=sparse)(y)
                assert got.shape == want.shape
                assert torch.allclose(got, want, atol=1e-3 * float(want.abs().max())), (stride, sparse)


def test_folding_the_input_normalization_reads_the_raw_coefficients(sparsity, real_planes):
    """conv(BN(x)) == folded(x): the first pointwise layers can read the sparse coefficients."""
    torch.manual_seed(1)
    samples, _ = real_planes
    x = torch.stack([torch.cat([s[0][0]]) for s in samples])
    bn = nn.BatchNorm2d(64).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-50, 50)
        bn.running_var.uniform_(10, 1000)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
        conv = nn.Conv2d(64, 32, 1, bias=False)
        want = conv(bn(x))
        a, b = sparsity.bn_affine(bn)
        weight, bias = sparsity.fold_affine(conv, a, b)
        got = sparsity.SparsePointwise(weight, bias)(x)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))


def test_zero_fractions_of_inputs_and_activations(sparsity, real_planes):
    samples, files = real_planes
    # the recorded fractions are those of the planes, computed independently
    for (deq, zeros), f in zip(samples, files):
        for plane, z in zip(deq, zeros):
            assert z == pytest.approx(float((plane == 0).float().mean()))
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    x = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    wrapped = Wrap()
    zeros = sparsity.conv_input_zeros(wrapped, [(x,)])
    assert zeros["net.0"] == pytest.approx(6 / 12)
    with torch.no_grad():
        hidden = F.relu(net[0](x))
    assert zeros["net.2"] == pytest.approx(float((hidden == 0).float().mean()))


def test_trial_keeps_the_logits(sparsity, real_planes):
    """The whole trial network (folded first layers, sparse where faster) gives the dense logits."""
    samples, _ = real_planes
    batch = next(sparsity.batches(samples, 2))
    model = sparsity.prepared_network("upsampling", [batch])
    net, rows = sparsity.choose_layers(model, "upsampling", batch, repeats=1)
    assert {r["layer"] for r in rows if r["folded"]} == {"body.res3a.branch2a", "body.res3a.branch1"}
    assert all(r["max_abs_err"] < 1e-3 for r in rows)
    with torch.no_grad():
        a, b = model(*batch), net(*batch)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))
