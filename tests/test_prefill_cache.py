"""PrefillCache (minference_compile/prefill_cache.py) on tiny random Llama / Qwen2 decoders (CPU): the same logits
and tokens as a DynamicCache (eager, and compiled through our backend with covering budgets), the sparse op on every
chunk, <= 2 compilations over many chunks, K/V written in place (no second buffer in Inductor's code), capacity
errors, and transformers' generate(prefill_chunk_size=N) with a user PrefillCache."""
import re

import pytest
import torch
import transformers
from torch._dynamo.utils import counters

from test_kernels_triton import SLOW_ON_CPU  # (sets TRITON_INTERPRET on CPU before triton is used)

import minference_compile
from minference_compile import reset_runtime_stats, runtime_stats
from minference_compile.chunked import cache_kwarg, chunked_prefill, greedy_continue
from minference_compile.prefill_cache import CacheCapacityError, PrefillCache

# Budgets >= the prompt for every pattern: sparse == dense causal (as tests/test_call_forms.py)
COVER = {"layers": [{"0": ["vertical_and_slash", 4096, 4096, 1], "1": ["stream_llm", 4096, 4096, 1],
                     "2": ["block_sparse", 64, 0, 1]}], "default": ["stream_llm", 4096, 4096],
         "min_sparse_len": 0, "allow_layer_mismatch": True}
SMALL = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, attn_implementation="sdpa")


def build(arch="llama"):
    torch.manual_seed(0)
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SMALL)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).eval()


def prompt(batch, n, seed=1):
    return torch.randint(1, 128, (batch, n), generator=torch.Generator().manual_seed(seed))


def sparse_calls():
    return sum(n for per in runtime_stats().values() for (ran, _), n in per.items() if ran == "sparse")


@pytest.fixture
def fresh():
    torch._dynamo.reset()
    reset_runtime_stats()
    yield
    torch._dynamo.reset()


def shares_buffer(cache):
    return all(layer.keys.untyped_storage().data_ptr() == layer.key_buffer.untyped_storage().data_ptr()
               and layer.values.untyped_storage().data_ptr() == layer.value_buffer.untyped_storage().data_ptr()
               for layer in cache.layers)


@pytest.mark.parametrize("arch,batch,chunk", [("llama", 2, 64), ("qwen2", 2, 100), ("llama", 1, 96)])
def test_eager_equals_dynamic_cache(arch, batch, chunk):
    model, ids = build(arch), prompt(batch, 330)
    dyn, ref = chunked_prefill(model, ids, chunk, "dynamic")
    cache, logits = chunked_prefill(model, ids, chunk, max_new_tokens=5)
    assert isinstance(cache, PrefillCache) and cache.get_seq_length() == 330 and shares_buffer(cache)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    for layer, d in zip(cache.layers, dyn.layers):
        torch.testing.assert_close(layer.keys, d.keys)
        torch.testing.assert_close(layer.values, d.values)
    assert torch.equal(greedy_continue(model, cache, logits, 6), greedy_continue(model, dyn, ref, 6))
    assert cache.get_seq_length() == 335 and shares_buffer(cache)


def test_sliding_window_layers_keep_the_prefix():
    """Qwen2 with a 64-token sliding window in its last layer: the PrefillCache keeps every token (the mask applies
    the window), a DynamicCache trims to the window; same logits and tokens."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=64, max_window_layers=1)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    ids = prompt(2, 300)
    dyn, ref = chunked_prefill(model, ids, 96, "dynamic")
    cache, logits = chunked_prefill(model, ids, 96, max_new_tokens=3)
    assert cache.layers[1].keys.shape[2] == 300
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(greedy_continue(model, cache, logits, 4), greedy_continue(model, dyn, ref, 4))


def test_prefix_continues():
    model, ids = build(), prompt(1, 320)
    cache, _ = chunked_prefill(model, ids[:, :192], 64, max_new_tokens=128)
    cache, logits = chunked_prefill(model, ids[:, 192:], 64, cache)
    _, ref = chunked_prefill(model, ids, 320, "dynamic")
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


# CI time: the 40 s llama case runs with -m slow on a CPU machine (always on a GPU one)
@pytest.mark.parametrize("arch,batch", [pytest.param("llama", 2, marks=SLOW_ON_CPU), ("qwen2", 1)])
def test_compiled_equals_dynamic_sparse_every_chunk_two_graphs(fresh, arch, batch):
    """Our backend (passes + Inductor), dynamic=True, 7 chunks: <= 2 compilations, the sparse op in every layer of
    every chunk, logits and tokens equal to the DynamicCache's (covering budgets: sparse == dense)."""
    model, ids = build(arch), prompt(batch, 6 * 96 + 80)  # a last chunk of >= 64 rows (shorter tails run dense)
    _, ref = chunked_prefill(model, ids, 96, "dynamic")
    cache_e, _ = chunked_prefill(model, ids, 96, "dynamic")
    want = greedy_continue(model, cache_e, ref, 4)
    minference_compile.compile(model, COVER, dynamic=True)
    counters.clear()
    cache, logits = chunked_prefill(model, ids, 96, max_new_tokens=3)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    assert sparse_calls() == 7 * 2, runtime_stats()
    assert shares_buffer(cache)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(greedy_continue(model, cache, logits, 4), want)


@pytest.mark.parametrize("chunk,batch,room", [(64, 1, 0), (96, 2, 3), (128, 1, 0)])
def test_one_graph_for_every_later_chunk(fresh, chunk, batch, room):
    """Plain Dynamo (backend="eager"), dynamic=True, 7 chunks (a shorter last one), the buffer filled exactly
    (room 0) or not: 2 graphs (the first chunk, then every later one). Without chunked_prefill's mark_dynamic the
    filled length is duck-sized with the chunk length at the second chunk and the third compiles again."""
    model, ids = build(), prompt(batch, 6 * chunk + 10)
    fwd = torch.compile(model.forward, backend="eager", dynamic=True)
    counters.clear()
    cache, logits = chunked_prefill(model, ids, chunk, forward=fwd, max_new_tokens=room)
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    _, ref = chunked_prefill(model, ids, chunk, "dynamic")
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_inductor_writes_the_buffers_in_place(fresh):
    """Inductor reinplaces the functionalised copy: a later chunk's code writes into the K/V buffer inputs and
    allocates nothing of the buffers' (capacity) length; the buffers keep their storage across chunks."""
    from torch._inductor.utils import run_and_get_code
    model, ids = build(), prompt(1, 4 * 96)
    fwd = torch.compile(model.forward, backend="inductor", dynamic=True)
    cache = PrefillCache(1000, config=model.config)
    chunked_prefill(model, ids[:, :96], 96, cache, forward=fwd)
    ptrs = [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in cache.layers]
    _, codes = run_and_get_code(lambda: chunked_prefill(model, ids[:, 96:192], 96, cache, forward=fwd))
    chunked_prefill(model, ids[:, 192:], 96, cache, forward=fwd)
    assert [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in cache.layers] == ptrs
    assert shares_buffer(cache) and cache.get_seq_length() == 4 * 96
    code = "\n".join(codes)
    # the buffers are the four [1, 2, capacity, 64] inputs (K and V of 2 layers); no allocation has their length
    caps = set(re.findall(r"assert_size_stride\(arg\d+_1, \(1, 2, (s\d+), 64\)", code))
    assert len(caps) == 4, caps
    allocs = re.findall(r"empty_strided_\w+\(\(([^)]*)\)", code)
    assert allocs and not [a for a in allocs if set(re.findall(r"s\d+", a)) & caps], allocs
    ref, _ = chunked_prefill(model, ids, 4 * 96, "dynamic")
    for layer, d in zip(cache.layers, ref.layers):
        torch.testing.assert_close(layer.keys, d.keys, atol=1e-5, rtol=1e-5)


def test_capacity_errors():
    model, ids = build(), prompt(1, 130)
    cache = PrefillCache(129, config=model.config)
    with pytest.raises(CacheCapacityError, match="capacity 129 is too small for 130 tokens"):
        chunked_prefill(model, ids, 64, cache)  # before the first chunk
    assert cache.get_seq_length() == 0
    cache, logits = chunked_prefill(model, ids, 64, max_new_tokens=2)
    with pytest.raises(CacheCapacityError, match="capacity 132 is too small for 133 tokens"):
        greedy_continue(model, cache, logits, 4)  # 3 decode writes, room for 2: refused before the first
    assert cache.get_seq_length() == 130
    greedy_continue(model, cache, logits, 3)
    with pytest.raises(CacheCapacityError, match=r"capacity 132 exceeded: 132 tokens cached \+ 1 new = 133"):
        model(input_ids=ids[:, :1], position_ids=torch.tensor([[132]]), **{cache_kwarg(model): cache})
    assert cache.get_seq_length() == 132  # nothing written
    with pytest.raises(ValueError, match="cache must be"):
        chunked_prefill(model, ids, 64, "static")


def test_crop_and_reset():
    model, ids = build(), prompt(1, 200)
    cache, _ = chunked_prefill(model, ids[:, :150], 64, max_new_tokens=50)
    cache.crop(-50)
    assert cache.get_seq_length() == 100 and cache.layers[0].keys.shape[2] == 100
    _, logits = chunked_prefill(model, ids[:, 100:], 64, cache)
    _, ref = chunked_prefill(model, ids, 200, "dynamic")
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    cache.reset()
    assert cache.get_seq_length() == 0


@pytest.mark.parametrize("compiled", [False, True])
def test_generate_with_user_prefill_cache(fresh, compiled):
    """The documented recipe: model.generate(ids, prefill_chunk_size=N, past_key_values=PrefillCache(...))."""
    model, ids = build(), prompt(1, 192, seed=3)
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=4, do_sample=False)
        if compiled:
            minference_compile.compile(model, COVER, dynamic=True)
        cache = PrefillCache(192 + 4, config=model.config)
        out = model.generate(ids, max_new_tokens=4, do_sample=False, prefill_chunk_size=64, past_key_values=cache)
    assert torch.equal(out, ref)
    assert cache.get_seq_length() == 192 + 3 and shares_buffer(cache)
    if compiled:
        assert sparse_calls() == 3 * 2, runtime_stats()  # 3 chunks x 2 layers
