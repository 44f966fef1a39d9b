"""The FX pass on small hand-written Dynamo graphs (no model, no Inductor)."""
import logging

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F

from minference_compile.config import ConfigError, MInferenceConfig
from minference_compile.passes import SDPA_TARGETS, MInferenceSDPAPass, layer_from_stack

COVER = {"layers": [], "default": ["vertical_and_slash", 4096, 4096], "min_sparse_len": 0}


def capture(fn, *args, config=COVER):
    """Run ``fn`` under Dynamo with the pass (no Inductor); returns (output, matches, graphs)."""
    matches, graphs = [], []

    def backend(gm, example_inputs):
        matches.extend(MInferenceSDPAPass(config)(gm.graph))
        gm.recompile()
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return out, matches, graphs


def qkv(S=32, hq=4, hkv=2, d=64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, hq, S, d, generator=g), torch.randn(1, hkv, S, d, generator=g),
            torch.randn(1, hkv, S, d, generator=g))


def sdpa_nodes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in SDPA_TARGETS]


def hf_mask(S, window=None, pad=None):
    """The boolean mask transformers' sdpa_mask builds (non-vmap path)."""
    q_idx = (torch.arange(S) + 0)[None, None, :, None]
    kv_idx = (torch.arange(S) + 0)[None, None, None, :]
    res = q_idx.new_ones((), dtype=torch.bool)
    if window is not None:
        res = res & (kv_idx > q_idx - window).to(res.device)
    res = res & (kv_idx <= q_idx).to(res.device)
    if pad is not None:
        b_idx = torch.arange(1)[:, None, None, None]
        res = res & pad.to(dtype=torch.bool)[b_idx, kv_idx].to(res.device)
    return res.expand(1, -1, S, S)


def test_is_causal_form_rewritten_with_order_layer():
    q, k, v = qkv()
    out, m, (gm,) = capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), q, k, v)
    assert [x.rewritten for x in m] == [True] and m[0].reason == "is_causal"
    assert m[0].layer == 0 and m[0].layer_source == "order" and (m[0].q_heads, m[0].kv_heads) == (4, 2)
    assert not sdpa_nodes(gm)
    new = [n for n in gm.graph.nodes if n.target is torch.ops.minference.sparse_prefill.default]
    assert len(new) == 1 and new[0].meta["minference"] is m[0]
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _repeat(x, n):
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, n, s, d).reshape(b, h * n, s, d)


@pytest.mark.parametrize("with_pad", [False, True])
def test_mask_form_proved_and_mask_removed(with_pad):
    q, k, v = qkv()
    pad = torch.ones(1, 32, dtype=torch.long)

    def fn(q, k, v, pad):
        mask = hf_mask(q.shape[2], pad=pad if with_pad else None)
        return F.scaled_dot_product_attention(q, _repeat(k, 2), _repeat(v, 2), attn_mask=mask, is_causal=False)

    out, m, (gm,) = capture(fn, q, k, v, pad)
    assert m[0].rewritten and m[0].reason == ("causal+padding mask" if with_pad else "causal mask")
    targets = {n.target for n in gm.graph.nodes if n.op != "placeholder"}
    assert torch.arange not in targets and "expand" not in targets and "le" not in str(gm.code)
    op = torch.ops.minference.sparse_prefill_masked.default if with_pad else torch.ops.minference.sparse_prefill.default
    (new,) = [n for n in gm.graph.nodes if n.target is op]
    assert new.args[1].op == "placeholder" and new.args[2].op == "placeholder"  # un-repeated K/V
    torch.testing.assert_close(out, fn(q, k, v, pad), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda S: torch.ones(1, 1, S, S, dtype=torch.bool), "causal"),
        (lambda S: torch.zeros(1, 1, S, S).masked_fill(~hf_mask(S), float("-inf")), "float/additive"),
    ],
)
def test_unprovable_masks_stay_dense(make, reason):
    q, k, v = qkv()
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=make(q.shape[2]), enable_gqa=True)
    out, m, (gm,) = capture(fn, q, k, v)
    assert not m[0].rewritten and reason in m[0].reason, m[0].reason
    assert len(sdpa_nodes(gm)) == 1 and sdpa_nodes(gm)[0].meta["minference"] is m[0]
    torch.testing.assert_close(out, fn(q, k, v))


def test_bidirectional_starting_layer_and_head_dim_stay_dense():
    q, k, v = qkv()
    _, m, _ = capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), q, k, v)
    assert not m[0].rewritten and "bidirectional" in m[0].reason
    causal = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    _, m, _ = capture(causal, q, k, v, config={**COVER, "starting_layer": 1})
    assert not m[0].rewritten and "starting_layer" in m[0].reason
    _, m, _ = capture(causal, *qkv(d=16))
    assert not m[0].rewritten and "head_dim 16" in m[0].reason


def test_config_head_out_of_range_names_layer_and_head():
    cfg = MInferenceConfig.from_dict([{"7": ["stream_llm", 4, 4, 0]}], source="my.json")
    with pytest.raises(Exception, match=r"ConfigError: my.json, layer 0, head 7"):  # Dynamo wraps backend errors
        capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), *qkv(),
                config=cfg)


def test_per_head_config_reaches_the_op():
    cfg = MInferenceConfig.from_dict([{"1": ["stream_llm", 4, 8, 0], "2": ["block_sparse", 3, 0, 0]}], min_sparse_len=0)
    _, m, (gm,) = capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                          *qkv(), config=cfg)
    (new,) = [n for n in gm.graph.nodes if n.target is torch.ops.minference.sparse_prefill.default]
    assert new.args[3:] == ([1, 2, 3, 1], [1000, 4, 3, 1000], [6096, 8, 0, 6096], 0.125, 0, 64, 0.55, 0, 1)
    assert m[0].patterns == ("vertical_and_slash", "stream_llm", "block_sparse", "vertical_and_slash")


@pytest.mark.parametrize(
    "path, key, layer",
    [
        ("model.layers.3.self_attn", "k", 3),
        ("L['self'].model.layers[3].self_attn", "k", 3),
        ("L['args'][0].model.layers.11.self_attn", "k", 11),
        ("L__self___model_layers_5_self_attn", "L__self___model_layers_5_self_attn", 5),
        ("L['self'].attn", "k", None),
    ],
)
def test_layer_from_stack(path, key, layer):
    g = fx.Graph()
    n = g.placeholder("x")
    n.meta["nn_module_stack"] = {"outer": ("L['self'].model", object), key: (path, object)}
    assert layer_from_stack(n)[0] == layer


def test_logs_counts(caplog):
    with caplog.at_level(logging.INFO, logger="minference_compile"):
        capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), *qkv())
    assert "1 SDPA nodes, 1 rewritten, 0 dense" in caplog.text


@pytest.mark.parametrize("S", [8, 40])
def test_sliding_window_mask_runs_exact_local_attention(S):
    """kv > q - W AND kv <= q -> minference::local_attention (A-shape init 0, local W); the mask is gone."""
    q, k, v = qkv(S=S)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, _repeat(k, 2), _repeat(v, 2), attn_mask=hf_mask(q.shape[2], window=8))
    out, m, (gm,) = capture(fn, q, k, v)
    assert m[0].rewritten and m[0].window == 8 and m[0].op == "local_attention", m[0]
    assert not sdpa_nodes(gm) and "le" not in str(gm.code) and torch.arange not in {n.target for n in gm.graph.nodes}
    assert m[0].at_length(4) == "dense: sliding window 8 >= length"
    assert m[0].at_length(4096).startswith("sparse: A-shape 0 + 8")
    torch.testing.assert_close(out, fn(q, k, v), atol=1e-5, rtol=1e-5)


def _packed_mask(pos):
    """transformers' no-cache mask: positions compared, AND packed-sequence ids (masking_utils, non-vmap)."""
    S = pos.shape[1]
    first = pos[:, :1] - 1
    seg = torch.diff(pos, prepend=first, dim=-1).ne(1).cumsum(-1)
    pos_e = pos.expand(1, -1)
    b = torch.arange(1)[:, None, None, None]
    qi = (torch.arange(S) + 0)[None, None, :, None]
    ki = (torch.arange(S) + 0)[None, None, None, :]
    res = qi.new_ones((), dtype=torch.bool)
    res = res & (pos_e[b, ki] <= pos_e[b, qi]).to(res.device)
    res = res & (seg[b, qi] == seg[b, ki]).to(res.device)
    return res.expand(1, -1, S, S)


@pytest.mark.parametrize("packed", [False, True], ids=["one_sequence", "two_documents"])
def test_position_ids_mask_checked_at_run_time(packed):
    """use_cache=False: the position/packed-sequence mask is proved causal given one sequence per row, checked
    in O(S) at run time; two packed documents run exact dense attention with the original mask (and say so)."""
    from minference_compile import reset_runtime_stats, runtime_stats

    q, k, v = qkv(S=40)
    pos = torch.arange(40)[None] + 3
    if packed:
        pos[:, 25:] = torch.arange(15)
    fn = lambda q, k, v, pos: F.scaled_dot_product_attention(q, _repeat(k, 2), _repeat(v, 2), attn_mask=_packed_mask(pos))
    reset_runtime_stats()
    out, m, (gm,) = capture(fn, q, k, v, pos)
    assert m[0].rewritten and m[0].reason == "causal+positions mask" and m[0].op == "sparse_prefill_masked", m[0]
    assert not sdpa_nodes(gm) and "cumsum" not in str(gm.code) and "diff" not in str(gm.code)
    torch.testing.assert_close(out, fn(q, k, v, pos), atol=1e-5, rtol=1e-5)
    ((ran, why),) = runtime_stats()[0]
    assert (ran == "dense" and "several packed sequences" in why) if packed else ran == "sparse", (ran, why)


def test_arange_positions_mask_is_plain_causal():
    """With no position_ids input (transformers derives them from an arange) the packed term is proved TRUE."""
    q, k, v = qkv(S=24)
    fn = lambda q, k, v: F.scaled_dot_product_attention(
        q, _repeat(k, 2), _repeat(v, 2), attn_mask=_packed_mask((torch.arange(q.shape[2]) + 0).unsqueeze(0)))
    out, m, (gm,) = capture(fn, q, k, v)
    assert m[0].rewritten and m[0].reason == "causal mask" and m[0].op == "sparse_prefill"
    torch.testing.assert_close(out, fn(q, k, v), atol=1e-5, rtol=1e-5)


def test_custom_scale_reaches_the_estimate(monkeypatch):
    """The estimate ranks at the node's scale (Gemma-style query_pre_attn_scalar), not 1/sqrt(D)."""
    import minference_compile.patterns.vertical_slash as lib  # the vertical-slash pattern's estimate call

    seen = []
    real = lib._estimate
    monkeypatch.setattr(lib, "_estimate", lambda *a, **kw: seen.append(kw.get("scale")) or real(*a, **kw))
    q, k, v = qkv(S=40)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=0.3)
    cfg = {"layers": [], "default": ["vertical_and_slash", 8, 16], "min_sparse_len": 0}
    out, m, _ = capture(fn, q, k, v, config=cfg)
    assert seen == [0.3]
    from minference_compile.ops import estimate_vertical_slash
    a, _ = estimate_vertical_slash(q, k, 8, 16, sink_tokens=0, local_window=0, scale=0.01)
    b, _ = estimate_vertical_slash(q, k, 8, 16, sink_tokens=0, local_window=0, scale=3.0)
    assert not torch.equal(a.sort(-1).values, b.sort(-1).values)  # the temperature changes the ranking


def test_config_shorter_than_model_is_an_error():
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def two_layers(q, k, v):
        return fn(q, k, v) + fn(q, k, v)

    cfg = MInferenceConfig.from_dict([{"0": ["stream_llm", 4, 4, 0]}], source="short.json", min_sparse_len=0)
    with pytest.raises(Exception, match=r"short.json: has 1 layers, the model has layer 1"):
        capture(two_layers, *qkv(), config=cfg)
    ok = MInferenceConfig.from_dict([{"0": ["stream_llm", 4, 4, 0]}], min_sparse_len=0, allow_layer_mismatch=True)
    _, m, _ = capture(two_layers, *qkv(), config=ok)
    assert [x.patterns[0] for x in m] == ["stream_llm", "vertical_and_slash"]
