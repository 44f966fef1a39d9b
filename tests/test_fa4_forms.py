"""Vertical-slash on FA4 tiles (the [hopper] default at head dim >= 128) through the call forms users write, on a
tiny Llama with head dim 128: compiled forward with and without the cache, attention_mask, position_ids, batch 2,
dynamic=True, generate, and generate's own chunked pre-fill; A-shape on FA4 (one-shot forms and pre-fill chunks)
against the Triton streaming kernel in the same compiled graphs.

Two modes: "gpu" (bf16, an sm90 GPU with flash-attn-4; skipped elsewhere) and "emulated" (CPU, fp32: the CUDA
dispatch of the vertical-slash pattern taken on CPU tensors, the tile lists and columns pass under the Triton
interpreter, FA4 emulated by tests/fa4_fake.py), which checks our plumbing inside a compiled model on every CI run.
Budgets cover every key, so the tiled pattern computes every causal pair and the logits must match eager SDPA;
every form must have run the FA4 vertical-slash path (fa4.CALLS) and no layer dense.
"""
import importlib.util

import pytest
import torch

from test_kernels_triton import CUDA, SLOW_ON_CPU  # (sets TRITON_INTERPRET on CPU before triton is used)

import minference_compile
from fa4_fake import emulate_fa4
from minference_compile import reset_runtime_stats, runtime_stats
from minference_compile.ops import fa4
from minference_compile.patterns import vertical_slash as vs_mod
from minference_compile.patterns.a_shape import AShape

GPU_OK = CUDA and torch.cuda.get_device_capability()[0] == 9 and importlib.util.find_spec("flash_attn") is not None
COVER = {"default": ["vertical_and_slash", 4096, 4096], "min_sparse_len": 0, "vs_max_work": 1.0}
# (prompt length, generate's prefill_chunk_size: every chunk >= 64 rows, the sparse op's minimum), rel. tolerance
SETUP = {"gpu": (1000, 384, 3e-2), "emulated": (320, 128, 1e-3)}


@pytest.fixture(params=["emulated", "gpu"])
def mode(request, monkeypatch):
    if request.param == "gpu" and not GPU_OK:
        pytest.skip("needs an sm90 GPU and flash-attn-4")
    if request.param == "emulated":
        if CUDA:
            pytest.skip("emulated FA4 on CPU tensors")
        emulate_fa4(monkeypatch)
        monkeypatch.setenv("MINFERENCE_FA4_VS", "1")  # CPU: no sm90 check; fp32 passes the emulation

        def attend(cls, group, selection, head_mask, out):  # the CUDA dispatch, with the index the CUDA select builds
            index = vs_mod.build_index(group.q, group.k, selection.vertical, selection.slash)
            return cls.attend_cuda(group, selection._replace(index=index), head_mask, out)
        monkeypatch.setattr(vs_mod.VerticalSlash, "attend", classmethod(attend))
        monkeypatch.setattr(AShape, "attend", classmethod(lambda cls, *a: cls.attend_cuda(*a)))
    else:
        monkeypatch.delenv("MINFERENCE_FA4_VS", raising=False)
        monkeypatch.delenv("MINFERENCE_FA4", raising=False)
    torch._dynamo.reset()
    reset_runtime_stats()
    yield request.param
    torch._dynamo.reset()


def llama(mode):
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model.cuda().to(torch.bfloat16) if mode == "gpu" else model


def ids(mode, batch=1):
    n = SETUP[mode][0]
    return torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(1)).to(
        "cuda" if mode == "gpu" else "cpu")


def rel(a, b):
    assert not torch.isnan(a).any()
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def vs_calls() -> int:
    return fa4.CALLS["vertical-slash"]


def ran(kind: str) -> int:
    return sum(n for per in runtime_stats().values() for (r, _), n in per.items() if r == kind)


FORMS = {
    "cache": lambda x: {"input_ids": x},
    "no_cache": lambda x: {"input_ids": x, "use_cache": False},
    "cache+mask": lambda x: {"input_ids": x, "attention_mask": torch.ones_like(x)},
    "no_cache+position_ids": lambda x: {"input_ids": x, "use_cache": False,
                                        "position_ids": torch.arange(x.shape[1], device=x.device)[None] + 5},
}


# CI time: on a CPU machine the default run keeps the forms whose op calls differ most (cache, batch 2 with a mask,
# A-shape with the cache); the others are -m slow there (all of them are in test_call_forms on the Triton path, and
# the GPU machine runs every one in both modes)


def _vs_forms():
    keep = {("cache", 1, False), ("cache+mask", 2, False)}
    combos = [(f, 1, False) for f in FORMS] + [("cache+mask", 2, False), ("cache", 1, True)]
    return [pytest.param(*c, marks=[] if c in keep else SLOW_ON_CPU) for c in combos]


@pytest.mark.gpu
@pytest.mark.parametrize("form,batch,dynamic", _vs_forms())
def test_forms_run_vs_on_fa4_and_match_eager(mode, form, batch, dynamic):
    model = llama(mode)
    kw = FORMS[form](ids(mode, batch))
    with torch.no_grad():
        ref = model(**kw).logits
        minference_compile.compile(model, COVER, dynamic=dynamic)
        before = vs_calls()
        out = model(**kw).logits
    assert vs_calls() - before == 2, (fa4.CALLS, runtime_stats())  # both layers, one FA4 call each
    assert ran("sparse") == 2 and ran("dense") == 0, runtime_stats()
    assert all("FlashAttention-4" in why for per in runtime_stats().values() for (_, why) in per), runtime_stats()
    assert rel(out, ref) < SETUP[mode][2]


@pytest.mark.gpu
def test_generate_and_its_prefill_chunks_run_vs_on_fa4(mode):
    model = llama(mode)
    x = ids(mode)
    n, chunk, tol = SETUP[mode]
    kw = dict(max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        ref = model.generate(x, **kw)
        minference_compile.compile(model, COVER)
        before = vs_calls()
        out = model.generate(x, **kw)
        assert vs_calls() - before == 2 and ran("sparse") == 2, (fa4.CALLS, runtime_stats())
        assert rel(out.scores[0], ref.scores[0]) < tol  # the pre-fill's logits
        reset_runtime_stats()
        before = vs_calls()
        chunked = model.generate(x, prefill_chunk_size=chunk, **kw)
    # every chunk (the later ones over the cached prefix, with their query offset) sparse on FA4 tiles
    n_chunks = -(-n // chunk)
    assert vs_calls() - before == 2 * n_chunks and ran("sparse") == 2 * n_chunks, (fa4.CALLS, runtime_stats())
    assert rel(chunked.scores[0], ref.scores[0]) < tol



@pytest.mark.gpu
def test_chunked_prefill_on_prefill_cache_runs_vs_on_fa4(mode):
    """chunked_prefill's default PrefillCache: every chunk's K/V are narrowed views of the preallocated buffers, which
    FA4 reads uncopied; each chunk runs sparse on FA4 tiles with its query offset."""
    from minference_compile.chunked import chunked_prefill
    model = llama(mode)
    x = ids(mode)
    n, chunk, tol = SETUP[mode]
    with torch.no_grad():
        ref = model(input_ids=x).logits[:, -1]
        minference_compile.compile(model, COVER, dynamic=True)
        before = vs_calls()
        _, last = chunked_prefill(model, x, chunk)
    n_chunks = -(-n // chunk)
    assert vs_calls() - before == 2 * n_chunks and ran("sparse") == 2 * n_chunks, (fa4.CALLS, runtime_stats())
    assert rel(last, ref) < tol


ASHAPE = {"default": ["stream_llm", 64, 128], "min_sparse_len": 0}


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["cache"] + [pytest.param(f, marks=SLOW_ON_CPU) for f in ("no_cache", "cache+mask")])
def test_ashape_forms_run_on_fa4_and_match_the_triton_kernel(mode, form, monkeypatch):
    model = llama(mode)
    kw = FORMS[form](ids(mode))
    tol = SETUP[mode][2]
    with torch.no_grad():
        eager = model(**kw).logits
        minference_compile.compile(model, ASHAPE)
        before = fa4.CALLS["A-shape"]
        out = model(**kw).logits
        assert fa4.CALLS["A-shape"] - before == 2, (fa4.CALLS, runtime_stats())
        monkeypatch.setenv("MINFERENCE_FA4", "0")  # read per call: the same graphs, the op's Triton kernel
        triton = model(**kw).logits
    assert fa4.CALLS["A-shape"] - before == 2 and ran("sparse") == 4 and ran("dense") == 0, runtime_stats()
    assert rel(out, triton) < tol
    if mode == "emulated":  # fp32: the window (64 + 128 of 320 keys) visibly changes the logits, so it ran
        assert rel(out, eager) > 20 * tol


@pytest.mark.gpu
def test_ashape_prefill_chunks_run_on_fa4_and_match_the_triton_kernel(mode, monkeypatch):
    """chunked_prefill on the PrefillCache with A-shape: the first chunk one shot, the later ones over the cached
    prefix with the chunk mask_mod (query offset from FA4's run-time lengths); every chunk of both layers on FA4,
    and the same graphs with MINFERENCE_FA4=0 (the Triton streaming kernel's chunk path) agree."""
    from minference_compile.chunked import chunked_prefill
    model = llama(mode)
    x = ids(mode)
    n, chunk, tol = SETUP[mode]
    calls = lambda: fa4.CALLS["A-shape"] + fa4.CALLS["dense causal"]  # noqa: E731
    with torch.no_grad():
        minference_compile.compile(model, ASHAPE)
        before, before_a = calls(), fa4.CALLS["A-shape"]
        _, last = chunked_prefill(model, x, chunk)
        n_chunks = -(-n // chunk)
        # a first chunk inside the local window (128 >= chunk: emulated) runs FA4 dense causal; the rest A-shape
        assert calls() - before == 2 * n_chunks, (fa4.CALLS, runtime_stats())
        assert fa4.CALLS["A-shape"] - before_a == 2 * (n_chunks - (chunk <= 128)), fa4.CALLS
        monkeypatch.setenv("MINFERENCE_FA4", "0")
        _, triton = chunked_prefill(model, x, chunk)
        one_shot = model(x).logits[:, -1]
    assert calls() - before == 2 * n_chunks and ran("dense") == 0, runtime_stats()
    assert rel(last, triton) < tol
    assert rel(last, one_shot) < tol  # chunked and one-shot A-shape: the same absolute pattern


@pytest.mark.gpu
def test_pipeline_runs_vs_on_fa4(mode):
    import transformers

    from test_call_forms import _tokenizer
    model = llama(mode)
    prompt = " ".join(f"w{(7 * i) % 120 + 2}" for i in range(SETUP[mode][0]))
    gen = transformers.pipeline("text-generation", model=model, tokenizer=_tokenizer())
    ref = gen(prompt, max_new_tokens=3, do_sample=False)[0]["generated_text"]
    minference_compile.compile(model, COVER)
    before = vs_calls()
    out = gen(prompt, max_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert vs_calls() - before == 2 and ran("sparse") == 2, (fa4.CALLS, runtime_stats())
    if mode == "emulated":  # fp32, every pair computed: the same tokens (bf16 on the GPU may break a near tie)
        assert out == ref
