"""Adaptive (mass-threshold) vertical-slash and block-sparse selection: threshold met on constructed attention,
minimal, capped; equal to the loop references; op dispatch (ids 4, 5) equal to the masked reference; config."""
import json

import pytest
import torch

from minference_compile import MInferenceConfig
from minference_compile.config import ConfigError
from minference_compile.ops.adaptive import (adaptive_block_sparse_index, adaptive_vertical_slash, pack_threshold,
                                             select_blocks, select_vertical_slash, unpack_threshold)
from minference_compile.triton_kernels.naive import block_sparse_ref, vertical_slash_ref
from minference_compile.triton_kernels.naive_adaptive import (adaptive_block_sparse_index_ref,
                                                              adaptive_vertical_slash_ref)


def _constructed_attention(S, L, seed):
    """Attention rows of the last L queries with planted heavy columns and diagonals -> (P [L, S], col, diag)."""
    g = torch.Generator().manual_seed(seed)
    logit = torch.randn(L, S, generator=g, dtype=torch.float64)
    i = torch.arange(S - L, S)[:, None]
    j = torch.arange(S)[None]
    for c in torch.randint(0, S - L, (4,), generator=g).tolist():
        logit[:, c] += 4.0
    for o in torch.randint(0, S // 2, (3,), generator=g).tolist():
        logit[(i - j) == o] += 3.0
    P = torch.softmax(logit.masked_fill(j > i, float("-inf")), -1)
    diag = torch.zeros(S, dtype=torch.float64).index_add_(0, (i - j).clamp(min=0).flatten(),
                                                          torch.where(j <= i, P, 0.0).flatten())
    return P, P.sum(0), diag


@pytest.mark.parametrize("gamma", [0.5, 0.8, 0.9, 0.97])
@pytest.mark.parametrize("seed", [0, 1])
def test_vs_selection_meets_mass_threshold_minimally(gamma, seed):
    # separate rule: the kept columns hold gamma of the column mass, the kept diagonals gamma of the diagonal mass
    S, L, sink, local = 300, 16, 3, 5
    P, col, diag = _constructed_attention(S, L, seed)
    v, s = select_vertical_slash(col[None, None].float(), diag[None, None].float(), S, S, gamma, float(L),
                                 sink, local)
    v, s = v[0, 0][v[0, 0] >= 0].long(), s[0, 0][s[0, 0] >= 0].long()
    assert set(range(sink)) <= set(v.tolist()) and set(range(local)) <= set(s.tolist())
    for mass, kept_idx, forced in ((col, v, sink), (diag, s, local)):
        kept = float(mass[kept_idx].sum())
        assert kept >= gamma * L - 1e-4
        free = mass[kept_idx[kept_idx >= forced]]
        if free.numel():  # minimal: without its lightest non-forced entry the list is short of the target
            assert kept - float(free.min()) < gamma * L + 1e-4
    # the planted heavy lines are found, nothing else beyond the target is
    v2, s2 = select_vertical_slash(col[None, None].float(), diag[None, None].float(), 7, 9, gamma, float(L), sink, local)
    assert (v2 >= 0).sum() <= 7 and (s2 >= 0).sum() <= 9


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_vs_selection_merged_rule(gamma):
    S, L, sink, local = 300, 16, 3, 5
    P, col, diag = _constructed_attention(S, L, 3)
    v, s = select_vertical_slash(col[None, None].float(), diag[None, None].float(), S, S, gamma, float(L),
                                 sink, local, separate=False)
    v, s = v[0, 0][v[0, 0] >= 0].long(), s[0, 0][s[0, 0] >= 0].long()
    kept = float(col[v].sum() + diag[s].sum())
    assert kept >= gamma * L - 1e-4
    free = torch.cat([col[v[v >= sink]], diag[s[s >= local]]])
    if free.numel():
        assert kept - float(free.min()) < gamma * L + 1e-4


def test_vs_selection_per_head_caps_and_thresholds():
    S, L = 200, 8
    rows = [_constructed_attention(S, L, seed) for seed in range(3)]
    col = torch.stack([r[1] for r in rows])[None].float()
    diag = torch.stack([r[2] for r in rows])[None].float()
    gam = [0.5, 0.9, 2.0]  # > 1: the fixed top-k
    v, s = select_vertical_slash(col, diag, [10, 40, 20], [5, 60, 30], gam, float(L), 2, 2)
    assert v.shape == (1, 3, 40) and s.shape == (1, 3, 60)
    n_v, n_s = (v >= 0).sum(-1)[0], (s >= 0).sum(-1)[0]
    assert n_v[2] == 20 and n_s[2] == 30
    assert (n_v[:2] <= torch.tensor([10, 40])).all() and (n_s[:2] <= torch.tensor([5, 60])).all()
    m = [float(col[0, h][v[0, h][v[0, h] >= 0].long()].sum() + diag[0, h][s[0, h][s[0, h] >= 0].long()].sum())
         for h in range(2)]
    assert m[0] >= 0.5 * L - 1e-4 and m[1] >= 0.9 * L - 1e-4 or n_v[1] + n_s[1] == 100


@pytest.mark.parametrize("S,hq,hkv,D", [(1, 2, 1, 64), (65, 4, 2, 64), (200, 3, 1, 96)])
def test_adaptive_vs_matches_ref(S, hq, hkv, D):
    torch.manual_seed(S)
    q, k = torch.randn(2, hq, S, D), torch.randn(2, hkv, S, D)
    caps_v, caps_s, gam = [5 + h for h in range(hq)], [20 - h for h in range(hq)], [0.3 + 0.2 * h for h in range(hq)]
    v, s = adaptive_vertical_slash(q, k, caps_v, caps_s, gam, last_q=16, sink_tokens=2, local_window=3)
    ref = adaptive_vertical_slash_ref(q, k, caps_v, caps_s, gam, last_q=16, sink_tokens=2, local_window=3)
    got = [(sorted(x[x >= 0].tolist()), sorted(y[y >= 0].tolist())) for x, y in zip(v.flatten(0, 1), s.flatten(0, 1))]
    assert got == ref


@pytest.mark.parametrize("S,hq,hkv,D", [(1, 2, 1, 64), (63, 2, 2, 64), (65, 4, 2, 128), (700, 3, 1, 96)])
def test_adaptive_bs_matches_ref(S, hq, hkv, D):
    torch.manual_seed(S)
    q, k = torch.randn(2, hq, S, D), torch.randn(2, hkv, S, D)
    q[..., :4] += 2.0  # bias some block scores so masses are not all alike
    caps, taus = [3 + 2 * h for h in range(hq)], [0.4 + 0.25 * h for h in range(hq)]
    got = adaptive_block_sparse_index(q, k, caps, taus)
    assert torch.equal(got, adaptive_block_sparse_index_ref(q, k, caps, taus))


def test_bs_selection_meets_mass_threshold():
    torch.manual_seed(0)
    R, n = 6, 6  # query blocks 0..5 against 6 key blocks
    mass = torch.softmax(torch.randn(1, 1, R, n) * 2, -1)
    causal = torch.arange(n)[None] <= torch.arange(R)[:, None]
    mass = (mass * causal) / (mass * causal).sum(-1, keepdim=True)
    for tau in (0.3, 0.7, 0.95):
        ids = select_blocks(mass, 0, n, tau)[0, 0]
        for qb in range(R):
            sel = ids[qb][ids[qb] >= 0].long()
            assert qb in sel.tolist() and (sel <= qb).all()
            got = float(mass[0, 0, qb, sel].sum())
            assert got >= tau - 1e-6
            others = [kb for kb in sel.tolist() if kb != qb]
            if others:  # minimal
                assert got - float(mass[0, 0, qb, others].min()) < tau


def test_threshold_packing():
    assert unpack_threshold(pack_threshold(6096, 0.95)) == (6096, 0.95)
    assert unpack_threshold(800) == (800, 0.9)
    with pytest.raises(ValueError):
        pack_threshold(10, 1.5)


@pytest.mark.parametrize("pid", [4, 5])
def test_sparse_prefill_adaptive_matches_masked_reference(pid):
    torch.manual_seed(pid)
    B, hq, hkv, S, D = 2, 4, 2, 200, 64
    q, k, v = torch.randn(B, hq, S, D), torch.randn(B, hkv, S, D), torch.randn(B, hkv, S, D)
    patterns = [pid, 0, pid, 1]
    vs = [40, 0, 3, 30] if pid == 4 else [3, 0, 2, 30]
    ss = [pack_threshold(50, 0.8), 0, pack_threshold(20, 0.5), 60]
    out = torch.ops.minference.sparse_prefill(q, k, v, patterns, vs, ss, D ** -0.5, 0, 64)
    kr = k.repeat_interleave(hq // hkv, 1)
    vr = v.repeat_interleave(hq // hkv, 1)
    for h, p in enumerate(patterns):
        if p != pid:
            continue
        if pid == 4:
            vert, sl = adaptive_vertical_slash(q, k, [vs[h]] * hq, [50 if h == 0 else 20] * hq, [0.8 if h == 0 else 0.5] * hq)
            ref = vertical_slash_ref(q, kr, vr, vert, sl)
        else:
            idx = adaptive_block_sparse_index(q, k, [vs[h]] * hq, [0.8 if h == 0 else 0.5] * hq)
            ref = block_sparse_ref(q, kr, vr, idx)
        torch.testing.assert_close(out[:, h], ref[:, h].to(out.dtype), atol=2e-5, rtol=1e-4)


def test_config_adaptive_entries_round_trip(tmp_path):
    data = [{"0": ["vertical_and_slash_adaptive", 1000, 6096, 0, {"gamma": 0.95}],
             "1": ["block_sparse_adaptive", 64, 0, 1, {"tau": 0.8}],
             "2": ["vertical_and_slash_adaptive", 100, 800, 0], "3": ["vertical_and_slash", 10, 20, 0]}]
    cfg = MInferenceConfig.from_dict(data)
    assert cfg.head_entry(0, 0) == ("vertical_and_slash_adaptive", 1000, pack_threshold(6096, 0.95))
    assert cfg.head_entry(0, 2) == ("vertical_and_slash_adaptive", 100, 800)
    p = tmp_path / "c.json"
    cfg.to_json(p)
    assert json.loads(p.read_text()) == data
    for bad in ({"gamma": 1.5}, {"tau": 0.9}, [0.9]):
        with pytest.raises(ConfigError, match="layer 0, head 0"):
            MInferenceConfig.from_dict([{"0": ["vertical_and_slash_adaptive", 10, 10, 0, bad]}])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_adaptive_index_builds_on_cuda_match_cpu_without_host_sync():
    torch.manual_seed(0)
    S, hq, hkv, D = 4099, 4, 2, 64
    q, k = torch.randn(1, hq, S, D), torch.randn(1, hkv, S, D)
    caps_v, caps_s, gam = [100, 200, 50, 300], [400, 800, 100, 600], [0.8, 0.9, 0.95, 0.7]
    want_vs = adaptive_vertical_slash(q, k, caps_v, caps_s, gam)
    want_bs = adaptive_block_sparse_index(q, k, [8, 16, 32, 64], gam)
    qc, kc = q.cuda(), k.cuda()
    # values first (a mismatch and a host sync fail with different messages)
    got_vs = adaptive_vertical_slash(qc, kc, caps_v, caps_s, gam)
    got_bs = adaptive_block_sparse_index(qc, kc, [8, 16, 32, 64], gam)
    # fp32 both ways; the GPU's reduction order may flip a near-tie: allow a handful of differing entries
    for name, g, w in (("vertical", got_vs[0], want_vs[0]), ("slash", got_vs[1], want_vs[1]), ("blocks", got_bs, want_bs)):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        diff = (g.cpu() != w).float().mean().item()
        assert diff < 0.01, f"{name}: {diff:.4f} of entries differ from the CPU build"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        adaptive_vertical_slash(qc, kc, caps_v, caps_s, gam)
        adaptive_block_sparse_index(qc, kc, [8, 16, 32, 64], gam)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_sparse_prefill_adaptive_opcheck():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 130, 64), torch.randn(1, 2, 130, 64), torch.randn(1, 2, 130, 64)
    args = (q, k, v, [4, 5, 1, 0], [20, 2, 10, 0], [pack_threshold(40, 0.9), pack_threshold(0, 0.8), 30, 0],
            0.125, 64, 64)
    torch.library.opcheck(torch.ops.minference.sparse_prefill.default, args)
