"""passes/rotary_tables.py: the cos/sin tables are computed once per forward, not inside every RoPE kernel.

Structural (materialize nodes after the pass, their users are the layers), in Inductor's generated code (cos
appears in exactly one kernel), and numerical (logits vs eager, static and dynamic shapes).
"""
import re

import pytest
import torch
import transformers
from torch._inductor.utils import run_and_get_code

from minference_compile import explain
from minference_compile.backend import make_backend
from minference_compile.passes import MaterializeRotaryTables

LAYERS = 3
COVER = {"default": ["stream_llm", 4096, 4096], "min_sparse_len": 0}
PIN = torch.ops.minference.materialize.default


def qwen2():
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(num_hidden_layers=LAYERS, hidden_size=256, intermediate_size=128,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   attn_implementation="sdpa")
    return transformers.Qwen2ForCausalLM(cfg).eval()


def test_pass_pins_cos_and_sin_once_with_every_layer_reading_the_pin():
    ids = torch.randint(1, 128, (1, 70), generator=torch.Generator().manual_seed(1))
    report = explain(qwen2(), ids, use_cache=False, config=COVER)  # the backend's passes on the Dynamo graph
    (gm,) = report.graphs
    assert report.pinned == 2
    pins = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is PIN]
    assert len(pins) == 2  # cos and sin
    for p in pins:
        # the pinned value is the model's cos / sin after scaling and the dtype cast, read by each layer
        assert len(p.users) >= LAYERS
        assert len(p.args[0].users) == 1
    # a second run of the pass finds nothing new (idempotent)
    assert MaterializeRotaryTables()(gm.graph) == 0


def _cos_kernels(code: str) -> int:
    kernels = re.split(r"(?=cpp_fused_\w+ = |def triton_\w+\(|@triton.jit)", code)
    return sum(1 for k in kernels if re.search(r"\bcos\(", k))


@pytest.mark.parametrize("pin", [True, False])
def test_generated_code_computes_cos_once(pin, monkeypatch):
    torch._dynamo.reset()
    if not pin:
        monkeypatch.setenv("MINFERENCE_COMPILE_ROTARY_TABLES", "0")
    ids = torch.randint(1, 128, (1, 70), generator=torch.Generator().manual_seed(1))
    c = torch.compile(qwen2(), backend=make_backend(COVER))
    with torch.no_grad():
        _, codes = run_and_get_code(lambda: c(ids, use_cache=False).logits)
    n = _cos_kernels("\n".join(codes))
    if pin:
        assert n == 1
    else:  # Inductor inlines the table into the q and k RoPE kernels: what the pass exists to stop
        assert n >= 2
    torch._dynamo.reset()


@pytest.mark.parametrize("dynamic", [False, True])
def test_logits_match_eager(dynamic):
    torch._dynamo.reset()
    m = qwen2()
    c = torch.compile(m, backend=make_backend(COVER), dynamic=dynamic)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for S in (65, 130):
            ids = torch.randint(1, 128, (2, S), generator=g)
            pos = torch.arange(3, 3 + S)[None].expand(2, -1)  # positions not starting at 0
            ref = m(ids, position_ids=pos, use_cache=False).logits
            out = torch.full_like(ref, float("nan"))
            out.copy_(c(ids, position_ids=pos, use_cache=False).logits)
            torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    torch._dynamo.reset()
