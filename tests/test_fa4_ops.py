"""The [hopper] extra's FA4 path (minference_compile/ops/fa4.py): which calls it takes, and its outputs against the
naive references. On CPU through an emulated flash_attn.cute (tests/fa4_fake.py: the pairs our block lists and
mask_mod allow), so a wrong list, head gather, layout or scale fails here; on an sm90 GPU with flash-attn-4
installed, the real kernels (tests marked gpu)."""
import importlib.util

import pytest
import torch

from test_kernels_triton import CUDA, nan_out  # noqa: F401 (sets TRITON_INTERPRET on CPU before triton is used)

from fa4_fake import emulate_fa4, fake_flash_attn_func
from minference_compile.ops import dense as dense_mod
from minference_compile.ops import fa4
from minference_compile.patterns.a_shape import AShape
from minference_compile.patterns.base import HeadGroup
from minference_compile.patterns.dense import Dense
from minference_compile.triton_kernels import naive

HAS_FA4 = importlib.util.find_spec("flash_attn") is not None
SM90 = CUDA and torch.cuda.get_device_capability()[0] == 9


@pytest.fixture
def emulated(monkeypatch):
    """flash_attn.cute emulated on CPU tensors; returns the list of FA4 calls (kwargs names)."""
    calls = []

    def spy(q, k, v, **kw):
        calls.append((tuple(q.shape), tuple(k.shape), sorted(kw)))
        return fake_flash_attn_func(q, k, v, **kw)
    emulate_fa4(monkeypatch, spy)
    return calls


def qkv(B, Hq, Hkv, S, D, dtype=torch.float32, device="cpu"):
    mk = lambda h: torch.randn(B, h, S, D, device=device).to(dtype)  # noqa: E731
    return mk(Hq), mk(Hkv), mk(Hkv)


def reference(q, k, v, windows, scale):
    """Per head: naive A-shape / causal reference; heads with window None stay NaN."""
    out = torch.full(q.shape, float("nan"))
    S = k.shape[2]
    for h, w in enumerate(windows):
        if w is None:
            continue
        init, local = (S, S) if w == fa4.DENSE else w
        g = q.shape[1] // k.shape[1]
        r = naive.streaming_ref(q[:, h:h + 1].float(), k[:, h // g:h // g + 1].float(), v[:, h // g:h // g + 1].float(),
                                torch.tensor([init]), torch.tensor([local]), scale)
        out[:, h:h + 1] = r
    return out


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
@pytest.mark.parametrize("S", [1, 63, 65, 300])
@pytest.mark.parametrize("Hq,Hkv,D", [(4, 2, 64), (4, 1, 96), (2, 2, 128)])
@pytest.mark.parametrize("chunk", [False, True])
def test_attend_matches_reference(S, Hq, Hkv, D, chunk, emulated):
    """One shot, and a pre-fill chunk (the last S // 3 + 2 positions; its A-shape mask takes the query offset from
    the emulated FA4's run-time lengths, as the real one)."""
    torch.manual_seed(S * 7 + Hq)
    q, k, v = qkv(2, Hq, Hkv, S, D)
    if chunk:
        if S < 8:
            pytest.skip("no chunk of a length this short")
        q = q[:, :, S - (S // 3 + 2):]
    windows = [(4, 64), fa4.DENSE, None, (0, 100)][:Hq]  # two windows, a dense head, a head left alone
    out = nan_out(q)
    fa4.attend(q, k, v, windows, 0.3, out)
    ref = reference(q, k, v, windows, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, equal_nan=True)
    assert len(emulated) == len({fa4._key(w, S) for w in windows if w is not None})  # one call per window


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_chunk_window_is_dense_only_when_it_covers_the_cache():
    """A window wider than the chunk but not the cache stays A-shape (the keys decide, not the queries)."""
    assert fa4._key((4, 200), 300) == (4, 200)
    assert fa4._key((4, 300), 300) == fa4.DENSE


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_all_heads_one_window_use_native_gqa(emulated, caplog, monkeypatch):
    monkeypatch.setattr(fa4, "_announced", set())
    q, k, v = qkv(1, 8, 2, 200, 64)
    with caplog.at_level("INFO", logger="minference_compile"):
        out = fa4.attend(q, k, v, [(16, 64)] * 8, 0.125)
        fa4.attend(q, k, v, [(16, 64)] * 8, 0.125)
    assert sum("A-shape attention runs on FlashAttention-4" in r.getMessage() for r in caplog.records) == 1
    torch.testing.assert_close(out, reference(q, k, v, [(16, 64)] * 8, 0.125), rtol=1e-4, atol=1e-4)
    assert emulated == [((1, 200, 8, 64), (1, 200, 2, 64), ["block_sparse_tensors", "mask_mod", "softmax_scale"])] * 2


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_window_covering_every_key_runs_dense(emulated):
    q, k, v = qkv(1, 2, 2, 100, 64)
    fa4.attend(q, k, v, [(100, 4), (0, 100)], 0.1)
    assert [c[2] for c in emulated] == [["causal", "softmax_scale"]]


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_patterns_route_through_fa4_and_back(emulated, monkeypatch):
    """AShape / Dense attend_cuda take FA4 when it can run, the Triton kernel otherwise (MINFERENCE_FA4=0, a chunk)."""
    q, k, v = qkv(1, 4, 2, 130, 64)
    specs = (AShape(4, 32), None, AShape(4, 32), None)
    group = HeadGroup(q, k, v, 0.2, 64, specs)
    sel = AShape.select(group)
    hm = torch.tensor([True, False, True, False])
    windows = [(4, 32), None, (4, 32), None]
    out = AShape.attend_cuda(group, sel, hm, nan_out(q))
    torch.testing.assert_close(out, reference(q, k, v, windows, 0.2), rtol=1e-4, atol=1e-4, equal_nan=True)
    assert len(emulated) == 1
    dgroup = HeadGroup(q, k, v, 0.2, 64, (None, Dense(), None, Dense()))
    out = Dense.attend_cuda(dgroup, None, ~hm, out)
    torch.testing.assert_close(out, reference(q, k, v, [(4, 32), fa4.DENSE, (4, 32), fa4.DENSE], 0.2),
                               rtol=1e-4, atol=1e-4)
    assert len(emulated) == 2
    chunk = HeadGroup(q[:, :, 100:], k, v, 0.2, 64, specs)  # an A-shape chunk: FA4, the offset from its lengths
    oc = AShape.attend_cuda(chunk, AShape.select(chunk), hm, nan_out(chunk.q))
    assert len(emulated) == 3
    torch.testing.assert_close(oc, reference(chunk.q, k, v, windows, 0.2), rtol=1e-4, atol=1e-4, equal_nan=True)
    emulated.pop()
    dchunk = HeadGroup(q[:, :, 100:], k, v, 0.2, 64, (None, Dense(), None, Dense()))
    o = Dense.attend_cuda(dchunk, None, ~hm, nan_out(dchunk.q))  # a dense chunk: FA4
    assert len(emulated) == 3
    torch.testing.assert_close(o[:, 1::2], naive.dense_causal_ref(q[:, 1::2, 100:], k, v, 0.2), rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("MINFERENCE_FA4", "0")  # the Triton kernel (interpreted on CPU) instead
    out = AShape.attend_cuda(group, sel, hm, nan_out(q))
    torch.testing.assert_close(out, reference(q, k, v, windows, 0.2), rtol=1e-4, atol=1e-4, equal_nan=True)
    assert len(emulated) == 3


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_one_call_returns_fa4_output_in_the_layer_layout(emulated):
    """Without `out`, one FA4 call for every head returns FA4's own [B,S,H,D] output (no copy): the layout
    sparse_prefill promises (ops/layout.py); mixed windows still fill a buffer of q's layout."""
    from minference_compile.ops.layout import layer_out_strides
    q, k, v = qkv(2, 4, 2, 200, 64)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # a compiled model's [B,S,H,D] storage
    out = fa4.attend(q, k, v, [(16, 64)] * 4, 0.2)
    assert out.stride() == layer_out_strides(out.shape) and len(emulated) == 1
    torch.testing.assert_close(out, reference(q, k, v, [(16, 64)] * 4, 0.2), rtol=1e-4, atol=1e-4)
    mixed = [(16, 64), fa4.DENSE, (16, 64), (8, 32)]
    out = fa4.attend(q, k, v, mixed, 0.2)
    assert out.stride() == layer_out_strides(out.shape) and len(emulated) == 4
    torch.testing.assert_close(out, reference(q, k, v, mixed, 0.2), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_dense_attention_uses_fa4_for_one_shot_causal_only(emulated):
    q, k, v = qkv(1, 4, 2, 90, 64)
    out = dense_mod.dense_attention(q, k, v, 0.125)
    torch.testing.assert_close(out, naive.dense_causal_ref(q, k, v, 0.125), rtol=1e-4, atol=1e-4)
    assert len(emulated) == 1 and out.is_contiguous()
    chunk = dense_mod.dense_attention(q[:, :, 60:], k, v, 0.125)  # a chunk: FA4's bottom-right causal mask
    torch.testing.assert_close(chunk, naive.dense_causal_ref(q[:, :, 60:], k, v, 0.125), rtol=1e-4, atol=1e-4)
    assert len(emulated) == 2
    dense_mod.dense_attention(q[:, :, 89:], k, v, 0.125)  # decode: SDPA
    dense_mod.dense_attention(q, k, v, 0.125, keep=torch.ones(1, 90, dtype=torch.bool))  # padding: not FA4
    assert len(emulated) == 2


def test_reason_names_what_blocks_fa4(monkeypatch):
    q, k = torch.zeros(1, 4, 8, 64), torch.zeros(1, 2, 8, 64)
    assert fa4.reason(q, k) == "not a CUDA tensor"
    monkeypatch.setattr(fa4, "_ALLOW_CPU", True)
    monkeypatch.setenv("MINFERENCE_FA4", "0")
    assert fa4.reason(q, k) == "MINFERENCE_FA4=0"
    monkeypatch.delenv("MINFERENCE_FA4")
    assert fa4.reason(torch.zeros(1, 4, 8, 60), torch.zeros(1, 2, 8, 60)) == "head dim 60"
    assert fa4.reason(q[:, :, :4], k) in (None, fa4._import_reason())  # a pre-fill chunk runs
    assert fa4.reason(q[:, :, :1], k) == "a decode step (q_len 1)"  # decode: SDPA
    assert fa4.reason(q, k[:, :, :4]) == "q_len 8 > kv_len 4"
    assert fa4.reason(q, torch.zeros(1, 3, 8, 64)) == "q heads not a multiple of kv heads"
    fa4._import_reason.cache_clear()
    if not HAS_FA4:
        assert "not importable" in fa4.reason(q, k)
    fa4._import_reason.cache_clear()


# ---- the real FA4 on an sm90 GPU (flash-attn-4 installed: the [hopper] extra) ----
needs_fa4 = pytest.mark.skipif(not (SM90 and HAS_FA4), reason="needs an sm90 GPU and flash-attn-4")


@pytest.mark.gpu
@needs_fa4
@pytest.mark.parametrize("S", [1, 63, 65, 1000])
@pytest.mark.parametrize("Hq,Hkv,D", [(4, 2, 64), (4, 1, 96), (2, 2, 128)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["bhsd", "model"])
def test_fa4_gpu_matches_reference(S, Hq, Hkv, D, dtype, layout):
    torch.manual_seed(S + D)
    q, k, v = qkv(2, Hq, Hkv, S, D, dtype, "cuda")
    if layout == "model":  # q a view of [B,S,H,D], k/v narrowed views of a longer cache: FA4 reads them uncopied
        from test_vs_tiled import model_layout
        q, k, v = model_layout(q, k, v)
    assert fa4.reason(q, k) is None, fa4.reason(q, k)
    windows = [(4, 64), fa4.DENSE, None, (0, 100)][:Hq]
    out = torch.full_like(q, float("nan"))
    fa4.attend(q, k, v, windows, D ** -0.5, out)
    ref = reference(q.cpu(), k.cpu(), v.cpu(), windows, D ** -0.5)
    torch.testing.assert_close(out.float().cpu(), ref, rtol=2e-2, atol=2e-2, equal_nan=True)
    for q_len in [S] + ([S // 3] if S // 3 > 1 else []):  # one shot, and a pre-fill chunk (the last q_len positions)
        qc = q[:, :, S - q_len:]
        if q_len < S:
            assert fa4.reason(qc, k) is None
        d = fa4.dense_causal(qc, k, v, D ** -0.5)
        ref_d = naive.dense_causal_ref(qc.float(), k.float(), v.float(), D ** -0.5)
        torch.testing.assert_close(d.float(), ref_d, rtol=2e-2, atol=2e-2)
        if q_len < S:  # A-shape on a chunk: one compiled chunk mask, its offset read at run time
            oc = torch.full_like(qc, float("nan"))
            fa4.attend(qc, k, v, windows, D ** -0.5, oc)
            ref_c = reference(qc.cpu(), k.cpu(), v.cpu(), windows, D ** -0.5)
            torch.testing.assert_close(oc.float().cpu(), ref_c, rtol=2e-2, atol=2e-2, equal_nan=True)


@pytest.mark.gpu
@needs_fa4
def test_fa4_gpu_sparse_prefill_equals_triton(monkeypatch):
    """The registered op on an A-shape + dense layer: FA4 on and off (Triton) agree within bf16 tolerance."""
    torch.manual_seed(0)
    q, k, v = qkv(1, 8, 2, 4096, 128, torch.bfloat16, "cuda")
    patterns, vs, ss = [2] * 6 + [0] * 2, [64] * 6 + [0] * 2, [512] * 6 + [0] * 2
    on = torch.ops.minference.sparse_prefill(q, k, v, patterns, vs, ss, 128 ** -0.5, 0, 64)
    monkeypatch.setenv("MINFERENCE_FA4", "0")
    off = torch.ops.minference.sparse_prefill(q, k, v, patterns, vs, ss, 128 ** -0.5, 0, 64)
    torch.testing.assert_close(on.float(), off.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(CUDA, reason="emulated FA4 on CPU tensors")
def test_runtime_record_names_fa4_when_it_ran(emulated, monkeypatch):
    """runtime_stats() says which layers FA4 ran (sparse A-shape or dense), and only those."""
    import minference_compile.ops  # noqa: F401 (registers torch.ops.minference)
    from minference_compile.ops.record import RECORD, runtime_stats
    q, k, v = qkv(1, 4, 2, 130, 64)
    op = torch.ops.minference.sparse_prefill
    RECORD.reset()
    op(q, k, v, [2] * 4, [4] * 4, [32] * 4, 0.2, 10**6, 64, 1.0, 0)  # below min_sparse_len: dense, on FA4
    monkeypatch.setattr(AShape, "attend", classmethod(lambda cls, g, s, hm, out: cls.attend_cuda(g, s, hm, out)))
    out = op(q, k, v, [2] * 4, [4] * 4, [32] * 4, 0.2, 0, 64, 1.0, 1)  # sparse A-shape heads, on FA4
    torch.testing.assert_close(out, reference(q, k, v, [(4, 32)] * 4, 0.2), rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("MINFERENCE_FA4", "0")
    op(q, k, v, [2] * 4, [4] * 4, [32] * 4, 0.2, 0, 64, 1.0, 2)  # the Triton kernel: no FA4 mark
    stats = runtime_stats()
    (ran0, why0), = stats[0]
    (ran1, why1), = stats[1]
    (ran2, why2), = stats[2]
    assert ran0 == "dense" and why0.endswith("[FlashAttention-4]")
    assert ran1 == "sparse" and why1.endswith("[FlashAttention-4]")
    assert ran2 == "sparse" and "FlashAttention-4" not in why2
    assert len(emulated) == 2
    RECORD.reset()


@pytest.mark.skipif(CUDA, reason="the sm90 / FA4 presence is faked: CPU only")
def test_explain_names_what_runs_on_fa4(emulated, monkeypatch):
    """explain(length=, device="cuda") on a machine with the [hopper] path names the heads FA4 runs, by the ops'
    rules: vertical-slash only as whole layers at D >= 128 (MINFERENCE_FA4_VS), A-shape and dense heads, the dense
    fallback; nothing when FA4 is off."""
    import transformers

    import minference_compile
    monkeypatch.setattr(fa4, "_sm90_here", lambda: True)
    monkeypatch.delenv("MINFERENCE_FA4_VS", raising=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=256, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, attn_implementation="sdpa")).eval()  # head dim 128

    def at(cfg, length=4096, device="cuda"):
        rep = minference_compile.explain(model, config={**cfg, "min_sparse_len": 1024}, length=length, device=device)
        return rep.at(rep.rows[0])
    vs = {"default": ["vertical_and_slash", 100, 800]}
    assert "[FlashAttention-4: vertical-slash on 128-row tiles" in at(vs)
    # (100, 800) over 512K keys: 0.20 slashes per 128-key band, the Triton kernel's (fa4.VS_MIN_BAND_DENSITY)
    assert at(vs, 1 << 19).startswith("sparse: ") and "FlashAttention-4" not in at(vs, 1 << 19)
    assert at(vs, 512).startswith("dense: ") and "[FlashAttention-4: dense causal]" in at(vs, 512)
    mixed = {"layers": [{"0": ["vertical_and_slash", 100, 800], "1": ["dense", 0, 0]}]}
    assert "[FlashAttention-4: dense heads]" in at(mixed)  # VS heads with a head mask stay on Triton
    assert "FlashAttention-4" not in at(vs, device="cpu")
    assert "[FlashAttention-4: A-shape]" in at({"default": ["stream_llm", 64, 512]})
    assert "[FlashAttention-4: block-sparse 128]" in at({"default": ["block_sparse_128", 2, 0]})
    monkeypatch.setenv("MINFERENCE_FA4_BS128", "0")
    assert "FlashAttention-4" not in at({"default": ["block_sparse_128", 2, 0]})
    monkeypatch.delenv("MINFERENCE_FA4_BS128")
    # the auto length rule follows the route: seed budgets on FA4 tiles from 64K, on Triton from 128K
    seed = {"default": ["vertical_and_slash", 1000, 6096]}
    auto = minference_compile.explain(model, config=seed, length=65536, device="cuda")
    assert auto.at(auto.rows[0]).startswith("sparse: ")
    monkeypatch.setenv("MINFERENCE_FA4_VS", "0")
    assert "FlashAttention-4" not in at(vs)
    auto = minference_compile.explain(model, config=seed, length=65536, device="cuda")
    assert auto.at(auto.rows[0]).startswith("dense: ") and "131072" in auto.at(auto.rows[0])
    monkeypatch.setenv("MINFERENCE_FA4", "0")
    assert "FlashAttention-4" not in at({"default": ["stream_llm", 64, 512]})
