"""FlashAttention-4 (flash_attn.cute, CuTe DSL) as a peer, one process, CUDA events: cuDNN dense causal, FA4 dense
causal, our block-sparse top-k vs FA4 block-sparse on the same blocks, our A-shape vs FA4 on the equivalent masks.

    python -m benchmarks.fa4_peer [--seq 128k] [--shapes llama3-8b,qwen2.5-0.5b] [--topk 100] [--out DIR]

Every FA4 output is checked against ours (or cuDNN) on the same inputs: max abs error in the row, status
"mismatch" above --tol (the row is still timed; the run goes on). A row that raises is an "error" row. Coverage =
share of causal pairs the row computes (FA4 on 128-row blocks: the union of our two 64-row blocks' key blocks, a
superset; its coverage is what FA4 really computes). efficiency = coverage x speedup vs cuDNN. Without
flash_attn.cute (or CUDA) it prints why and exits 0. Install: benchmarks/fa4_carry.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import traceback

from . import registry as R
from minference_compile.ops.fa4 import ashape_mask_mod, block_sparse_tensors
from minference_compile.ops.fa4_lists import ashape_blocks, lists_coverage, lists_from_index, to_lists, to_our_index

FIELDS = ["shape", "Hq", "Hkv", "D", "S", "row", "status", "ms", "coverage", "speedup", "efficiency", "tflops",
          "max_abs_err", "checked_against", "first_call_s", "note"]
NO_REF = object()  # a row without a reference (ref=None: the reference row failed -> status "unchecked")
FA4_BLOCKS = ((64, 64), (128, 64), (128, 128))  # FA4 block-sparse tile sizes tried for our top-k index


def fa4_available() -> str | None:
    """None when flash_attn.cute and CUDA are usable, else the reason (the library's import check)."""
    from minference_compile.ops.fa4 import _import_reason
    import torch
    return _import_reason() or (None if torch.cuda.is_available() else "no CUDA device")


class Runner:
    """Holds the inputs of one shape in both layouts and records rows."""

    def __init__(self, shape, S, a, rows):
        import torch
        from .timing import random_qkv
        self.torch, self.a, self.rows, self.S = torch, a, rows, S
        self.Hq, self.Hkv, self.D = R.SHAPES[shape]
        self.base = {"shape": shape, "Hq": self.Hq, "Hkv": self.Hkv, "D": self.D, "S": S}
        torch.manual_seed(a.seed)
        self.q, self.k, self.v = random_qkv(S, self.Hq, self.Hkv, self.D)
        # FA4 layout [B,S,H,D], made contiguous once (FA4 would copy a transposed view inside every timed call)
        self.qf, self.kf, self.vf = (x.transpose(1, 2).contiguous() for x in (self.q, self.k, self.v))
        self.cudnn_ms = None

    def fa4(self, **kw):
        from flash_attn.cute import flash_attn_func
        return lambda: flash_attn_func(self.qf, self.kf, self.vf, **kw)[0].transpose(1, 2)  # -> [B,H,S,D]

    def row(self, name, fn, coverage, ref=NO_REF, ref_name="", note=""):
        """Run fn once (first_call_s: FA4's JIT compile is in it), compare with ref (a tensor or a callable giving
        one), time it, record the row. Never raises. Past --max-minutes: a "skip" row."""
        torch = self.torch
        r = {**self.base, "row": name, "status": "ok", "coverage": coverage, "checked_against": ref_name,
             "note": note}
        if time.time() > self.a.deadline:
            r["status"] = "skip"
            return self._record(r)
        out = None
        try:
            t0 = time.time()
            out = fn()
            torch.cuda.synchronize()
            r["first_call_s"] = round(time.time() - t0, 2)
            if ref is None:
                r["status"] = "unchecked"
                r["note"] = (note + "; " if note else "") + "reference row failed"
            elif ref is not NO_REF:
                want = ref() if callable(ref) else ref
                err = float((out.float() - want.float()).abs().max())
                r["max_abs_err"] = err
                if not err <= self.a.tol:  # NaN fails too
                    r["status"] = "mismatch"
            from .timing import bench_ms
            r["ms"] = bench_ms(fn)[0]
            if self.cudnn_ms:
                r["speedup"] = self.cudnn_ms / r["ms"]
                r["efficiency"] = coverage * r["speedup"]
            r["tflops"] = R.dense_flops(self.S, self.Hq, self.D) * coverage / (r["ms"] * 1e-3) / 1e12
        except Exception as e:
            r["status"] = "error"
            r["note"] = (note + "; " if note else "") + f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            traceback.print_exc(limit=3)
            out = None
        finally:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        self._record(r)
        return out

    def _record(self, r):
        self.rows.append(r)
        _print_row(r)
        self.a.flush()  # CSV/JSON after every row: a run cut short keeps what it measured


def run_shape(shape, S, a, rows):
    from minference_compile.triton_kernels.block_sparse import block_sparse_attention_fwd
    from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
    from minference_compile.triton_kernels.streaming import streaming_attention_fwd
    from . import cases as C
    from . import coverage as cov
    x = Runner(shape, S, a, rows)
    torch, q, k, v = x.torch, x.q, x.k, x.v


    # dense: cuDNN is the speedup reference; FA4 checked against it
    dense = C.dense(R.CASE_BY_NAME["dense-cudnn"], q, k, v, S)
    ref_dense = x.row("cudnn-dense", dense.fn, 1.0, note=dense.note)
    x.cudnn_ms = rows[-1].get("ms")
    if x.cudnn_ms:
        rows[-1].update(speedup=1.0, efficiency=1.0)
    x.row("fa4-dense", x.fa4(causal=True), 1.0, ref_dense, "cudnn-dense")
    del ref_dense

    # block-sparse top-k: our index, our kernel; FA4 on the same blocks at each tile size
    idx = block_sparse_index(q, k, a.topk)
    ours = lambda i: (lambda: block_sparse_attention_fwd(q, k, v, i, compact=True))  # noqa: E731
    c_ours = cov.block_sparse_coverage(S, a.topk)
    ref_bs = x.row(f"ours-bs-top{a.topk}", ours(idx), c_ours, note="64x64 blocks")
    for qb, kb in FA4_BLOCKS:
        try:
            lists = lists_from_index(idx, S, qb, kb)
            c = lists_coverage(lists, S)
        except Exception as e:  # the conversion itself (e.g. memory): one error row, go on
            x._record({**x.base, "row": f"fa4-bs-{qb}x{kb}", "status": "error", "note": f"conversion: {e}"})
            continue
        exact = (qb, kb) == (64, 64)
        # 64x64: the exact same pairs as ours. Larger blocks: the reference is our kernel on FA4's blocks
        ref = ref_bs if exact else (lambda li=lists: block_sparse_attention_fwd(q, k, v, to_our_index(li, S),
                                                                                 compact=True))
        note = ("same pairs as ours" if exact else
                f"union of our 64-blocks into {qb}x{kb} (coverage {c:.4f} vs ours {c_ours:.4f})")
        x.row(f"fa4-bs-{qb}x{kb}", x.fa4(causal=True, block_sparse_tensors=block_sparse_tensors(lists)), c, ref,
              f"ours-bs-top{a.topk}" + ("" if exact else f"@{qb}x{kb}"), note)
        if not exact and a.ours_on_union:  # our kernel on the same (superset) pairs
            ui = to_our_index(lists, S)
            x.row(f"ours-bs@{qb}x{kb}", ours(ui), c, note="our kernel on FA4's union blocks")
            del ui
        del lists
    del ref_bs, idx

    # A-shape: ours (sink + local) vs FA4 block-sparse (+ mask_mod: exact; causal only: block-granular superset)
    # and FA4's sliding window (no sink tokens: learnable_sink is a per-head logit, not sink keys)
    init, local = a.init, a.local
    it = torch.full((x.Hq,), init, dtype=torch.int32, device=q.device)
    lt = torch.full((x.Hq,), local, dtype=torch.int32, device=q.device)
    c_as = cov.streaming_coverage(S, init, local)
    ref_as = x.row(f"ours-ashape-{init}+{local}", lambda: streaming_attention_fwd(q, k, v, it, lt), c_as)
    qb, kb = (128, 128)
    touched, full = ashape_blocks(S, init, local, qb, kb, q.device)
    exact = to_lists(touched, full, S, qb, kb)
    try:
        mm = ashape_mask_mod(init, local)
        x.row(f"fa4-ashape-mask_mod-{qb}x{kb}", x.fa4(block_sparse_tensors=block_sparse_tensors(exact), mask_mod=mm),
              lists_coverage(exact, S, init, local), ref_as, f"ours-ashape-{init}+{local}",
              "block lists + mask_mod on partial tiles: exact A-shape")
    except Exception as e:
        x._record({**x.base, "row": f"fa4-ashape-mask_mod-{qb}x{kb}", "status": "error", "note": f"mask_mod: {e}"})
    coarse = to_lists(touched, None, S, qb, kb)  # head dim 1 (FA4 broadcasts it; our kernel needs Hq rows)
    c_coarse = lists_coverage(coarse, S)
    x.row(f"fa4-ashape-blocks-{qb}x{kb}", x.fa4(causal=True, block_sparse_tensors=block_sparse_tensors(coarse)), c_coarse,
          lambda: block_sparse_attention_fwd(q, k, v, to_our_index(coarse, S).expand(1, x.Hq, -1, -1), compact=True),
          f"ours-bs@ashape-{qb}x{kb}", f"block-granular superset (coverage {c_coarse:.4f} vs A-shape {c_as:.4f})")
    del ref_as
    it0 = torch.zeros_like(it)
    c_win = cov.streaming_coverage(S, 0, local)
    x.row(f"fa4-window-{local}", x.fa4(causal=True, window_size=(local - 1, 0)), c_win,
          lambda: streaming_attention_fwd(q, k, v, it0, lt), f"ours-ashape-0+{local}", "sliding window, no sink")
    x.row(f"ours-ashape-0+{local}", lambda: streaming_attention_fwd(q, k, v, it0, lt), c_win)
    if init == R.ASHAPE[0] and local == R.ASHAPE[1] and not getattr(a, "no_flex", False):
        # FlexAttention with the same A-shape block mask, in the same process (issue 12: A-shape vs Flex)
        try:
            fx = C.prepare(R.CASE_BY_NAME[f"flex-ashape-{init}+{local}"], q, k, v, S)
            x.row(f"flex-ashape-{init}+{local}", fx.fn, c_as, note=fx.note)
        except Exception as e:
            x._record({**x.base, "row": f"flex-ashape-{init}+{local}", "status": "error", "note": f"flex: {e}"})


def _f(v, fmt):
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def _print_row(r):
    print(f"{r['shape']:>13} {_len(r['S']):>5} {r['row']:<30} {r['status']:<8} {_f(r.get('ms'), '{:8.3f}'):>8} "
          f"{_f(r.get('speedup'), '{:6.2f}x'):>7} {_f(r.get('coverage'), '{:.4f}'):>6} "
          f"{_f(r.get('efficiency'), '{:.2f}'):>5} {_f(r.get('tflops'), '{:6.0f}'):>6} "
          f"{_f(r.get('max_abs_err'), '{:.1e}'):>8}  {r.get('note', '')}", flush=True)


def _len(S):
    return f"{S // 1024}k" if S % 1024 == 0 else str(S)


def write(rows, out, S, tag):
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"fa4-peer-{_len(S)}{'-' + tag if tag else ''}")
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(stem + ".json", "w") as f:
        json.dump({"rows": rows, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=1)
    return stem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fa4_peer", description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="128k")
    ap.add_argument("--shapes", default="llama3-8b,qwen2.5-0.5b")
    ap.add_argument("--topk", type=int, default=R.TOPK)
    ap.add_argument("--init", type=int, default=R.ASHAPE[0])
    ap.add_argument("--local", type=int, default=R.ASHAPE[1])
    ap.add_argument("--tol", type=float, default=2e-2, help="max abs error vs the reference (bf16 outputs)")
    ap.add_argument("--no-ours-on-union", dest="ours_on_union", action="store_false",
                    help="skip timing our kernel on FA4's 128-row union blocks")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=8.0, help="rows starting later are recorded as skip")
    a = ap.parse_args(argv)
    a.deadline = time.time() + 60 * a.max_minutes
    S = R.parse_length(a.seq)
    shapes = R.parse_shapes(a.shapes)
    why = fa4_available()
    if why is not None:
        print(f"fa4_peer: nothing measured ({why}). Install FA4 as in benchmarks/fa4_carry.md, on a CUDA machine.")
        return 0
    import flash_attn.cute as fa
    print(f"fa4_peer: flash_attn.cute {getattr(fa, '__version__', '?')}, S={S}, shapes={shapes}, topk={a.topk}, "
          f"A-shape {a.init}+{a.local}")
    print(f"{'shape':>13} {'S':>5} {'row':<30} {'status':<8} {'ms':>8} {'speedup':>7} {'cov':>6} {'eff':>5} "
          f"{'TFLOPs':>6} {'max_err':>8}  note")
    rows = []
    a.flush = lambda: write(rows, a.out, S, a.tag)
    for shape in shapes:
        try:
            run_shape(shape, S, a, rows)
        except Exception as e:  # a set-up failure costs this shape only
            traceback.print_exc(limit=4)
            rows.append({"shape": shape, "S": S, "row": "setup", "status": "error", "note": f"{type(e).__name__}: {e}"})
            a.flush()
    stem = write(rows, a.out, S, a.tag)
    print(f"wrote {stem}.csv / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
