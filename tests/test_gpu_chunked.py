"""Query offset (chunked pre-fill) on a CUDA device at realistic sizes (skipped without CUDA): the public ops with
q_len < kv_len vs naive.py's references (2e-2 relative Frobenius error, bf16/fp16), chunked rows vs unchunked rows
with the same index sets (bit-identical when chunk boundaries are multiples of 128), the flash dense path of a
chunk, sparse_prefill's chunk decisions, and a chunked tiny Llama through chunked_prefill."""
import pytest
import torch

from minference_compile.ops import (block_sparse_attention, estimate_vertical_slash, streaming_forward,
                                    vertical_slash_sparse_attention)
from minference_compile.ops.library import sparse_prefill
from minference_compile.triton_kernels import naive
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _qkv(B, Hq, Hkv, Sq, S, D, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda h, s: torch.randn(B, h, s, D, device="cuda", dtype=dtype, generator=g)  # noqa: E731
    return mk(Hq, Sq), mk(Hkv, S), mk(Hkv, S)


def _rel(a, b):
    assert not torch.isnan(a).any(), "NaN in output (unwritten rows?)"
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# (B, Hq, Hkv, Sq, S, D): offsets aligned to 64 and not, GQA, D 64/96/128
SHAPES = [(2, 8, 2, 1000, 3000, 128), (1, 7, 1, 2047, 4096, 96), (1, 4, 4, 1024, 4096, 64), (2, 28, 4, 513, 1025, 128),
          (1, 8, 2, 1, 2000, 128), (1, 8, 2, 63, 2000, 64)]


@pytest.mark.parametrize("B,Hq,Hkv,Sq,S,D", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_public_ops_with_offset(B, Hq, Hkv, Sq, S, D, dtype):
    q, k, v = _qkv(B, Hq, Hkv, Sq, S, D, dtype, seed=S + Sq + D)
    vert, slash = estimate_vertical_slash(q, k, 100, 300)
    assert vert.shape[-1] == 100 and slash.shape[-1] == 300
    out = vertical_slash_sparse_attention(q, k, v, vert, slash)
    assert _rel(out, naive.vertical_slash_ref(q, k, v, vert, slash)) < 2e-2
    assert _rel(streaming_forward(q, k, v, 64, 256), naive.streaming_ref(q, k, v, 64, 256)) < 2e-2
    idx = block_sparse_index(q, k, 8)
    assert _rel(block_sparse_attention(q, k, v, 8), naive.block_sparse_ref(q, k, v, idx)) < 2e-2


@pytest.mark.parametrize("S,c0", [(8192, 2048), (8192, 6144), (5000, 1024)])
def test_chunk_rows_equal_unchunked(S, c0):
    """Same index sets: the chunk's rows are the unchunked rows, bit for bit (boundaries on the 128-row grid)."""
    from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
    from minference_compile.triton_kernels.streaming import streaming_attention_fwd
    from minference_compile.triton_kernels.vertical_slash import vertical_slash_attention_fwd
    from minference_compile.triton_kernels.vertical_slash_index import build_vertical_slash_index
    q, k, v = _qkv(1, 8, 2, S, S, 128, torch.bfloat16, seed=S)
    qc = q[:, :, c0:]
    i32 = dict(dtype=torch.int32, device="cuda")
    init, local = torch.full((8,), 128, **i32), torch.full((8,), 1024, **i32)
    assert torch.equal(streaming_attention_fwd(qc, k, v, init, local),
                       streaming_attention_fwd(q, k, v, init, local)[:, :, c0:])
    vert, slash = estimate_vertical_slash(q, k, 300, 500)
    for pair in (False, True):
        full = vertical_slash_attention_fwd(q, k, v, build_vertical_slash_index(vert, slash, S, pair=pair))
        part = vertical_slash_attention_fwd(qc, k, v, build_vertical_slash_index(vert, slash, S, pair=pair,
                                                                                 q_len=S - c0))
        assert torch.equal(part, full[:, :, c0:])
    bi = block_sparse_index(q, k, 16)
    full = block_sparse_attention_fwd(q, k, v, bi, compact=True)
    assert torch.equal(block_sparse_attention_fwd(qc, k, v, bi[:, :, c0 // 64:], compact=True), full[:, :, c0:])


@pytest.mark.parametrize("Sq,S,Hq,Hkv,D", [(1000, 3000, 28, 4, 128), (4096, 65536, 8, 1, 64), (777, 2000, 7, 7, 96)])
def test_dense_chunk_flash_path(Sq, S, Hq, Hkv, D):
    from minference_compile.ops.dense import dense_attention
    q, k, v = _qkv(1, Hq, Hkv, Sq, S, D, torch.bfloat16, seed=Sq)
    out = dense_attention(q, k, v, D ** -0.5)
    # reference: fp32 SDPA with an explicit bottom-right mask, in row chunks
    ref = torch.empty_like(q, dtype=torch.float32)
    j = torch.arange(S, device="cuda")
    kf, vf = k.float().repeat_interleave(Hq // Hkv, 1), v.float().repeat_interleave(Hq // Hkv, 1)
    for r0 in range(0, Sq, 512):
        r1 = min(Sq, r0 + 512)
        mask = j[None, :] <= torch.arange(S - Sq + r0, S - Sq + r1, device="cuda")[:, None]
        ref[:, :, r0:r1] = torch.nn.functional.scaled_dot_product_attention(q[:, :, r0:r1].float(), kf, vf,
                                                                            attn_mask=mask)
    assert _rel(out, ref) < 2e-2


def test_sparse_prefill_chunk_matches_cpu_path():
    q, k, v = _qkv(1, 8, 2, 1024, 3072, 64, torch.bfloat16, seed=11)
    args = ([0, 1, 2, 3, 1, 2, 3, 0], [0, 200, 64, 10, 1000, 128, 20, 0], [0, 500, 512, 0, 2000, 1024, 0, 0],
            0.125, 0, 64)
    gpu = sparse_prefill(q, k, v, *args)
    qc, kc, vc = q.cpu().float(), k.cpu().float(), v.cpu().float()
    cpu = sparse_prefill(qc, kc, vc, *args)
    rest = [0, 1, 2, 4, 5, 7]
    assert _rel(gpu[:, rest].cpu(), cpu[:, rest]) < 2e-2
    # below the auto crossover (effective length 2 * 3072 - 1024 = 5K) the layer is dense
    dense = sparse_prefill(q, k, v, *args[:4], -1, 64)
    assert _rel(dense, naive.dense_causal_ref(q, k, v, 0.125)) < 2e-2


def test_chunked_prefill_tiny_llama_gpu():
    from transformers import LlamaConfig, LlamaForCausalLM

    from minference_compile import MInferenceConfig
    from minference_compile.backend import make_backend
    from minference_compile.chunked import chunked_prefill, greedy_continue

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval().cuda().to(torch.bfloat16)
    ids = torch.randint(0, 256, (1, 4096), device="cuda")
    config = MInferenceConfig(default=("vertical_and_slash", 4096, 4096), min_sparse_len=0, vs_max_work=1.0)
    torch._dynamo.reset()
    fwd = torch.compile(model.forward, backend=make_backend(config), dynamic=True)
    cache, logits = chunked_prefill(model, ids, 1024, forward=fwd, max_new_tokens=3)
    cache_e, ref = chunked_prefill(model, ids, 4096)
    assert _rel(logits, ref) < 3e-2
    assert greedy_continue(model, cache, logits, 4, forward=fwd).shape == (1, 4)


def test_prefill_cache_peak_gpu():
    """Compiled (Inductor) chunked pre-fill of a cache-dominated tiny Llama: the PrefillCache's peak above the
    weights stays near 1x the K/V cache; a DynamicCache's is ~2x (NOTES E5/E7). Allocator statistics, not timing."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from minference_compile.chunked import chunked_prefill, kv_cache_bytes

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=16, num_key_value_heads=16, head_dim=128, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval().cuda().to(torch.bfloat16)
    N, chunk = 65536, 2048  # small chunks: the chunk x N mask SDPA gets stays << the cache (2048 / 32768 of it)
    ids = torch.randint(0, 256, (1, N), device="cuda")
    torch._dynamo.reset()
    fwd = torch.compile(model.forward, backend="inductor", dynamic=True)
    cache_bytes = kv_cache_bytes(cfg, N, dtype=torch.bfloat16)
    peaks = {}
    for kind in ("prealloc", "dynamic"):
        chunked_prefill(model, ids[:, :3 * chunk], chunk, kind, forward=fwd)  # compile
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        cache, _ = chunked_prefill(model, ids, chunk, kind, forward=fwd)
        peaks[kind] = (torch.cuda.max_memory_allocated() - base) / cache_bytes
        del cache
    print("peak above the weights, x the K/V cache:", peaks)
    assert peaks["prealloc"] < 1.4 and peaks["prealloc"] < peaks["dynamic"] - 0.4, peaks
