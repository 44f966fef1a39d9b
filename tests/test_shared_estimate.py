"""One estimate per layer call: fixed and adaptive vertical-slash heads of one layer rank by the same scores
(patterns/base.HeadGroup.vs_scores), computed once, and the op's output equals running each pattern on its own."""
import pytest
import torch

import minference_compile  # noqa: F401  (registers minference::*)
from minference_compile.ops import estimate
from minference_compile.ops.adaptive import FIXED, pack_threshold
from minference_compile.ops.estimate import SINK_TOKENS, LOCAL_WINDOW, estimate_scores, top_vertical_slash

# pattern ids: 0 dense, 1 vertical-slash, 4 adaptive vertical-slash (minference_compile/patterns/)
PATTERNS = [1, 4, 0, 1, 4, 4]
V = [40, 60, 0, 10, 50, 30]
SL = [100, pack_threshold(300, 0.8), 0, 150, pack_threshold(200, 0.95), 120]


def _qkv(B=2, Hq=6, Hkv=2, S=333, D=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Hq, S, D, generator=g), torch.randn(B, Hkv, S, D, generator=g),
            torch.randn(B, Hkv, S, D, generator=g))


def _layer(q, k, v, patterns=PATTERNS, vs=V, ss=SL):
    return torch.ops.minference.sparse_prefill(q, k, v, patterns, vs, ss, q.shape[-1] ** -0.5, 0, 64, 1.0)


def test_layer_with_fixed_and_adaptive_heads_estimates_once(monkeypatch):
    q, k, v = _qkv()
    calls = []
    real = estimate.estimate_scores

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(estimate, "estimate_scores", counting)
    out = _layer(q, k, v)
    assert len(calls) == 1, f"{len(calls)} estimates for one layer call"
    # each pattern alone (other heads dense): the same heads' outputs, so sharing changed nothing
    for pid in (1, 4):
        alone = [p if p == pid else 0 for p in PATTERNS]
        ref = _layer(q, k, v, alone, [x if p == pid else 0 for x, p in zip(V, PATTERNS)],
                     [x if p == pid else 0 for x, p in zip(SL, PATTERNS)])
        heads = [h for h, p in enumerate(PATTERNS) if p == pid]
        torch.testing.assert_close(out[:, heads], ref[:, heads], atol=1e-5, rtol=1e-5)
    assert len(calls) == 3  # one per call above


def test_top_vertical_slash_leaves_the_scores_and_matches_the_inf_forcing():
    # the choice forces the sinks / local offsets without writing into the (shared) scores; the chosen sets are
    # those of the former rule (scores set to inf there, then top-k), per head and batch
    q, k, _ = _qkv(seed=3)
    vs, ss = estimate_scores(q, k, 64)
    v0, s0 = vs.clone(), ss.clone()
    budgets_v, budgets_s = [40, 5, 0, 333, 31, 60], [100, 99, 0, 333, 7, 250]
    vert, slash = top_vertical_slash(vs, ss, budgets_v, budgets_s)
    assert torch.equal(vs, v0) and torch.equal(ss, s0)
    for got, score, budgets, forced in ((vert, v0, budgets_v, SINK_TOKENS), (slash, s0, budgets_s, LOCAL_WINDOW)):
        key = score.clone()
        key[..., :forced] = float("inf")
        full = key.topk(max(budgets), dim=-1).indices
        for b in range(q.shape[0]):
            for h, n in enumerate(budgets):
                mine = got[b, h][got[b, h] >= 0]
                assert mine.numel() == n and mine.unique().numel() == n
                if n >= forced:  # (under the forced count the former rule's pick among ties was arbitrary)
                    assert set(mine.tolist()) == set(full[b, h, :n].tolist()), (b, h)
                else:
                    assert set(mine.tolist()) == set(range(n))


@pytest.mark.parametrize("scale", [None, 0.05])
def test_adaptive_heads_rank_at_the_layer_scale(scale):
    # the adaptive heads' mass is measured at the layer's temperature (as the fixed heads' ranking): a scale other
    # than 1/sqrt(D) changes their selection exactly as computing the scores at that scale does
    from minference_compile.ops.adaptive import adaptive_vertical_slash, select_vertical_slash
    q, k, _ = _qkv(B=1, seed=7)
    got = adaptive_vertical_slash(q, k, [60] * 6, [200] * 6, 0.8, scale=scale)
    vs, ss = estimate_scores(q, k, 64, scale)
    ref = select_vertical_slash(vs, ss, [60] * 6, [200] * 6, 0.8, 64.0)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_layer_with_fixed_and_adaptive_mean_query_heads_builds_one_index(monkeypatch):
    # block_sparse_meanq (8) and its adaptive form (9) in one layer: one index build (patterns/block_sparse_meanq.
    # layer_index) whose heads' outputs equal each pattern run alone
    from minference_compile.patterns import block_sparse_meanq
    # head 1's threshold binds before its cap (0.1 of the mass), head 3's cap before its threshold
    patterns, vs, ss = [8, 9, 0, 9, 8, 3], [2, 6, 0, 2, 1, 2], [0, pack_threshold(0, 0.1), 0, pack_threshold(0, 0.9),
                                                                 0, 0]
    q, k, v = _qkv(S=700, seed=4)
    calls = []
    real = block_sparse_meanq.meanq_block_sparse_index

    def counting(*a, **kw):
        calls.append(real(*a, **kw))
        return calls[-1]
    monkeypatch.setattr(block_sparse_meanq, "meanq_block_sparse_index", counting)
    out = _layer(q, k, v, patterns, vs, ss)
    assert len(calls) == 1, f"{len(calls)} mean-query index builds for one layer call"
    # each mean-query head's ids are its own cap and threshold's (the fixed heads: top-k)
    for h, (cap, tau) in {0: (2, FIXED), 1: (6, 0.1), 3: (2, 0.9), 4: (1, FIXED)}.items():
        own = real(q[:, h:h + 1], k[:, h // 3:h // 3 + 1], cap, tau)
        assert torch.equal(calls[0][:, h, :, :own.shape[-1]], own[:, 0]), h
        assert (calls[0][:, h, :, own.shape[-1]:] == -1).all(), h
    for pid in (8, 9):
        keep = [p == pid for p in patterns]
        ref = _layer(q, k, v, [p if m else 0 for p, m in zip(patterns, keep)], [x if m else 0 for x, m in zip(vs, keep)],
                     [x if m else 0 for x, m in zip(ss, keep)])
        heads = [h for h, m in enumerate(keep) if m]
        torch.testing.assert_close(out[:, heads], ref[:, heads], atol=1e-5, rtol=1e-5)
    assert len(calls) == 3
