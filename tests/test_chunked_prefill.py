"""minference_compile.chunked on a tiny random Llama (CPU): chunked pre-fill (into its default PrefillCache) equals
one-shot pre-fill, through eager SDPA, through minference::sparse_prefill (registered as a transformers attention function,
so no FX pass is involved), and through a compiled forward; OOM in a chunk names the chunk size to use."""
import pytest
import torch
import transformers

from minference_compile.chunked import (ChunkOutOfMemoryError, check_cache_fits, chunked_prefill, greedy_continue,
                                        kv_cache_bytes)
from minference_compile.ops import library  # noqa: F401  (registers minference::sparse_prefill)

N = 320  # 5 query blocks; chunks of 64 / 128 / 192 end on the 64-row grid with last chunks of >= 64 rows
SMALL = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128)
ROOM = 8  # decode room left in the PrefillCache for greedy_continue
_LAYER = {}  # the sparse_prefill arguments of the "minference_test" attention function


def _sparse_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function -> minference::sparse_prefill; query [B,Hq,Sq,D], key/value [B,Hkv,S,D]."""
    pats, vs, ss = _LAYER["args"]
    out = torch.ops.minference.sparse_prefill(query, key, value, pats, vs, ss, scaling, 0, 64)
    return out.transpose(1, 2).contiguous(), None


transformers.AttentionInterface.register("minference_test", _sparse_attention)


def build(attn="sdpa"):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, attn_implementation=attn)).eval()


def prompt(n=N):
    return torch.randint(0, 128, (1, n), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def one_shot(model, ids):
    cache, logits = chunked_prefill(model, ids, ids.shape[1], max_new_tokens=ROOM)
    return cache, logits


@pytest.mark.parametrize("chunk", [64, 128, 100])
def test_eager_chunked_equals_one_shot(chunk):
    model, ids = build(), prompt()
    cache1, ref = one_shot(model, ids)
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(ref, full, atol=1e-5, rtol=1e-5)
    cache, logits = chunked_prefill(model, ids, chunk, max_new_tokens=ROOM)
    assert cache.get_seq_length() == N
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(greedy_continue(model, cache, logits, 5), greedy_continue(model, cache1, ref, 5))


@pytest.mark.parametrize("chunk", [64, 128, 192])
def test_sparse_chunked_equals_unchunked_sparse(chunk):
    """A-shape heads (element-exact) with the query offset: chunked == unchunked sparse pre-fill; covering VS and BS
    budgets: both == eager dense."""
    model, ids = build("minference_test"), prompt()
    _LAYER["args"] = ([2, 2, 2, 2], [4, 4, 0, 16], [64, 100, 70, 1])
    _, one = one_shot(model, ids)
    _, chunked = chunked_prefill(model, ids, chunk)
    torch.testing.assert_close(chunked, one, atol=1e-4, rtol=1e-4)
    _, dense = one_shot(build(), ids)
    assert not torch.allclose(one, dense, atol=1e-3)  # the A-shape run is really sparse
    _LAYER["args"] = ([1, 3, 1, 3], [N, 8, N, 8], [N, 0, N, 0])
    _, cover = chunked_prefill(model, ids, chunk)
    torch.testing.assert_close(cover, dense, atol=1e-4, rtol=1e-4)
    sparse_model = model
    cache, logits = chunked_prefill(sparse_model, ids, chunk, max_new_tokens=ROOM)
    cache_d, logits_d = one_shot(build(), ids)
    assert torch.equal(greedy_continue(sparse_model, cache, logits, 4), greedy_continue(build(), cache_d, logits_d, 4))


def test_compiled_forward_with_backend():
    """A compiled forward (the minference backend's passes, no Inductor) with covering budgets: chunked logits and
    next tokens equal one-shot eager."""
    from minference_compile.backend import run_passes
    cfg = {"default": ["vertical_and_slash", 4096, 4096], "min_sparse_len": 0}

    def backend(gm, example_inputs):
        run_passes(gm, cfg)
        return gm.forward

    torch._dynamo.reset()
    model, ids = build(), prompt()
    fwd = torch.compile(model.forward, backend=backend, dynamic=True)
    cache, logits = chunked_prefill(model, ids, 128, forward=fwd, max_new_tokens=ROOM)
    cache_e, ref = one_shot(model, ids)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(greedy_continue(model, cache, logits, 4, forward=fwd), greedy_continue(model, cache_e, ref, 4))


def test_prefix_cache_continues():
    model, ids = build(), prompt()
    cache, _ = chunked_prefill(model, ids[:, :192], 64, max_new_tokens=N - 192)
    cache, logits = chunked_prefill(model, ids[:, 192:], 64, cache)
    _, ref = one_shot(model, ids)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_oom_names_chunk_size():
    model, ids = build(), prompt()
    calls = []

    def forward(**kw):
        calls.append(kw["input_ids"].shape[1])
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return model(**kw)

    with pytest.raises(ChunkOutOfMemoryError, match=r"tokens \[128, 256\) of 320 \(chunk_size=128.*chunk_size=64"):
        chunked_prefill(model, ids, 128, forward=forward)
    with pytest.raises(torch.OutOfMemoryError):  # still an OutOfMemoryError for callers that catch that
        calls.clear()
        chunked_prefill(model, ids, 128, forward=forward)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_prefill(model, ids, 0)


def test_kv_cache_bytes_qwen_1m():
    cfg = transformers.Qwen2Config(num_hidden_layers=28, hidden_size=3584, num_attention_heads=28,
                                   num_key_value_heads=4)
    assert kv_cache_bytes(cfg, 1 << 20) == 2 * 28 * 4 * 128 * (1 << 20) * 2  # 56 GiB in bf16


def test_cache_that_cannot_fit_is_reported_up_front():
    model = build()
    need = kv_cache_bytes(model.config, 1000, dtype=torch.float32)  # 2 layers x 2 x 2 heads x 64 x 1000 x 4 B
    check_cache_fits(model, 1000, free_bytes=need)
    check_cache_fits(model, 1000, cached_len=500, free_bytes=need // 2)
    with pytest.raises(ChunkOutOfMemoryError, match="1000 tokens needs .* no chunk size fits"):
        check_cache_fits(model, 1000, free_bytes=need - 1)
