"""block_sparse_128 (patterns/block_sparse_128.py): the 128-granular index against its naive reference, the
64-granular expansion against the 128-block pair mask, the pattern's CPU / Triton / FA4 (emulated on CPU, real on
sm90) paths and the op against the naive 128-block reference, and the search's scoring of it."""
import pytest
import torch

from test_kernels_triton import CUDA, TOL, nan_out  # noqa: F401 (sets TRITON_INTERPRET on CPU before triton is used)

from fa4_fake import emulate_fa4, fake_flash_attn_func
from minference_compile.ops import fa4
from minference_compile.patterns import BlockSparse128, HeadGroup, parse_entry
from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index, expand_block_index

DEV = "cuda" if CUDA else "cpu"
# (Sq, S, Hq, Hkv, D): lengths around the 64 / 128 edges, chunks (Sq < S) at offsets 0 / 64 / odd mod 128, GQA
SHAPES = [(1, 1, 2, 2, 64), (63, 63, 4, 1, 96), (65, 65, 2, 2, 128), (129, 129, 4, 2, 64), (300, 300, 7, 1, 64),
          (100, 292, 4, 2, 64), (128, 320, 2, 1, 128), (77, 333, 4, 4, 96)]


def qkv(B, Hq, Hkv, Sq, S, D, dtype=torch.float32):
    # offsets: block means of q/k are not ~0, so the scores rank blocks
    q = torch.randn(B, Hq, Sq, D, device=DEV) + 0.5
    k = torch.randn(B, Hkv, S, D, device=DEV) + 0.5 * (1 - 2 * (torch.arange(D, device=DEV) % 2))
    return q.to(dtype), k.to(dtype), torch.randn(B, Hkv, S, D, device=DEV).to(dtype)


def ref(q, k, v, index128, scale=None):
    """The 128-block semantics directly (no expansion): row r attends j <= its position with j // 128 listed."""
    return naive.block_sparse_ref(q.float(), k.float(), v.float(), index128, scale, block=128).cpu()


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES[:6])
@pytest.mark.parametrize("topk", [1, 2, [3, 1, 2, 1, 2, 3, 1]])
def test_index_matches_reference(Sq, S, Hq, Hkv, D, topk, impl):
    if Sq != S:
        pytest.skip("the reference ranks local query blocks of a one-shot call; chunks: test_expand_equals_mask")
    q, k, _ = qkv(2, Hq, Hkv, Sq, S, 16)
    tk = topk[:Hq] if isinstance(topk, list) else topk
    idx = block_sparse_index(q, k, tk, block=128, impl=impl)
    want = naive.block_sparse_index_ref(q.cpu(), k.cpu(), torch.tensor(tk) if isinstance(tk, list) else tk, block=128)
    assert torch.equal(idx.cpu(), want)


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("topk", [1, 2, 4])
def test_expand_equals_mask(Sq, S, Hq, Hkv, D, topk):
    """The 64-granular expansion selects exactly the 128-block pairs, as a compact index (ascending, -1 last)."""
    q, k, _ = qkv(2, Hq, Hkv, Sq, S, 16)
    idx = block_sparse_index(q, k, topk, block=128)
    ex = expand_block_index(idx, Sq, S)
    assert ex.shape[2] == -(-Sq // 64)
    valid = ex >= 0
    assert torch.equal(valid, valid.cummin(-1).values)  # ids first, then -1
    e = torch.where(valid, ex, 1 << 30)
    assert bool((e[..., 1:] > e[..., :-1]).logical_or(~valid[..., 1:]).all())  # strictly ascending
    last = (torch.clamp(S - Sq + 64 * torch.arange(ex.shape[2]) + 63, max=S - 1) // 64)[:, None]
    assert bool((ex.cpu() <= last).all())  # causal ids only: the kernel's compact mode masks just the last one or two
    assert torch.equal(naive.block_sparse_mask(ex.cpu(), S, q_len=Sq),
                       naive.block_sparse_mask(idx.cpu(), S, q_len=Sq, block=128))


def group_of(q, k, v, specs):
    return HeadGroup(q, k, v, q.shape[-1] ** -0.5, 64, tuple(specs))


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES)
def test_pattern_matches_reference(Sq, S, Hq, Hkv, D):
    """The pattern's own path (CPU path on CPU, Triton kernel on CUDA; FA4 off) on half of the heads, the others
    left NaN: the group's heads equal the 128-block reference."""
    dtype = torch.bfloat16 if CUDA else torch.float32
    q, k, v = qkv(2, Hq, Hkv, Sq, S, D, dtype)
    specs = [BlockSparse128(2) if h % 2 == 0 else None for h in range(Hq)]
    g = group_of(q, k, v, specs)
    sel = BlockSparse128.select(g)
    heads = torch.tensor([s is not None for s in specs], device=DEV)
    out = nan_out(q)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINFERENCE_FA4_BS128", "0")
        BlockSparse128.attend(g, sel, heads, out)
    want = ref(q, k, v, sel.cpu(), g.scale)
    h = heads.cpu()
    torch.testing.assert_close(out.float().cpu()[:, h], want[:, h], atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.isnan(out.float().cpu()[:, ~h]).all()  # other heads untouched
    # the pattern's reference (via the 64-granular expansion) in the input dtype: bf16 rounding on CUDA
    rt = 1e-5 if dtype == torch.float32 else TOL[dtype]
    torch.testing.assert_close(BlockSparse128.reference(g, sel).float().cpu()[:, h], want[:, h], atol=rt, rtol=rt)


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", [SHAPES[2], SHAPES[5], SHAPES[7]])
def test_triton_kernel_on_expansion(Sq, S, Hq, Hkv, D):
    """The Triton route (interpreted on CPU): the 64x64 kernel in compact mode on the expanded index."""
    from minference_compile.patterns.block_sparse import BlockAttention
    q, k, v = qkv(2, Hq, Hkv, Sq, S, D)
    g = group_of(q, k, v, [BlockSparse128(2)] * Hq)
    sel = BlockSparse128.select(g)
    out = BlockAttention.attend_cuda(g, BlockSparse128.expanded(g, sel), None, nan_out(q))
    torch.testing.assert_close(out.float().cpu(), ref(q, k, v, sel.cpu(), g.scale), atol=2e-2 if CUDA else 1e-4,
                               rtol=1e-2 if CUDA else 1e-4)


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", SHAPES)
def test_fa4_lists_match_reference(Sq, S, Hq, Hkv, D, monkeypatch):
    """The FA4 route (lists at 128 x 128, causal=True, one call for all heads, empty lists for the others) through
    an emulated flash_attn.cute that computes exactly the pairs the lists name."""
    calls = []
    emulate_fa4(monkeypatch, lambda q, k, v, **kw: calls.append(sorted(kw)) or fake_flash_attn_func(q, k, v, **kw))
    monkeypatch.setenv("MINFERENCE_FA4_BS128", "1")
    q, k, v = qkv(2, Hq, Hkv, Sq, S, D)
    specs = [BlockSparse128(1 + h % 3) if h != 1 else None for h in range(Hq)]
    g = group_of(q, k, v, specs)
    sel = BlockSparse128.select(g)
    heads = torch.tensor([s is not None for s in specs])
    out = BlockSparse128.attend_cuda(g, sel, heads, nan_out(q))  # the CUDA route, on the emulated FA4
    assert calls and "block_sparse_tensors" in calls[0] and "causal" in calls[0]
    want = ref(q, k, v, sel, g.scale)
    torch.testing.assert_close(out[:, heads], want[:, heads], atol=1e-4, rtol=1e-4)
    assert torch.isnan(out[:, ~heads]).all()


def test_fa4_lists_split_full_and_diagonal():
    """Hand-built index, offset 64 (query block 0 = rows 64..191 spans key blocks 0 and 1): full = ids below the
    block's first row, mask = the diagonal ids, counts per row, other heads empty."""
    idx = torch.tensor([[[[0, 1, -1], [0, 2, -1]], [[0, 1, -1], [1, 2, -1]]]], dtype=torch.int32)  # [1, 2, 2, 3]
    lists = fa4.bs128_lists(idx, q_len=192, kv_len=256, heads=[0])
    assert lists.block_size == (128, 128)
    assert lists.full_cnt.tolist() == [[[0, 1], [0, 0]]] and lists.mask_cnt.tolist() == [[[2, 1], [0, 0]]]
    assert lists.full_idx[0, 0, 1, 0] == 0 and lists.mask_idx[0, 0, 0].tolist() == [0, 1]
    assert lists.mask_idx[0, 0, 1, 0] == 2


@pytest.mark.skipif(not (CUDA and torch.cuda.get_device_capability()[0] == 9), reason="FA4 on sm90")
@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", [(1000, 1000, 8, 2, 128), (4096, 4096, 4, 1, 128), (1000, 3000, 4, 2, 128),
                                           (777, 777, 4, 4, 64)] + SHAPES)
def test_fa4_real_matches_reference(Sq, S, Hq, Hkv, D, monkeypatch):
    if fa4.reason(torch.zeros(1, 1, 2, D, device="cuda", dtype=torch.bfloat16),
                  torch.zeros(1, 1, 2, D, device="cuda", dtype=torch.bfloat16)) is not None:
        pytest.skip("flash_attn.cute not importable")
    monkeypatch.setenv("MINFERENCE_FA4_BS128", "1")
    q, k, v = qkv(2, Hq, Hkv, Sq, S, D, torch.bfloat16)
    specs = [BlockSparse128(3) if h != 1 else None for h in range(Hq)]
    g = group_of(q, k, v, specs)
    sel = BlockSparse128.select(g)
    heads = torch.tensor([s is not None for s in specs], device="cuda")
    before = fa4.CALLS["block-sparse 128"]
    out = BlockSparse128.attend(g, sel, heads, nan_out(q))
    assert fa4.CALLS["block-sparse 128"] == before + 1
    want = ref(q, k, v, sel.cpu(), g.scale)
    h = heads.cpu()
    torch.testing.assert_close(out.float().cpu()[:, h], want[:, h], atol=2e-2, rtol=2e-2)
    assert torch.isnan(out.float().cpu()[:, ~h]).all()


def test_entry_label_and_op():
    spec = parse_entry(["block_sparse_128", 8, 0, 0])
    assert spec == BlockSparse128(8) and spec.label == "bs128(8)" and spec.to_entry() == ["block_sparse_128", 8, 0, 0]
    with pytest.raises(ValueError, match="block_sparse_128 topk must be >= 1"):
        parse_entry(["block_sparse_128", 0, 0, 0])
    # through the op (pattern id 7), CPU path / Triton kernel, mixed with a dense head
    q, k, v = qkv(1, 2, 1, 300, 300, 64)
    out = torch.ops.minference.sparse_prefill(q, k, v, [7, 0], [2, 0], [0, 0], 0.125, 0, 64, 1.0)
    want = ref(q, k, v, block_sparse_index(q, k, 2, block=128).cpu(), 0.125)
    torch.testing.assert_close(out[:, :1].float().cpu(), want[:, :1], atol=2e-2 if CUDA else 1e-4, rtol=1e-2)
    torch.testing.assert_close(out[:, 1:].float().cpu(), naive.dense_causal_ref(q[:, 1:].cpu().float(), k.cpu().float(),
                                                                              v.cpu().float(), 0.125),
                               atol=2e-2 if CUDA else 1e-4, rtol=1e-2)
