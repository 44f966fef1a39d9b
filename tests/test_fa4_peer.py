"""benchmarks/fa4_peer.py without FA4 or a GPU: the dry run exits 0 with a message, and every row of run_shape
runs end to end against an emulated flash_attn.cute (the masks FA4 would apply, from the lists we hand it; see
minference_compile/ops/fa4_lists.py) with our Triton kernels interpreted on CPU. Catches a wrong conversion, reference or
row wiring before the one GPU call; says nothing about FA4 itself."""
import importlib.util
import sys
import types
from argparse import Namespace

import pytest
import torch

from test_kernels_triton import CUDA  # noqa: F401 (sets TRITON_INTERPRET on CPU before triton is used)

from benchmarks import cases, fa4_peer, registry, timing
from fa4_fake import emulate_fa4, fake_flash_attn_func as _fake_flash_attn_func, install_fake_fa4, python_mask_mod
from minference_compile.triton_kernels import naive

HAS_FA4 = importlib.util.find_spec("flash_attn") is not None


@pytest.mark.skipif(HAS_FA4 and torch.cuda.is_available(), reason="FA4 and CUDA present: not a dry run")
def test_dry_run_exits_zero_with_a_message(capsys, tmp_path):
    assert fa4_peer.main(["--out", str(tmp_path)]) == 0
    assert "nothing measured" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


@pytest.fixture
def fake_fa4(monkeypatch):
    install_fake_fa4(monkeypatch)
    monkeypatch.setattr(fa4_peer, "ashape_mask_mod", python_mask_mod)
    # CPU: fp32 inputs, no CUDA events or syncs, SDPA for the cuDNN row
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    monkeypatch.setattr(timing, "bench_ms", lambda fn: (1.0, 1))

    def qkv(S, hq, hkv, D, dtype=None):
        return torch.randn(1, hq, S, D), torch.randn(1, hkv, S, D), torch.randn(1, hkv, S, D)
    monkeypatch.setattr(timing, "random_qkv", qkv)
    monkeypatch.setattr(cases, "dense", lambda case, q, k, v, S: cases.Prepared(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), 1.0))
    monkeypatch.setitem(registry.SHAPES, "tiny", (4, 2, 64))


@pytest.mark.skipif(CUDA, reason="the emulation patches CUDA calls: CPU only")
def test_every_row_runs_and_matches_on_emulated_fa4(fake_fa4):
    S = 320  # 5 blocks of 64, 3 FA4 128-row blocks (the last one short)
    a = Namespace(topk=2, init=64, local=128, tol=1e-3, ours_on_union=True, seed=0, deadline=float("inf"),
                  flush=lambda: None)
    rows = []
    fa4_peer.run_shape("tiny", S, a, rows)
    names = [r["row"] for r in rows]
    assert names == ["cudnn-dense", "fa4-dense", "ours-bs-top2", "fa4-bs-64x64", "fa4-bs-128x64", "ours-bs@128x64",
                     "fa4-bs-128x128", "ours-bs@128x128", "ours-ashape-64+128", "fa4-ashape-mask_mod-128x128",
                     "fa4-ashape-blocks-128x128", "fa4-window-128", "ours-ashape-0+128"]
    bad = [(r["row"], r["status"], r.get("note")) for r in rows if r["status"] != "ok"]
    assert not bad, bad
    by = {r["row"]: r for r in rows}
    for r in rows:
        if r["row"].startswith("fa4-"):
            assert r["max_abs_err"] < 1e-4, r
    assert by["fa4-bs-64x64"]["coverage"] == pytest.approx(by["ours-bs-top2"]["coverage"])
    assert by["fa4-bs-128x128"]["coverage"] >= by["fa4-bs-64x64"]["coverage"]
    assert by["fa4-ashape-mask_mod-128x128"]["coverage"] == pytest.approx(by["ours-ashape-64+128"]["coverage"])
    assert by["fa4-dense"]["efficiency"] == pytest.approx(1.0)


@pytest.mark.skipif(CUDA, reason="the emulation patches CUDA calls: CPU only")
def test_failures_stay_in_their_row(fake_fa4, monkeypatch):
    """FA4 raising on causal block sparsity gives error rows, a failed reference gives "unchecked", the run goes on."""
    def fa4(q, k, v, block_sparse_tensors=None, mask_mod=None, **kw):
        if block_sparse_tensors is not None and mask_mod is None:
            raise ValueError("Block sparsity requires sparse_block_size[1]=64 to match tile_n=128.")
        return _fake_flash_attn_func(q, k, v, block_sparse_tensors=block_sparse_tensors, mask_mod=mask_mod, **kw)
    monkeypatch.setattr(sys.modules["flash_attn.cute"], "flash_attn_func", fa4)
    from minference_compile.triton_kernels import streaming
    monkeypatch.setattr(streaming, "streaming_attention_fwd", lambda *a, **k: 1 / 0)
    a = Namespace(topk=2, init=64, local=128, tol=1e-3, ours_on_union=False, seed=0, deadline=float("inf"),
                  flush=lambda: None)
    rows = []
    fa4_peer.run_shape("tiny", 128, a, rows)
    st = {r["row"]: r["status"] for r in rows}
    assert st["fa4-dense"] == "ok" and st["ours-bs-top2"] == "ok"
    assert st["fa4-bs-64x64"] == st["fa4-bs-128x128"] == st["fa4-ashape-blocks-128x128"] == "error"
    assert st["ours-ashape-64+128"] == "error" and st["fa4-window-128"] == "error"  # its reference raises
    assert st["fa4-ashape-mask_mod-128x128"] == "unchecked"  # ran, but its reference row failed
    assert "ValueError" in next(r for r in rows if r["row"] == "fa4-bs-64x64")["note"]


@pytest.mark.skipif(CUDA, reason="the emulation patches CUDA calls: CPU only")
def test_runner_ashape_fa4_case_computes_the_ashape_pairs(monkeypatch):
    """benchmarks.run's `ashape-128+4096+fa4` case (the op's [hopper] A-shape path) on an emulated FA4: the same pairs
    as the Triton case's reference."""
    emulate_fa4(monkeypatch)
    case = registry.CASE_BY_NAME["ashape-128+4096+fa4"]
    S = 4500  # past the 128 + 4096 window, not a multiple of 128
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, S, 64, generator=g), torch.randn(1, 2, S, 64, generator=g), torch.randn(1, 2, S, 64,
                                                                                                      generator=g)
    prep = cases.prepare(case, q, k, v, S)
    want = naive.streaming_ref(q, k, v, 128, 4096, 64 ** -0.5)
    assert (prep.fn().float() - want).abs().max() < 1e-4
    assert prep.coverage == pytest.approx(cases.cov.streaming_coverage(S, 128, 4096))
