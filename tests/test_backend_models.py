"""Tiny random-weight HuggingFace decoders (no downloads) through the pass and the full backend."""
import pytest
import torch
import transformers
from torch._dynamo.utils import counters

from minference_compile import explain, minference_backend
from minference_compile.backend import run_passes
from minference_compile.passes import SDPA_TARGETS

# Budgets >= S for every pattern, so sparse == dense causal and outputs must match eager.
COVER = {"layers": [{"0": ["vertical_and_slash", 4096, 4096, 1], "1": ["stream_llm", 4096, 4096, 1],
                     "2": ["block_sparse", 64, 0, 1]}], "default": ["stream_llm", 4096, 4096], "min_sparse_len": 0,
         "allow_layer_mismatch": True}
# hidden 256 / 4 heads: head_dim 64, a size the kernels support (others stay dense by design)
SMALL = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, attn_implementation="sdpa")
MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": None, "pad_token_id": 0}),
}


def build(name, **extra):
    cfg_cls, model_cls, kw = MODELS[name]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_cls)(**{**SMALL, **kw, **extra})
    return getattr(transformers, model_cls)(cfg).eval()


def run_with_pass(model, config=COVER, **inputs):
    """Compiled with the pass but without Inductor: returns (logits, matches, graphs)."""
    matches, graphs = [], []

    def backend(gm, example_inputs):
        matches.extend(run_passes(gm, config))
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend=backend)(**inputs).logits
    return out, matches, graphs


MASK_OPS = ("le", "and_", "new_ones", "gt", "sub")


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("name", list(MODELS))
def test_model_rewritten_and_matches_eager(name, with_mask):
    model = build(name)
    ids = torch.randint(0, 128, (1, 40))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids) if with_mask else None}
    out, matches, graphs = run_with_pass(model, **inputs)
    assert len(matches) == 2 and all(m.rewritten for m in matches), [m.reason for m in matches]
    assert [m.layer for m in matches] == [0, 1] and {m.layer_source for m in matches} == {"nn_module_stack"}
    assert matches[0].patterns == ("vertical_and_slash", "stream_llm", "block_sparse", "stream_llm")
    for gm in graphs:
        nodes = list(gm.graph.nodes)
        assert not [n for n in nodes if n.op == "call_function" and n.target in SDPA_TARGETS]
        ops = [n for n in nodes if str(n.target).startswith("minference.") and "materialize" not in str(n.target)]
        assert ops and all(n.meta["minference"].rewritten for n in ops)
        # no node of the S x S mask computation survives
        names = {getattr(n.target, "__name__", n.target) for n in nodes if n.op != "placeholder"}
        assert not names & set(MASK_OPS), names & set(MASK_OPS)
        if with_mask:
            (am,) = [n for n in nodes if n.op == "placeholder" and "attention_mask" in n.name]
            assert {u.target for u in am.users} == {torch.ops.minference.sparse_prefill_masked.default}
    with torch.no_grad():
        ref = model(**inputs).logits
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_mistral_sliding_window_never_rewritten_as_causal():
    """A sliding-window layer goes to the exact local op (A-shape init 0), never to the causal sparse op."""
    model = build("mistral", sliding_window=8)
    ids = torch.randint(0, 128, (1, 40))
    out, matches, (gm,) = run_with_pass(model, input_ids=ids)
    assert matches and all(m.rewritten and m.op == "local_attention" and m.window == 8 for m in matches)
    assert "sparse_prefill" not in gm.code and "local_attention" in gm.code
    report = explain(model, ids, config=COVER)
    assert report.rewritten == 2 and "sliding window 8" in str(report)
    with torch.no_grad():
        torch.testing.assert_close(out, model(input_ids=ids).logits, atol=2e-5, rtol=1e-4)


def test_real_padding_gives_dense_result():
    model = build("llama")
    ids = torch.randint(0, 128, (2, 40))
    am = torch.ones_like(ids)
    am[1, :7] = 0  # left padding in row 1
    out, matches, _ = run_with_pass(model, input_ids=ids, attention_mask=am)
    assert all(m.rewritten and m.reason == "causal+padding mask" for m in matches)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=am).logits
    valid = am.bool()
    torch.testing.assert_close(out[valid], ref[valid], atol=2e-5, rtol=1e-4)


def test_explain_report():
    model = build("llama")
    report = explain(model, torch.randint(0, 128, (1, 24)), config=COVER)
    text = str(report)
    from packaging.version import Version

    form = "is_causal" if Version(transformers.__version__) >= Version("5.24") else "causal mask"  # 5.17: a mask
    assert report.rewritten == 2 and len(report.rows) == 2 and f"sparse: {form}" in text, text
    assert "minference.sparse_prefill" in report.graphs[0].code
    assert report.pinned == 2 and "2 rotary cos/sin value(s) pinned" in text  # passes/rotary_tables.py


def test_backend_registered_by_name():
    assert torch._dynamo.lookup_backend("minference") is minference_backend


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "mask"])
def test_inductor_ten_lengths_two_compiles(with_mask):
    model = build("llama")
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="minference", options={"config": COVER})
    with torch.no_grad():
        for S in range(17, 37, 2):
            ids = torch.randint(0, 128, (1, S))
            am = torch.ones_like(ids) if with_mask else None
            torch.testing.assert_close(compiled(input_ids=ids, attention_mask=am).logits,
                                       model(input_ids=ids, attention_mask=am).logits, atol=2e-5, rtol=1e-4)
    assert counters["stats"]["unique_graphs"] <= 2
    torch._dynamo.reset()


def test_inductor_cache_key_carries_the_pass_uuid(monkeypatch):
    """Our pass runs before Inductor sees the graph, so Inductor's FX graph cache would not notice a new version
    of our ops (their fake strides are asserted in the cached code): the backend hands Inductor a no-op custom pass
    whose uuid is our pass's, which hashes the ops' layout and fake definitions."""
    import torch._inductor.compile_fx as cf
    from minference_compile.passes import MInferenceSDPAPass
    from minference_compile.passes.sdpa_rewrite import _source_text
    seen = {}
    real = cf.compile_fx

    def spy(gm, example_inputs, config_patches=None, **kw):
        seen.update(config_patches or {})
        return real(gm, example_inputs, config_patches=config_patches, **kw)
    monkeypatch.setattr(cf, "compile_fx", spy)
    model = build("llama")
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend="minference", options={"config": COVER})(input_ids=torch.randint(0, 128, (1, 19)))
    key = seen["post_grad_custom_pre_pass"]
    from minference_compile.passes import MaterializeRotaryTables
    assert key.uuid() == MInferenceSDPAPass(COVER).uuid() + MaterializeRotaryTables().uuid()
    assert key.uuid() != MInferenceSDPAPass({**COVER, "min_sparse_len": 7}).uuid() + MaterializeRotaryTables().uuid()
    src = _source_text()
    assert "def layer_out(" in src and "def _layer_fake(" in src
    torch._dynamo.reset()


def test_dynamic_true_symbolic_scale_is_rewritten():
    # with dynamic=True Dynamo lifts the module's float `scaling` into a 0-d input and .item()s it: the SDPA
    # scale is then a SymFloat node, which the pass must forward to the op (not try to float() it)
    model = build("llama")
    ids = torch.randint(0, 128, (1, 40))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="minference", options={"config": COVER}, dynamic=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=ids).logits, model(input_ids=ids).logits,
                                   atol=2e-5, rtol=1e-4)
    report = explain(model, input_ids=ids, config=COVER)
    assert report.rewritten == 2
    torch._dynamo.reset()
