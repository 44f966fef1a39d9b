"""Query offset (chunked pre-fill) in the CPU paths, the estimate and minference::sparse_prefill(_masked):
q [B, Hq, Sq, D] holds the last Sq of S positions. Compared with naive.py's references of the same semantics;
tolerances as in test_ops_cpu.py (fp32 1e-5, half 2e-2)."""
import pytest
import torch

import minference_compile.ops as ops
import minference_compile.ops.padded  # noqa: F401  (registers sparse_prefill_masked)
from minference_compile.ops.layout import layer_out_strides
from minference_compile.ops import cpu
from minference_compile.ops.crossover import MIN_CHUNK_ROWS, effective_len, runs_sparse
from minference_compile.triton_kernels import naive

from test_ops_cpu import TOL, bottom_right_ref, check_topk, close, poisoned, qkv, rand_index

_mp = torch.ops.minference

# (Sq, S, Hq, Hkv, D, dtype): Sq in {1, 63, 65, 200, 256}, offsets aligned to 64 and not, GQA, D 64/96/128
CASES = [
    (1, 65, 4, 4, 64, torch.float32),
    (63, 127, 4, 1, 96, torch.float32),
    (65, 165, 7, 1, 128, torch.float32),
    (200, 300, 4, 2, 64, torch.float32),
    (256, 1000, 4, 1, 64, torch.float32),
    (200, 264, 7, 1, 96, torch.bfloat16),
    (63, 300, 2, 2, 128, torch.float16),
]


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D,dtype", CASES)
def test_cpu_paths_with_offset(Sq, S, Hq, Hkv, D, dtype):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, q_len=Sq)
    sc = D ** -0.5
    vert, slash = rand_index(2, Hq, 12, S, 1), rand_index(2, Hq, 7, S, 2)
    slash[..., 0] = 0
    close(cpu.vertical_slash_attention(q, k, v, vert, slash, sc, out=poisoned(q)),
          naive.vertical_slash_ref(q, k, v, vert, slash, sc), dtype)
    nqb, nkb = -(-Sq // 64), -(-S // 64)
    bi = rand_index(2, Hq, nqb * 3, nkb, 3).view(2, Hq, nqb, 3)
    close(cpu.block_sparse_attention(q, k, v, bi, sc, out=poisoned(q)), naive.block_sparse_ref(q, k, v, bi, sc), dtype)
    init = torch.tensor([0, 4, 30, 1, 2, 64, 7])[:Hq]
    local = torch.tensor([1, 64, 100, 3, 200, 5, 9])[:Hq]
    close(cpu.streaming_attention(q, k, v, init, local, sc, out=poisoned(q)),
          naive.streaming_ref(q, k, v, init, local, sc), dtype)
    hm = torch.arange(Hq) % 2 == 0
    out = cpu.causal_attention(q, k, v, sc, head_mask=hm, out=poisoned(q))
    close(out[:, hm], naive.dense_causal_ref(q, k, v, sc)[:, hm], dtype)
    assert out[:, ~hm].isnan().all()


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D,dtype", CASES[:5])
def test_public_functions_with_offset(Sq, S, Hq, Hkv, D, dtype):
    q, k, v = qkv(S, Hq, Hkv, D, dtype, q_len=Sq)
    vert, slash = ops.estimate_vertical_slash(q, k, 20, 10)
    assert vert.shape == (2, Hq, 20) and slash.shape == (2, Hq, 10)
    close(ops.vertical_slash_sparse_attention(q, k, v, vert, slash), naive.vertical_slash_ref(q, k, v, vert, slash),
          dtype)
    close(ops.streaming_forward(q, k, v, 4, 64), naive.streaming_ref(q, k, v, 4, 64), dtype)
    idx = naive.block_sparse_index_ref(q, k, 2)
    close(ops.block_sparse_attention(q, k, v, 2), naive.block_sparse_ref(q, k, v, idx), dtype)
    with pytest.raises(ValueError, match="q_len <= kv_len"):
        ops.streaming_forward(*qkv(S, Hq, Hkv, D, dtype, q_len=S + 1), 4, 64)


def estimate_scores_offset_ref(q, k, last_q):
    """Scores of the last min(last_q, Sq) queries (positions S - L + r) against all S keys, by loops."""
    B, H, Sq, D = q.shape
    S = k.shape[2]
    L = min(last_q, Sq)
    kk = k.float().repeat_interleave(H // k.shape[1], 1)
    s = q[:, :, Sq - L:].float() @ kk.transpose(-1, -2) / D ** 0.5
    for r in range(L):
        s[:, :, r, S - L + r + 1:] = float("-inf")
    p = s.softmax(-1)
    slash = torch.zeros(B, H, S)
    for r in range(L):
        for j in range(S - L + r + 1):
            slash[:, :, S - L + r - j] += p[:, :, r, j]
    return p.sum(2), slash


@pytest.mark.parametrize("Sq,S,last_q", [(100, 300, 64), (30, 200, 64), (65, 130, 20)])
def test_estimate_with_offset(Sq, S, last_q):
    q, k, _ = qkv(S, 4, 2, 64, torch.float32, q_len=Sq)
    V, NS, sink, local = 40, 25, 6, 10
    vert, slash = ops.estimate_vertical_slash(q, k, V, NS, last_q=last_q, sink_tokens=sink, local_window=local)
    vref, sref = estimate_scores_offset_ref(q, k, last_q)
    for b in range(2):
        for h in range(4):
            check_topk(vert[b, h], vref[b, h], sink, V)
            check_topk(slash[b, h], sref[b, h], local, NS)
    # the chunk's last queries are the unchunked prompt's last queries: the same sets
    whole = torch.cat([torch.randn(2, 4, S - Sq, 64), q], 2)
    full = ops.estimate_vertical_slash(whole, k, V, NS, last_q=min(last_q, Sq), sink_tokens=sink, local_window=local)
    assert torch.equal(full[0].sort(-1).values, vert.sort(-1).values)
    assert torch.equal(full[1].sort(-1).values, slash.sort(-1).values)


def test_runs_sparse_rule():
    assert effective_len(100, 100) == 100 and effective_len(64, 1000) == 1936
    assert runs_sparse(100, 100, 100, 0) and not runs_sparse(99, 99, 100, 0)  # explicit: the chunk's q_len
    assert runs_sparse(128, 1000, 100, 0) and not runs_sparse(64, 1000, 100, 0)
    assert not runs_sparse(MIN_CHUNK_ROWS - 1, 1000, 0, 0) and runs_sparse(MIN_CHUNK_ROWS, 1000, 0, 0)  # decode
    assert runs_sparse(10, 10, 0, 0)  # an unchunked short prompt follows min_sparse_len alone
    assert not runs_sparse(101, 100, 0, 0)
    # auto: the chunk's effective length against the layer's crossover
    assert runs_sparse(4096, 65536, -1, 100_000) and not runs_sparse(4096, 32768, -1, 100_000)


def _layer(Hq):
    pats = [0, 1, 2, 3, 1, 2, 3, 0][:Hq]
    vs = [0, 40, 4, 2, 60, 1, 3, 0][:Hq]
    ss = [0, 130, 64, 0, 70, 100, 0, 0][:Hq]
    return pats, vs, ss


@pytest.mark.parametrize("Sq,S", [(64, 300), (100, 300), (200, 264), (256, 320)])
def test_sparse_prefill_chunk_is_sparse(Sq, S):
    q, k, v = qkv(S, 8, 2, 64, torch.float32, q_len=Sq)
    pats, vs, ss = _layer(8)
    sc = 0.125
    out = _mp.sparse_prefill(q, k, v, pats, vs, ss, sc, 0, 64)
    vert, slash = ops.estimate_vertical_slash(q, k, [x if p == 1 else 1 for p, x in zip(pats, vs)],
                                              [x if p == 1 else 1 for p, x in zip(pats, ss)])
    vert = torch.where(torch.tensor([p == 1 for p in pats])[None, :, None], vert, -1)
    slash = torch.where(torch.tensor([p == 1 for p in pats])[None, :, None], slash, -1)
    bi = naive.block_sparse_index_ref(q, k, torch.tensor([x if p == 3 else 1 for p, x in zip(pats, vs)]))
    refs = {0: naive.dense_causal_ref(q, k, v, sc),
            1: naive.vertical_slash_ref(q, k, v, vert, slash, sc),
            2: naive.streaming_ref(q, k, v, torch.tensor(vs), torch.tensor(ss), sc),
            3: naive.block_sparse_ref(q, k, v, bi, sc)}
    for h, p in enumerate(pats):
        close(out[:, h], refs[p][:, h], torch.float32)
    assert not torch.allclose(refs[2][:, 2], refs[0][:, 2], atol=1e-3)  # the A-shape heads are really sparse here


@pytest.mark.parametrize("Sq,S,msl", [(1, 300, 0), (63, 300, 0), (100, 300, 101), (100, 300, -1)])
def test_sparse_prefill_chunk_dense_when(Sq, S, msl):
    """decode / short tails (< 64 rows), q_len below an explicit min_sparse_len, auto on CPU: dense."""
    q, k, v = qkv(S, 8, 2, 64, torch.float32, q_len=Sq)
    out = _mp.sparse_prefill(q, k, v, *_layer(8), 0.125, msl, 64)
    close(out, bottom_right_ref(q, k, v, 0.125), torch.float32)


def _chunked(q, k, v, c, *args):
    """sparse_prefill over chunks of c query rows, each against the keys up to its end."""
    S = q.shape[2]
    return torch.cat([_mp.sparse_prefill(q[:, :, a:a + c], k[:, :, :a + c], v[:, :, :a + c], *args)
                      for a in range(0, S, c)], 2)


@pytest.mark.parametrize("c", [64, 128, 192])
def test_chunked_equals_unchunked(c):
    """Chunk boundaries multiples of 64 (and a last chunk of >= 64 rows: shorter ones run dense): A-shape and dense
    heads give the unchunked rows; VS and BS with covering budgets give dense attention in both."""
    S = 448
    q, k, v = qkv(S, 8, 2, 64, torch.float32, seed=c)
    sc = 0.125
    args = ([2, 0, 2, 2, 2, 2, 0, 2], [4, 0, 0, 30, 64, 1, 0, 2], [64, 0, 100, 1, 70, 130, 0, 200], sc, 0, 64)
    close(_chunked(q, k, v, c, *args), _mp.sparse_prefill(q, k, v, *args), torch.float32)
    dense = naive.dense_causal_ref(q, k, v, sc)
    cover = ([1, 1, 3, 3, 1, 3, 0, 1], [S, S, 7, 7, S, 7, 0, S], [S, S, 0, 0, S, 0, 0, S], sc, 0, 64)
    close(_chunked(q, k, v, c, *cover), dense, torch.float32)
    close(_mp.sparse_prefill(q, k, v, *cover), dense, torch.float32)


def test_masked_chunk_goes_sparse_without_padding():
    q, k, v = qkv(300, 4, 2, 64, torch.float32, q_len=128)
    args = ([2, 2, 2, 2], [4, 4, 4, 4], [64, 64, 64, 64], 0.125, 0, 64)
    ones = torch.ones(2, 300, dtype=torch.long)
    out = _mp.sparse_prefill_masked(q, k, v, ones, None, *args)
    close(out, naive.streaming_ref(q, k, v, 4, 64, 0.125), torch.float32)
    assert out.stride() == layer_out_strides(out.shape)
    pad = ones.clone()
    pad[1, :5] = 0  # real padding: dense with the padding mask
    keep = (torch.arange(300)[None, :] <= torch.arange(172, 300)[:, None])[None, None] & pad.bool()[:, None, None]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=0.125, enable_gqa=True)
    out = _mp.sparse_prefill_masked(q, k, v, pad, None, *args)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    assert out.stride() == layer_out_strides(out.shape)  # the dense path too


@pytest.mark.parametrize("Sq,S,Hq,Hkv", [(37, 100, 8, 2), (64, 65, 4, 4), (100, 300, 7, 1), (1, 50, 4, 2)])
def test_prefix_causal_attention(Sq, S, Hq, Hkv):
    """The CUDA dense path of a chunk (flash on the prefix + flash on the causal square, merged by log-sum-exp),
    run here with the CPU flash kernel: equals the explicit bottom-right mask."""
    from minference_compile.ops.dense import prefix_causal_attention
    q, k, v = qkv(S, Hq, Hkv, 64, torch.float32, q_len=Sq)
    close(prefix_causal_attention(q, k, v, 0.1), bottom_right_ref(q, k, v, 0.1), torch.float32)
