"""benchmarks/seed_peer.py: the seed's kernel (imported from its source tree) on our generated sets, on CPU under the
Triton interpreter. Needs MINFERENCE_SEED_DIR (the extracted minference 0.1.6.0 sdist; skipped otherwise). Its CUDA
index converter is replaced by `convert` below, written here from the seed's documented semantics (slash offsets
i - j; each offset's 64 keys ending at end_m - s, ranges merged 64 keys at a time; the columns before each range),
and the kernel's output is checked against a dense reference under the mask that index describes."""
import os
import sys
import types

import pytest
import torch

from test_kernels_triton import CUDA  # noqa: F401 (sets TRITON_INTERPRET on CPU before triton is used)

SEED_DIR = os.environ.get("MINFERENCE_SEED_DIR")
pytestmark = pytest.mark.skipif(not SEED_DIR or CUDA, reason="needs MINFERENCE_SEED_DIR (CPU interpreter test)")


def convert(seqlens, vi, si, S, bm, bn):
    """[B,H,NV] ascending columns, [B,H,NS] descending offsets -> (block_count, block_offset, column_count,
    column_index) per 64-row query block."""
    B, H, nv = vi.shape
    ns = si.shape[-1]
    rows = -(-S // bm)
    bc, bo = torch.zeros(B, H, rows, dtype=torch.int32), torch.zeros(B, H, rows, ns, dtype=torch.int32)
    cc, ci = torch.zeros(B, H, rows, dtype=torch.int32), torch.zeros(B, H, rows, nv, dtype=torch.int32)
    for b in range(B):
        for h in range(H):
            offs = [int(x) for x in si[b, h]]
            cols = [int(x) for x in vi[b, h]]
            for m in range(rows):
                end = (m + 1) * bm
                ranges = []
                for s in offs:
                    if s >= end:
                        continue
                    e = max(end - s, bm)
                    if not ranges or e > ranges[-1][1] + bm:
                        ranges.append([e - bm, e])
                    elif e > ranges[-1][1]:
                        ranges[-1][1] += bm
                blocks = [x for lo, hi in ranges for x in range(lo, hi, bn)]
                bc[b, h, m] = len(blocks)
                bo[b, h, m, :len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
                keep = [c for c in cols if any(c < lo and (i == 0 or c >= ranges[i - 1][1])
                                               for i, (lo, _) in enumerate(ranges))]
                cc[b, h, m] = len(keep)
                ci[b, h, m, :len(keep)] = torch.tensor(keep, dtype=torch.int32)
    return bc, bo, cc, ci


def mask_of(index, S):
    bc, bo, cc, ci = index
    B, H, rows = bc.shape
    mask = torch.zeros(B, H, S, S, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for m in range(rows):
                r = slice(m * 64, min(S, m * 64 + 64))
                for x in bo[b, h, m, :int(bc[b, h, m])].tolist():
                    mask[b, h, r, x:x + 64] = True
                mask[b, h, r, ci[b, h, m, :int(cc[b, h, m])].long()] = True
    return mask & torch.ones(S, S, dtype=torch.bool).tril()


def test_seed_kernel_on_our_sets_matches_its_mask(monkeypatch):
    from benchmarks import seed_peer
    from benchmarks.registry import Case
    monkeypatch.setenv(seed_peer.ENV, SEED_DIR)
    seen = []

    def spy(*a):
        seen.append(convert(*a))
        return seen[-1]
    monkeypatch.setitem(sys.modules, "minference.cuda", types.SimpleNamespace(convert_vertical_slash_indexes=spy))
    S, Hq, Hkv, D = 512, 4, 2, 64
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, S, D).half() for h in (Hq, Hkv, Hkv))  # its kernel computes in the input's 16 bits
    case = Case("seed-vs-64/6", "seed-vs", {"nv": 64, "ns": 6})  # few slashes: columns and gaps matter
    p = seed_peer.seed_vs(case, q, k, v, S)
    out = p.fn().float()
    mask = mask_of(seen[0], S)
    qf, kr, vr = q.float(), k.float().repeat_interleave(2, 1), v.float().repeat_interleave(2, 1)
    ref = torch.softmax((qf @ kr.transpose(-1, -2) / D ** 0.5).masked_fill(~mask, float("-inf")), -1) @ vr
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)  # fp16 P before the PV product
    bc, _, cc, _ = seen[0]
    assert 0 < p.coverage < 0.5 and int(cc.sum()) > 0 and int(bc.sum()) > 0
