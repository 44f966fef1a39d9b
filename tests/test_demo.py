"""The demo's pieces that need no model download (the full run is timed in benchmarks/results/accuracy/)."""
import torch

from eval_tiny import tiny_llama
from minference_compile import MInferenceConfig, explain
from minference_compile.demo import _compact


def test_compact_explain_groups_layers():
    model = tiny_llama(layers=3)
    cfg = MInferenceConfig.from_dict({"layers": [{"0": ["stream_llm", 4, 64, 0]}], "default": ["vertical_and_slash", 10, 10], "allow_layer_mismatch": True})
    lines = _compact(explain(model, input_ids=torch.randint(1, 128, (1, 80)), config=cfg))
    assert lines == ["  layers 0-0 (1): stream_llm,vertical_and_slash, heads q/kv 4/2 -> sparse: is_causal",
                     "  layers 1-2 (2): vertical_and_slash, heads q/kv 4/2 -> sparse: is_causal"], lines
