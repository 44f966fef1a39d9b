"""Bad inputs to the public functions raise ValueError/TypeError naming the problem."""
import pytest
import torch

import minference_compile.ops as ops


def qkv(B=1, Hq=4, Hkv=2, S=70, D=64, dtype=torch.float32):
    return torch.randn(B, Hq, S, D, dtype=dtype), torch.randn(B, Hkv, S, D, dtype=dtype), \
        torch.randn(B, Hkv, S, D, dtype=dtype)


def idx(*shape, hi=70, dtype=torch.int32):
    return torch.randint(0, hi, shape, dtype=dtype)


def vs(q, k, v, vert=None, slash=None):
    B, H = q.shape[:2]
    return ops.vertical_slash_sparse_attention(q, k, v, idx(B, H, 4) if vert is None else vert,
                                               idx(B, H, 3) if slash is None else slash)


q, k, v = qkv()


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.streaming_forward(q[0], k, v, 4, 8), ValueError, "q must have rank 4"),
    (lambda: ops.streaming_forward(q, k[0], v, 4, 8), ValueError, "k must have rank 4"),
    (lambda: ops.streaming_forward(q, k, v.numpy(), 4, 8), TypeError, "v must be a torch.Tensor"),
    (lambda: ops.block_sparse_attention(q, *qkv(B=2)[1:], 2), ValueError, "batch size mismatch"),
    (lambda: ops.block_sparse_attention(q, *qkv(S=69)[1:], 2), ValueError, "sequence length mismatch"),
    (lambda: ops.block_sparse_attention(q, *qkv(D=96)[1:], 2), ValueError, "head_dim mismatch"),
    (lambda: ops.block_sparse_attention(q, k, qkv(Hkv=1)[2], 2), ValueError, "k and v must have the same shape"),
    (lambda: ops.streaming_forward(*qkv(Hq=6, Hkv=4), 4, 8), ValueError, r"q heads \(6\) must be a multiple"),
    (lambda: ops.streaming_forward(q, k.half(), v.half(), 4, 8), TypeError, "dtype mismatch"),
    (lambda: ops.streaming_forward(*qkv(dtype=torch.float64), 4, 8), TypeError, "dtype torch.float64"),
    (lambda: ops.streaming_forward(*qkv(D=256), 4, 8), ValueError, "head_dim 256 is not supported by the Triton"),
    (lambda: vs(*qkv(D=32)), ValueError, "head_dim 32 is not supported"),
    (lambda: vs(q, k, v, vert=idx(1, 4, 4).float()), TypeError, "vertical_topk must be an integer tensor"),
    (lambda: vs(q, k, v, slash=idx(1, 4, 3).float()), TypeError, "slash must be an integer tensor"),
    (lambda: vs(q, k, v, vert=idx(1, 2, 4)), ValueError, r"vertical_topk must have shape \[B, Hq, N\]"),
    (lambda: vs(q, k, v, slash=idx(4, 3)), ValueError, r"slash must have shape \[B, Hq, N\]"),
    (lambda: vs(q, k, v, vert=idx(1, 4, 4) - 80), ValueError, "vertical_topk has negative index"),
    (lambda: vs(q, k, v, slash=idx(1, 4, 3) + 70), ValueError, r"slash has out-of-range index \d+ \(must be < seq_len 70"),
    (lambda: ops.block_sparse_attention(q, k, v, 0), ValueError, "topk must be positive"),
    (lambda: ops.block_sparse_attention(q, k, v, 2.0), TypeError, "topk must be an int"),
    (lambda: ops.streaming_forward(q, k, v, -1, 8), ValueError, "init_num must be >= 0"),
    (lambda: ops.streaming_forward(q, k, v, 4, -1), ValueError, "local_window_num must be positive"),
    (lambda: ops.estimate_vertical_slash(q, k, 0, 10), ValueError, "vertical_size must be positive"),
    (lambda: ops.estimate_vertical_slash(q, k, 10, [1, 2]), ValueError, "slash_size per-head budgets must have 4"),
    (lambda: ops.estimate_vertical_slash(q, k, torch.tensor([1., 2, 3, 4]), 10), TypeError,
     "vertical_size must be an integer tensor"),
    (lambda: ops.estimate_vertical_slash(q, k, 10, 10, last_q=0), ValueError, "last_q must be positive"),
    (lambda: ops.estimate_vertical_slash(q, k, 10, 10, sink_tokens=-1), ValueError, "sink_tokens must be >= 0"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_good_input_passes():
    assert vs(q, k, v).shape == q.shape
    assert ops.estimate_vertical_slash(*qkv(D=256)[:2], [3, 4, 5, 6], 10)[0].shape == (1, 4, 6)  # any D


def prefill(q, k, v, patterns=(1, 2, 3, 0), sizes=(10, 4, 1, 0), min_sparse_len=64):
    n = len(patterns)
    return torch.ops.minference.sparse_prefill(q, k, v, list(patterns), list(sizes[:n]), [30, 16, 0, 0][:n], 0.1,
                                               min_sparse_len, 64)


def test_sparse_prefill_checks():
    with pytest.raises(ValueError, match="one entry per q head"):
        prefill(q, k, v, patterns=(1, 2))
    with pytest.raises(ValueError, match="unknown pattern id"):
        prefill(q, k, v, patterns=(1, 2, 99, 0))
    q2, k2, v2 = qkv(D=256)
    with pytest.raises(ValueError, match="head_dim 256 is not supported by the Triton kernels"):
        prefill(q2, k2, v2)
    assert prefill(q2, k2, v2, min_sparse_len=128).shape == q2.shape  # dense fallback: any head_dim
