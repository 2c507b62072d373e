"""The CPU inference form of the PANNs networks (batch norms folded into
the convolutions, weights cast and prepacked once for oneDNN) computes the
same embeddings as the network as loaded."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from services.embedder.models.folding import fold_sequential, folded
from services.embedder.models.panns import accelerate, cpu_has_native_bf16, run
from tests.reference_models import random_network

CPU = torch.device("cpu")


def audio(batch: int = 3, seconds: float = 2.0) -> np.ndarray:
    return np.random.default_rng(5).uniform(-0.4, 0.4, (batch, int(32000 * seconds))).astype(np.float32)


def test_a_folded_convolution_equals_convolution_then_batch_norm() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.eval()
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
        # Across an average pool too, as MobileNetV1 has it.
        layers = nn.Sequential(conv, nn.AvgPool2d(2), bn, nn.ReLU())
        fused = fold_sequential(layers, lambda c: c)
        assert [type(m) for m in fused] == [nn.Conv2d, nn.AvgPool2d, nn.ReLU]
        torch.testing.assert_close(fused(x), layers(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["panns-cnn14", "panns-mobilenetv1"])
def test_fp32_cpu_form_equals_the_loaded_network(model: str) -> None:
    net = random_network(model).eval()
    x = audio()
    with torch.inference_mode():
        expected = net(torch.from_numpy(x))
    fast = accelerate(copy.deepcopy(net), CPU, precision="fp32")
    assert fast.mkldnn == torch.backends.mkldnn.is_available()
    embedding, tags = run(fast, x, CPU, "fp32")
    torch.testing.assert_close(embedding, expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tags, expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["panns-cnn14", "panns-mobilenetv1"])
def test_bf16_cpu_form_keeps_cosine_to_fp32(model: str) -> None:
    net = random_network(model).eval()
    x = audio()
    with torch.inference_mode():
        expected = net(torch.from_numpy(x))[0]
    fast = accelerate(copy.deepcopy(net), CPU, precision="bf16")
    assert fast.body_dtype == torch.bfloat16
    embedding, _ = run(fast, x, CPU, "bf16")
    assert F.cosine_similarity(embedding, expected).min().item() >= 0.999


def test_the_unpacked_form_is_the_same_network() -> None:
    """Where oneDNN is absent (or compiling), the folded convolutions run as
    plain channels-last convolutions."""
    net = random_network("panns-cnn14").eval()
    x = audio(2, 1.0)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x))[0]
    plain = copy.deepcopy(net)
    plain.cpu_form(torch.float32, prepack=False)
    assert not plain.mkldnn
    embedding, _ = run(plain.to(memory_format=torch.channels_last), x, CPU, "fp32")
    torch.testing.assert_close(embedding, expected, rtol=1e-4, atol=1e-4)


def test_auto_precision_follows_the_cpu_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.embedder.models.panns import resolve_precision

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    without = tmp_path / "plain"
    without.write_text("processor : 0\nflags : fpu avx2 avx512f\n")
    assert cpu_has_native_bf16(with_bf16) and not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"


def test_torch_threads_follow_the_cpus_this_process_may_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from services.embedder.threads import cgroup_cpus, configure_torch, usable_cpus

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(v2) == 1.5
    assert usable_cpus(v2) == min(2, len(os.sched_getaffinity(0)))
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpus(v1) is None
    assert cgroup_cpus(tmp_path / "none") is None
    before = torch.get_num_threads()
    try:
        assert configure_torch(1) == 1 and torch.get_num_threads() == 1
        assert configure_torch(0) == usable_cpus()
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
@pytest.mark.parametrize("shape", [(1, 1024, 1, 2), (2, 1024, 4, 2), (3, 1024, 31, 2)])
def test_the_wide_convolution_gives_the_same_result_on_either_path(shape: tuple[int, int, int, int]) -> None:
    """Small inputs take the unfold-and-multiply path, larger ones oneDNN's."""
    from services.embedder.models.panns_frontend import _SmallInputConv

    torch.manual_seed(1)
    conv = nn.Conv2d(1024, 64, 3, padding=1).eval()
    x = torch.randn(*shape)
    wide = _SmallInputConv(conv, torch.float32)
    assert (shape[0] * shape[2] * shape[3] <= wide.SMALL) == (shape != (3, 1024, 31, 2))
    with torch.inference_mode():
        got = wide(x.to_mkldnn()).to_dense()
        torch.testing.assert_close(got, conv(x), rtol=1e-4, atol=1e-4)
