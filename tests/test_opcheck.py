"""torch.library.opcheck for every minference:: op on CPU (small shapes), plus torch.compile with a
symbolic sequence length."""
import pytest
import torch

import minference_compile.ops  # noqa: F401  (registers the ops)
import minference_compile.ops.local  # noqa: F401
import minference_compile.ops.materialize  # noqa: F401
import minference_compile.ops.padded  # noqa: F401

mp = torch.ops.minference


def qkv(S=70, Hq=4, Hkv=2, D=64, dtype=torch.float32, q_len=None):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, Hq, q_len or S, D, generator=g).to(dtype),
            torch.randn(1, Hkv, S, D, generator=g).to(dtype), torch.randn(1, Hkv, S, D, generator=g).to(dtype))


def _cases():
    q, k, v = qkv()
    vert = torch.tensor([[[0, 5, 69], [3, 3, -1], [1, 2, 4], [68, 0, 9]]], dtype=torch.int32)
    slash = torch.tensor([[[0, 64], [7, -1], [1, 30], [2, 3]]], dtype=torch.int32)
    pats = ([0, 1, 2, 3], [10, 20, 4, 1], [0, 30, 16, 0])
    yield "vertical_slash", mp.vertical_slash_attention, (q, k, v, vert, slash, None)
    yield "vertical_slash_scale", mp.vertical_slash_attention, (q, k, v, vert, slash, 0.3)
    yield "block_sparse", mp.block_sparse_attention, (q, k, v, 1, None)
    yield "streaming", mp.streaming_attention, (q, k, v, 4, 16, None)
    yield "streaming_bf16", mp.streaming_attention, (*qkv(dtype=torch.bfloat16), 4, 16, 0.2)
    yield "estimate", mp.estimate_vertical_slash, (q, k, 10, 100, 64, 4, 8)
    yield "sparse_prefill", mp.sparse_prefill, (q, k, v, *pats, 0.125, 64, 64)
    yield "sparse_prefill_short", mp.sparse_prefill, (q, k, v, *pats, 0.125, 128, 64)
    yield "sparse_prefill_chunk", mp.sparse_prefill, (*qkv(q_len=9), *pats, 0.125, 64, 64)
    yield "sparse_prefill_decode", mp.sparse_prefill, (*qkv(q_len=1), *pats, 0.125, 64, 64)
    yield "sparse_prefill_qk_int8", mp.sparse_prefill, (q, k, v, *pats, 0.125, 0, 64, 1.0, 2, 1, "int8")
    yield "estimate_scale", mp.estimate_vertical_slash, (q, k, 10, 100, 64, 4, 8, 0.05)
    pad = torch.ones(1, 70, dtype=torch.long)
    holes = pad.clone()
    holes[0, :3] = 0
    pos = torch.arange(70)[None] + 2
    packed = torch.cat([torch.arange(30), torch.arange(40)])[None]
    yield "masked_pad", mp.sparse_prefill_masked, (q, k, v, pad, None, *pats, 0.125, 0, 64, 1.0, 3, 1)
    yield "masked_holes", mp.sparse_prefill_masked, (q, k, v, holes, None, *pats, 0.125, 0, 64)
    yield "masked_positions", mp.sparse_prefill_masked, (q, k, v, None, pos, *pats, 0.125, 0, 64)
    yield "masked_packed", mp.sparse_prefill_masked, (q, k, v, None, packed, *pats, 0.125, 0, 64)
    yield "masked_pad_qk_fp8", mp.sparse_prefill_masked, (q, k, v, pad, None, *pats, 0.125, 0, 64, 1.0, 3, 1, "fp8")
    yield "local", mp.local_attention, (q, k, v, None, None, 16, 0.125, 0, 2)
    yield "local_short", mp.local_attention, (q, k, v, None, None, 100, 0.125, 0)
    yield "local_holes", mp.local_attention, (q, k, v, holes, None, 16, 0.125, 0)
    yield "local_decode", mp.local_attention, (*qkv(q_len=1), None, None, 16, 0.125, 0)
    # query offset (q_len < kv_len: the last q_len positions), aligned and not to 64
    qc, kc, vc = qkv(S=200, q_len=100)
    yield "vertical_slash_offset", mp.vertical_slash_attention, (qc, kc, vc, vert, slash, None)
    yield "block_sparse_offset", mp.block_sparse_attention, (qc, kc, vc, 2, None)
    yield "streaming_offset", mp.streaming_attention, (*qkv(S=192, q_len=64), 4, 16, None)
    yield "estimate_offset", mp.estimate_vertical_slash, (qc, kc, 10, 100, 64, 4, 8)
    yield "sparse_prefill_chunk_sparse", mp.sparse_prefill, (qc, kc, vc, *pats, 0.125, 64, 64)
    yield "sparse_prefill_chunk_aligned", mp.sparse_prefill, (*qkv(S=192, q_len=128), *pats, 0.125, 0, 64)
    yield "sparse_prefill_masked_chunk", mp.sparse_prefill_masked, (qc, kc, vc, torch.ones(1, 200, dtype=torch.long), None,
                                                                    *pats, 0.125, 64, 64)
    yield "materialize", mp.materialize, (torch.randn(2, 70, 64, requires_grad=True),)
    yield "materialize_bf16", mp.materialize, (torch.randn(1, 70, 128).to(torch.bfloat16).transpose(1, 2),)


CASES = list(_cases())


@pytest.mark.parametrize("op,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("q_len", [None, 64], ids=["seq_len", "kv_len"])
def test_compile_dynamic_lengths(q_len):
    """Symbolic lengths: q_len == kv_len growing, or a chunk of fixed q_len against a growing cache (dynamic
    kv_len): one graph, outputs of the eager op."""
    torch._dynamo.reset()

    def layer(q, k, v):
        out = mp.sparse_prefill(q, k, v, [1, 2, 3, 0], [10, 4, 1, 0], [30, 16, 0, 0], 0.125, 64, 64)
        vert, slash = mp.estimate_vertical_slash(q, k, 100, 20, 64, 4, 8)
        return out * 2, vert, slash

    compiled = torch.compile(layer, backend="aot_eager", dynamic=True, fullgraph=True)
    for S in ((70, 90, 130) if q_len is None else (128, 192, 256)):
        q, k, v = qkv(S, q_len=q_len)
        got, want = compiled(q, k, v), layer(q, k, v)
        torch.testing.assert_close(got[0], want[0])
        assert got[1].shape == want[1].shape == (1, 4, min(100, S))
        assert torch.equal(got[2], want[2])
