"""CPU paths of minference::* vs the full-mask references of triton_kernels/naive.py.

Tolerances: fp32 atol = rtol = 1e-5 (same fp32 math, different summation order);
bf16/fp16 atol = rtol = 2e-2 (both sides compute in fp32 and round the output once).
"""
import pytest
import torch
import torch.nn.functional as F

import minference_compile.ops as ops
from minference_compile.ops import cpu
from minference_compile.ops.estimate import estimate_vertical_slash
from minference_compile.ops.layout import layer_out_strides
from minference_compile.triton_kernels import naive

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
       torch.float16: dict(atol=2e-2, rtol=2e-2)}
_mp = torch.ops.minference

# (S, Hq, Hkv, D, dtype): S in {1, 63, 65, 1000}, GQA 1:1 / 4:1 / 7:1, D 64 / 96 / 128; batch 2
CASES = [
    (1, 4, 4, 64, torch.float32),
    (63, 4, 1, 96, torch.float32),
    (65, 7, 1, 128, torch.float32),
    (1000, 4, 1, 64, torch.float32),
    (1000, 7, 1, 96, torch.bfloat16),
    (65, 2, 2, 128, torch.bfloat16),
    (63, 7, 1, 64, torch.float16),
]


def qkv(S, Hq, Hkv, D, dtype, B=2, seed=0, q_len=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, q_len or S, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    return q, k, v


def close(a, b, dtype):
    assert a.dtype == dtype
    torch.testing.assert_close(a.float(), b.float(), **TOL[dtype])


def rand_index(B, H, n, hi, seed):
    """Random ids in [-1, hi + 3): -1 padding, duplicates and ids >= hi (select nothing) included."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, hi + 3, (B, H, n), generator=g, dtype=torch.int32)


def poisoned(q):
    return torch.full_like(q, float("nan"))


@pytest.mark.parametrize("S,Hq,Hkv,D,dtype", CASES)
def test_vertical_slash(S, Hq, Hkv, D, dtype):
    q, k, v = qkv(S, Hq, Hkv, D, dtype)
    vert, slash = rand_index(2, Hq, 12, S, 1), rand_index(2, Hq, 7, S, 2)
    out = cpu.vertical_slash_attention(q, k, v, vert, slash, D ** -0.5, out=poisoned(q))
    close(out, naive.vertical_slash_ref(q, k, v, vert, slash), dtype)


@pytest.mark.parametrize("S,Hq,Hkv,D,dtype", CASES)
def test_block_sparse(S, Hq, Hkv, D, dtype):
    q, k, v = qkv(S, Hq, Hkv, D, dtype)
    nqb = -(-S // 64)
    bi = rand_index(2, Hq, nqb * 3, nqb, 3).view(2, Hq, nqb, 3)
    out = cpu.block_sparse_attention(q, k, v, bi, D ** -0.5, out=poisoned(q))
    close(out, naive.block_sparse_ref(q, k, v, bi), dtype)


@pytest.mark.parametrize("S,Hq,Hkv,D,dtype", CASES)
def test_streaming(S, Hq, Hkv, D, dtype):
    q, k, v = qkv(S, Hq, Hkv, D, dtype)
    init = torch.tensor([0, 4, 30, 1, 2, 64, 7])[:Hq]
    local = torch.tensor([1, 64, 100, 3, 200, 5, 9])[:Hq]
    out = cpu.streaming_attention(q, k, v, init, local, D ** -0.5, out=poisoned(q))
    close(out, naive.streaming_ref(q, k, v, init, local), dtype)
    close(ops.streaming_forward(q, k, v, 4, 64), naive.streaming_ref(q, k, v, 4, 64), dtype)


def test_ops_match_reference():
    """The public functions (validation + op) on CPU, incl. the op's own block selection."""
    q, k, v = qkv(200, 4, 2, 64, torch.float32)
    vert, slash = rand_index(2, 4, 9, 200, 4).clamp(0, 199), rand_index(2, 4, 5, 200, 5).clamp(0, 199)
    close(ops.vertical_slash_sparse_attention(q, k, v, vert.long(), slash),
          naive.vertical_slash_ref(q, k, v, vert, slash), torch.float32)
    bi = naive.block_sparse_index_ref(q, k, 2)
    close(ops.block_sparse_attention(q, k, v, 2), naive.block_sparse_ref(q, k, v, bi), torch.float32)


def test_head_mask_leaves_other_heads():
    q, k, v = qkv(130, 8, 2, 64, torch.float32)
    hm = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1], dtype=torch.bool)
    ref = naive.streaming_ref(q, k, v, 4, 16)
    out = cpu.streaming_attention(q, k, v, 4, 16, 0.125, head_mask=hm, out=poisoned(q))
    close(out[:, hm], ref[:, hm], torch.float32)
    assert out[:, ~hm].isnan().all()
    out = cpu.causal_attention(q, k, v, 0.125, head_mask=hm, out=poisoned(q))
    close(out[:, hm], naive.dense_causal_ref(q, k, v)[:, hm], torch.float32)
    assert out[:, ~hm].isnan().all()


@pytest.mark.parametrize("Hq,Hkv,dtype", [(4, 4, torch.float32), (7, 1, torch.float32), (4, 1, torch.bfloat16)])
def test_covering_index_sets_are_dense(Hq, Hkv, dtype):
    S, D = 200, 64
    q, k, v = qkv(S, Hq, Hkv, D, dtype)
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=Hq != Hkv)
    every = torch.arange(S, dtype=torch.int32).expand(2, Hq, S)
    none = torch.full((2, Hq, 1), -1, dtype=torch.int32)
    close(cpu.vertical_slash_attention(q, k, v, every, none, D ** -0.5), dense, dtype)
    close(cpu.vertical_slash_attention(q, k, v, none, every, D ** -0.5), dense, dtype)
    # one offset per 64 covers everything too (block-rounded slash ranges)
    coarse = torch.arange(0, S, 64, dtype=torch.int32).expand(2, Hq, -1)
    close(cpu.vertical_slash_attention(q, k, v, none, coarse, D ** -0.5), dense, dtype)
    nqb = -(-S // 64)
    close(ops.block_sparse_attention(q, k, v, nqb), dense, dtype)
    close(ops.streaming_forward(q, k, v, S, 1), dense, dtype)
    close(ops.streaming_forward(q, k, v, 1, S), dense, dtype)


# ---- sparse_prefill ----

def test_sparse_prefill_mixed_heads():
    S, D = 300, 64
    q, k, v = qkv(S, 8, 2, D, torch.float32)
    patterns = [0, 1, 2, 3, 1, 2, 3, 0]
    vs = [0, 40, 4, 2, 60, 1, 3, 0]
    ss = [0, 130, 64, 0, 70, 100, 0, 0]
    sc = D ** -0.5
    out = _mp.sparse_prefill(q, k, v, patterns, vs, ss, sc, 128, 64)
    vert, slash = estimate_vertical_slash(q, k, [x if p == 1 else 0 for p, x in zip(patterns, vs)],
                                          [x if p == 1 else 0 for p, x in zip(patterns, ss)], 64, 30, 100)
    bi = naive.block_sparse_index_ref(q, k, torch.tensor([x if p == 3 else 1 for p, x in zip(patterns, vs)]))
    refs = {0: naive.dense_causal_ref(q, k, v, sc),
            1: naive.vertical_slash_ref(q, k, v, vert, slash, sc),
            2: naive.streaming_ref(q, k, v, torch.tensor(vs), torch.tensor(ss), sc),
            3: naive.block_sparse_ref(q, k, v, bi, sc)}
    for h, p in enumerate(patterns):
        close(out[:, h], refs[p][:, h], torch.float32)
    assert (vert[:, [0, 2, 3, 5, 6, 7]] == -1).all()
    assert out.stride() == layer_out_strides(out.shape)  # the fake's layout: Inductor indexes the output by it


@pytest.mark.parametrize("dense_heads", [False, True])
def test_sparse_prefill_vs_max_work(dense_heads):
    """vs_max_work (CUDA only): a VS (+ dense) layer whose estimated index computes more than that share of the
    causal pairs runs dense; below it, in a layer with other sparse patterns, or on CPU, the VS heads stay sparse."""
    from minference_compile.ops import library
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index, work_share
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    S, D, sc = 640, 64, 0.125
    q, k, v = qkv(S, 4, 2, D, torch.float32, seed=3)
    pats = [1, 0, 1, 1] if dense_heads else [1, 1, 1, 1]
    vs = [4 if p else 0 for p in pats]
    ss = [6 if p else 0 for p in pats]  # <= 6 slashes + 4 columns of 640: work ~0.2-0.4 with the 64-row rounding
    sel = torch.tensor([p == 1 for p in pats])
    dense = naive.dense_causal_ref(q, k, v, sc)
    for dev in devices:
        tol = TOL[torch.float32] if dev == "cpu" else dict(atol=1e-4, rtol=1e-4)  # GPU: fp32 dots, other order
        qd, kd, vd = (t.to(dev) for t in (q, k, v))
        vert, slash = (t.cpu() for t in estimate_vertical_slash(qd, kd, vs, ss, 64, 30, 100))  # what the op sees
        work = float(work_share(build_vertical_slash_index(vert, slash, S), S)[:, sel].mean())
        assert 0.15 < work < 0.85
        sparse = {1: naive.vertical_slash_ref(q, k, v, vert, slash, sc), 0: dense}
        assert not torch.allclose(sparse[1][:, 0], dense[:, 0], atol=1e-3)  # the two paths give different outputs
        n0 = vs_fallbacks()
        out = _mp.sparse_prefill(qd, kd, vd, pats, vs, ss, sc, 0, 64, min(1.0, work + 0.1)).cpu()  # under: sparse
        assert vs_fallbacks() == n0
        for h, p in enumerate(pats):
            torch.testing.assert_close(out[:, h], sparse[p][:, h], **tol)
        out = _mp.sparse_prefill(qd, kd, vd, pats, vs, ss, sc, 0, 64, work - 0.1).cpu()  # over it: dense on CUDA
        if dev == "cuda":
            assert vs_fallbacks() == n0 + 1
            torch.testing.assert_close(out, dense, **tol)
        else:
            assert vs_fallbacks() == n0
            torch.testing.assert_close(out[:, 0], sparse[1][:, 0], **tol)
        # a layer that also has A-shape heads keeps its VS heads sparse whatever the work
        out = _mp.sparse_prefill(qd, kd, vd, pats[:3] + [2], vs[:3] + [4], ss[:3] + [64], sc, 0, 64, 0.01).cpu()
        torch.testing.assert_close(out[:, 0], sparse[1][:, 0], **tol)


def bottom_right_ref(q, k, v, scale):
    """Explicit bottom-right causal mask: query row r sits at position kv_len - q_len + r."""
    sq, skv = q.shape[2], k.shape[2]
    mask = torch.zeros(sq, skv, dtype=torch.bool)
    for r in range(sq):
        mask[r, : skv - sq + r + 1] = True
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(g, 1),
                                          v.float().repeat_interleave(g, 1), attn_mask=mask, scale=scale)


@pytest.mark.parametrize("q_len,kv_len,dtype", [(100, 100, torch.float32), (1, 100, torch.float32),
                                                 (37, 100, torch.float32), (37, 100, torch.bfloat16)])
def test_sparse_prefill_dense_fallback(q_len, kv_len, dtype):
    q, k, v = qkv(kv_len, 8, 2, 80, dtype, q_len=q_len)  # any head_dim on the dense path
    out = _mp.sparse_prefill(q, k, v, [1, 2, 3, 0] * 2, [100, 4, 2, 0] * 2, [100, 64, 0, 0] * 2, 0.1, 128, 64)
    close(out, bottom_right_ref(q, k, v, 0.1), dtype)
    assert out.stride() == layer_out_strides(out.shape)  # the fake's layout (ops/layout.py), on every path


# ---- estimate ----

def estimate_scores_ref(q, k, last_q):
    """Full [L, S] scores per head, python loops over diagonals -> (vertical [B,H,S], slash [B,H,S])."""
    B, H, S, D = q.shape
    L = min(last_q, S)
    kk = k.float().repeat_interleave(H // k.shape[1], 1)
    s = q[:, :, S - L:].float() @ kk.transpose(-1, -2) / D ** 0.5
    for r in range(L):
        s[:, :, r, S - L + r + 1:] = float("-inf")
    p = s.softmax(-1)
    slash = torch.zeros(B, H, S)
    for d in range(S):
        for r in range(L):
            j = S - L + r - d
            if j >= 0:
                slash[:, :, d] += p[:, :, r, j]
    return p.sum(2), slash


def check_topk(idx, score, forced, budget):
    """idx = a top-`budget` of score where the `forced` entries rank first."""
    idx = idx.tolist()
    assert len(set(idx)) == len(idx) == budget
    if budget >= forced:
        assert set(range(forced)) <= set(idx)
        rest = sorted(score[forced:].topk(budget - forced).indices.add(forced).tolist())
        assert sorted(i for i in idx if i >= forced) == rest
    else:
        assert set(idx) <= set(range(forced))


@pytest.mark.parametrize("S,Hq,Hkv,last_q", [(300, 4, 1, 64), (300, 7, 1, 64), (50, 2, 2, 64), (130, 4, 2, 20)])
def test_estimate_vs_bruteforce(S, Hq, Hkv, last_q):
    q, k, _ = qkv(S, Hq, Hkv, 64, torch.float32)
    V, NS, sink, local = 40, 25, 6, 10
    vert, slash = ops.estimate_vertical_slash(q, k, V, NS, last_q=last_q, sink_tokens=sink, local_window=local)
    assert vert.shape == (2, Hq, min(V, S)) and slash.shape == (2, Hq, min(NS, S))
    assert vert.dtype == slash.dtype == torch.int32
    vref, sref = estimate_scores_ref(q, k, last_q)
    for b in range(2):
        for h in range(Hq):
            check_topk(vert[b, h], vref[b, h], sink, min(V, S))
            check_topk(slash[b, h], sref[b, h], local, min(NS, S))


def test_estimate_forced_beyond_budget():
    q, k, _ = qkv(200, 4, 2, 64, torch.float32)
    vert, slash = estimate_vertical_slash(q, k, 10, 20, 64, 30, 100)
    assert (vert < 30).all() and (slash < 100).all()


def test_estimate_per_head_budgets():
    q, k, _ = qkv(260, 4, 1, 64, torch.float32)
    vb, sb = [5, 12, 8, 30], torch.tensor([9, 6, 40, 7])
    vert, slash = ops.estimate_vertical_slash(q, k, vb, sb, sink_tokens=3, local_window=4)
    assert vert.shape == (2, 4, 30) and slash.shape == (2, 4, 40)
    for h in range(4):
        v1, s1 = ops.estimate_vertical_slash(q, k, vb[h], int(sb[h]), sink_tokens=3, local_window=4)
        assert (vert[:, h, vb[h]:] == -1).all() and (slash[:, h, int(sb[h]):] == -1).all()
        for b in range(2):
            assert set(vert[b, h, :vb[h]].tolist()) == set(v1[b, h].tolist())
            assert set(slash[b, h, :int(sb[h])].tolist()) == set(s1[b, h].tolist())


def test_estimate_short_sequence():
    q, k, _ = qkv(10, 4, 4, 64, torch.float32)
    vert, slash = ops.estimate_vertical_slash(q, k, 1000, 6000)
    assert sorted(vert[0, 0].tolist()) == list(range(10)) and sorted(slash[1, 3].tolist()) == list(range(10))


def test_small_chunks_and_head_steps(monkeypatch):
    """64-row chunks and one kv head per step (the long-S schedule) give the same result."""
    monkeypatch.setattr(cpu, "_SCORE_BUDGET", 1)
    q, k, v = qkv(200, 8, 4, 64, torch.float32)
    hm = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    vert, slash = rand_index(2, 8, 12, 200, 1), rand_index(2, 8, 7, 200, 2)
    out = cpu.vertical_slash_attention(q, k, v, vert, slash, 0.125, head_mask=hm, out=poisoned(q))
    close(out[:, hm], naive.vertical_slash_ref(q, k, v, vert, slash)[:, hm], torch.float32)
    assert out[:, ~hm].isnan().all()
    bi = rand_index(2, 8, 4 * 2, 4, 3).view(2, 8, 4, 2)
    close(cpu.block_sparse_attention(q, k, v, bi, 0.125), naive.block_sparse_ref(q, k, v, bi), torch.float32)


def vs_fallbacks() -> int:
    """Layer calls the vs_max_work check sent to dense, from the run-time record."""
    from minference_compile import runtime_stats

    return sum(n for per in runtime_stats().values() for (ran, why), n in per.items() if why.startswith("vs_max_work"))


@pytest.mark.parametrize("q_len", [1, 7])
def test_masked_prefill_decode_with_padding(q_len):
    # decode / chunked prefill through sparse_prefill_masked: dense, bottom-right causal AND padding
    import minference_compile.ops.padded  # noqa: F401
    torch.manual_seed(q_len)
    kv_len, B = 50, 2
    q = torch.randn(B, 4, q_len, 64)
    k, v = torch.randn(B, 2, kv_len, 64), torch.randn(B, 2, kv_len, 64)
    pad = torch.ones(B, kv_len, dtype=torch.long)
    pad[1, :5] = 0  # left padding in the second sequence
    out = torch.ops.minference.sparse_prefill_masked(q, k, v, pad, None, [1, 1, 2, 3], [8, 8, 4, 1], [16, 16, 8, 0],
                                                     0.125, 0, 64)
    pos = torch.arange(kv_len - q_len, kv_len)[:, None]
    mask = (torch.arange(kv_len)[None, :] <= pos)[None, None] & pad.bool()[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.125, enable_gqa=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _window_ref(q, k, v, scale, window, keep=None, positions=None):
    """Full-mask reference of transformers' sliding / packed masks (small S only)."""
    sq, skv = q.shape[2], k.shape[2]
    i = torch.arange(sq)[:, None] + (skv - sq)
    j = torch.arange(skv)[None, :]
    if positions is None:
        mask = (j <= i)[None].expand(q.shape[0], -1, -1)
    else:
        seg = (torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1) != 1).cumsum(-1)
        mask = (positions[:, None, :] <= positions[:, :, None]) & (seg[:, None, :] == seg[:, :, None])
    if window:
        mask = mask & (i - j < window)
    if keep is not None:
        mask = mask & keep[:, None, :]
    o = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask[:, None],
                                                         scale=scale, enable_gqa=True)
    return torch.where(mask[:, None].any(-1, keepdim=True), o, 0.0).to(q.dtype)


@pytest.mark.parametrize("S, window", [(1, 16), (63, 16), (65, 64), (200, 16), (200, 300)])
@pytest.mark.parametrize("D", [64, 96, 128])
def test_local_attention_is_exact_sliding_window(S, window, D):
    import minference_compile.ops.local  # noqa: F401

    torch.manual_seed(S + D)
    q, k, v = torch.randn(2, 6, S, D), torch.randn(2, 2, S, D), torch.randn(2, 2, S, D)
    out = torch.ops.minference.local_attention(q, k, v, None, None, window, 0.11, 0)
    torch.testing.assert_close(out, _window_ref(q, k, v, 0.11, window), atol=1e-5, rtol=1e-5)
    keep = torch.ones(2, S, dtype=torch.bool)
    keep[1, : S // 3] = False  # left padding: exact dense with the window
    out = torch.ops.minference.local_attention(q, k, v, keep.long(), None, window, 0.11, 0)
    torch.testing.assert_close(out, _window_ref(q, k, v, 0.11, window, keep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_len", [1, 9])
def test_local_attention_decode_is_bottom_right(q_len):
    import minference_compile.ops.local  # noqa: F401

    torch.manual_seed(q_len)
    q, k, v = torch.randn(2, 4, q_len, 64), torch.randn(2, 2, 90, 64), torch.randn(2, 2, 90, 64)
    out = torch.ops.minference.local_attention(q, k, v, None, None, 20, 0.125, 0)
    torch.testing.assert_close(out, _window_ref(q, k, v, 0.125, 20), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["one", "packed", "restart_at_end"])
def test_masked_prefill_positions(positions):
    """position_ids: one sequence per row -> the sparse op (== causal with covering budgets); packed -> exact dense."""
    import minference_compile.ops.padded  # noqa: F401
    from minference_compile import reset_runtime_stats, runtime_stats

    torch.manual_seed(0)
    S = 130
    q, k, v = torch.randn(2, 4, S, 64), torch.randn(2, 2, S, 64), torch.randn(2, 2, S, 64)
    pos = {"one": torch.arange(S)[None] + 5, "packed": torch.cat([torch.arange(50), torch.arange(80)])[None],
           "restart_at_end": torch.cat([torch.arange(S - 1), torch.arange(1)])[None]}[positions]
    reset_runtime_stats()
    out = torch.ops.minference.sparse_prefill_masked(q, k, v, None, pos, [1, 2, 3, 0], [S, S, 8, 0], [S, S, 0, 0],
                                                     0.125, 0, 64, 1.0, 5)
    torch.testing.assert_close(out, _window_ref(q, k, v, 0.125, 0, positions=pos.expand(2, -1)), atol=1e-5, rtol=1e-5)
    ((ran, why),) = runtime_stats()[5]
    assert ran == ("sparse" if positions == "one" else "dense"), why
