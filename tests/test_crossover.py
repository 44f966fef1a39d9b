"""Default min_sparse_len ("auto"): per-pattern thresholds and the layer rule."""
import sys

import torch

from minference_compile.config import MInferenceConfig
from minference_compile.ops.crossover import auto_min_sparse_len, pattern_min_len
from minference_compile.ops.library import dense_attention, sparse_prefill


def test_pattern_thresholds_match_measured_crossovers():
    assert pattern_min_len(2, 128, 4096) == 17408      # A-shape: 0.94x at 8K, 1.64x at 16K (H100)
    assert pattern_min_len(3, 100, 0) == 32768         # block-sparse top-100: 0.91x at 16K, 1.57x at 32K
    assert pattern_min_len(1, 1000, 6096) == 131072    # VS default budgets: 0.9x at 64K, 1.52x at 128K
    assert pattern_min_len(1, 100, 800) == 32768       # VS small budgets: 0.75x at 16K, 1.48x at 32K
    assert pattern_min_len(0, 0, 0) == 0


def test_layer_threshold_is_the_largest_of_its_patterns():
    assert auto_min_sparse_len([2, 3, 1, 0], [128, 100, 1000, 0], [4096, 0, 6096, 0], "cuda") == 131072
    assert auto_min_sparse_len([2, 2], [128, 128], [4096, 4096], "cuda") == 17408
    assert auto_min_sparse_len([2, 3], [128, 100], [4096, 0], "cpu") == sys.maxsize


def test_auto_on_cpu_is_dense_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 300, 64), torch.randn(1, 2, 300, 64), torch.randn(1, 2, 300, 64)
    out = sparse_prefill(q, k, v, [1, 2, 3, 1], [10, 4, 1, 10], [20, 8, 0, 20], 0.125, -1, 64)
    torch.testing.assert_close(out, dense_attention(q, k, v, 0.125), atol=0, rtol=0)
    sparse = sparse_prefill(q, k, v, [1, 2, 3, 1], [10, 4, 1, 10], [20, 8, 0, 20], 0.125, 0, 64)
    assert (sparse - out).abs().max() > 1e-3  # the explicit 0 really runs the sparse patterns


def test_default_config_is_auto():
    assert MInferenceConfig().min_sparse_len is None
    assert MInferenceConfig.from_dict({"layers": [], "min_sparse_len": None}).min_sparse_len is None


def test_vertical_slash_on_fa4_tiles_has_its_own_crossover():
    from minference_compile.ops.decide import length_decision
    # (1000, 6096) on FA4 tiles: 40.1 ms with its index vs FA4 dense 52.6 ms at 64K (H200, NOTES row 27)
    assert pattern_min_len(1, 1000, 6096, fa4=True) == 65536
    assert pattern_min_len(1, 100, 800, fa4=True) == 32768
    assert pattern_min_len(2, 128, 4096, fa4=True) == 17408  # the other patterns keep their rule
    layer = ([1, 1], [1000, 1000], [6096, 6096])
    assert auto_min_sparse_len(*layer, "cuda", fa4=True) == 65536
    assert auto_min_sparse_len(*layer, "cpu", fa4=True) == sys.maxsize
    sparse, why = length_decision(*layer, 65536, 65536, -1, "cuda", fa4=True)
    assert sparse, why
    sparse, why = length_decision(*layer, 65536, 65536, -1, "cuda")
    assert not sparse and "131072" in why
    sparse, why = length_decision(*layer, 32768, 32768, -1, "cuda", fa4=True)
    assert not sparse and "65536" in why and "FlashAttention-4" in why


def test_vs_layer_on_fa4_follows_the_routing_rule(monkeypatch):
    from fa4_fake import emulate_fa4

    from minference_compile.ops import fa4
    from minference_compile.patterns import Dense, VerticalSlash
    q, k = torch.randn(1, 4, 256, 128, dtype=torch.bfloat16), torch.randn(1, 2, 256, 128, dtype=torch.bfloat16)
    vs = [VerticalSlash(1000, 6096)] * 4
    assert not fa4.vs_layer_on_fa4(vs, q, k)  # no FA4 on this machine: CPU tensors never run there
    emulate_fa4(monkeypatch)
    assert fa4.vs_layer_on_fa4(vs, q, k)
    assert not fa4.vs_layer_on_fa4(vs[:3] + [Dense()], q, k)  # a head mask: the Triton kernel
    assert not fa4.vs_layer_on_fa4(vs, q, k, qk_dtype="fp8")
    assert not fa4.vs_layer_on_fa4(vs, q[..., :64], k[..., :64])  # D < 128: Triton by default
    monkeypatch.setenv("MINFERENCE_FA4_VS", "0")
    assert not fa4.vs_layer_on_fa4(vs, q, k)
