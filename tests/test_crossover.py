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
