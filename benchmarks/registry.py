"""What the benchmark runs: model shapes and cases (names, families, parameters). Imports without CUDA."""
from __future__ import annotations

from dataclasses import dataclass, field

# name -> (Hq, Hkv, D)
SHAPES = {
    "llama3-8b": (32, 8, 128),
    "qwen2.5-7b": (28, 4, 128),
    "qwen2.5-0.5b": (14, 2, 64),
}

# seed defaults
VS_DEFAULT = (1000, 6096)
VS_SMALL = (100, 800)
TOPK = 100
ASHAPE = (128, 4096)


@dataclass(frozen=True)
class Case:
    name: str
    family: str               # dense | vs | bs | ashape | flex-ashape | flex-bs | flex-vs | seed-vs
    params: dict = field(default_factory=dict, hash=False, compare=False)
    dense_ref: bool = False   # cuDNN (or flash as fallback) is the speedup reference


CASES = [
    Case("dense-cudnn", "dense", {"backend": "CUDNN_ATTENTION"}, dense_ref=True),
    Case("dense-flash", "dense", {"backend": "FLASH_ATTENTION"}),
    Case("dense-fa4", "dense", {"backend": "FA4"}),  # needs the [hopper] extra
    Case("vs-1000/6096", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1]}),
    Case("vs-100/800", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1]}),
    Case("bs-top100", "bs", {"topk": TOPK}),
    Case("ashape-128+4096", "ashape", {"init": ASHAPE[0], "local": ASHAPE[1]}),
    Case("flex-ashape-128+4096", "flex-ashape", {"init": ASHAPE[0], "local": ASHAPE[1]}),
    # the [hopper] A-shape path (ops/fa4.attend; needs flash-attn-4): same pairs as ashape-128+4096
    Case("ashape-128+4096+fa4", "ashape", {"init": ASHAPE[0], "local": ASHAPE[1], "fa4": True}),
    Case("flex-bs-top100", "flex-bs", {"topk": TOPK}),
    Case("flex-vs-1000/6096", "flex-vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1]}),
    # VS tile-pairing experiment (benchmarks/NOTES.md #11): forced on / off whatever the library default is
    Case("vs-1000/6096+pair", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "pair": True}),
    Case("vs-1000/6096-nopair", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "pair": False}),
    Case("vs-100/800+pair", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "pair": True}),
    Case("vs-100/800-nopair", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "pair": False}),
    # aligned slash tiles (benchmarks/NOTES.md #16): same sets, whole 64-aligned key tiles (a superset of the
    # block-rounded pairs), pairing as the library default for the head dim
    Case("vs-1000/6096+aligned", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "aligned": True}),
    Case("vs-100/800+aligned", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "aligned": True}),
    # 8-bit Q.K^T operands (issue 12, config.qk_dtype): same sets, same kernel
    Case("vs-1000/6096+fp8", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "qk": "fp8"}),
    Case("vs-1000/6096+int8", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "qk": "int8"}),
    Case("vs-100/800+fp8", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "qk": "fp8"}),
    Case("vs-100/800+int8", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "qk": "int8"}),
    # 128-tiled vertical-slash on FlashAttention-4's block lists plus a Triton columns pass (ops/fa4.vertical_slash;
    # needs the [hopper] extra): same sets, a superset of the block-rounded pairs
    Case("vs-1000/6096+fa4", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "fa4": True}),
    Case("vs-100/800+fa4", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "fa4": True}),
    Case("vs-1000/6096+fa4k64", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1], "fa4": True, "tile_k": 64}),
    Case("vs-100/800+fa4k64", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1], "fa4": True, "tile_k": 64}),
    # FlashAttention-4 on bs-top100's own 64 x 64 blocks (issue 12's peer on the same blocks; needs the [hopper] extra)
    Case("bs-top100+fa4", "bs", {"topk": TOPK, "fa4": True}),
    # block_sparse_128 (patterns/block_sparse_128.py): 128 x 128 blocks, top-50 = bs-top100's keys per row and its
    # coverage; on FA4 (the op's [hopper] route at D >= 128) and on the Triton kernel as the equal 64-granular index
    Case("bs128-top50+fa4", "bs", {"topk": TOPK // 2, "block": 128, "fa4": True}),
    Case("bs128-top50", "bs", {"topk": TOPK // 2, "block": 128}),
    # block_sparse_meanq (patterns/block_sparse_meanq.py): the same kernel, the mean-query index (its build timed)
    Case("bsq-top100", "bs", {"topk": TOPK, "score": "meanq"}),
    # the seed's own kernel on the same sets (benchmarks/seed_peer.py; needs MINFERENCE_SEED_DIR)
    Case("seed-vs-1000/6096", "seed-vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1]}),
    Case("seed-vs-100/800", "seed-vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1]}),
]
# TMA loads (benchmarks/NOTES.md #17): the kernels with Q/K/V (VS: slash-tile K/V) through tensor descriptors
# ("+tma"), at the tuned pipeline depth or forced to N stages ("@sN"), and today's pointer loads at N stages
_VARIANT_BASES = (("bs-top100", "bs", {"topk": TOPK}),
                  ("ashape-128+4096", "ashape", {"init": ASHAPE[0], "local": ASHAPE[1]}),
                  ("vs-1000/6096", "vs", {"nv": VS_DEFAULT[0], "ns": VS_DEFAULT[1]}),
                  ("vs-100/800", "vs", {"nv": VS_SMALL[0], "ns": VS_SMALL[1]}))
for _base, _fam, _p in _VARIANT_BASES:
    CASES.append(Case(f"{_base}+tma", _fam, {**_p, "tma": True}))
    for _n in (1, 2, 3, 4):
        CASES.append(Case(f"{_base}@s{_n}", _fam, {**_p, "stages": _n}))
        CASES.append(Case(f"{_base}+tma@s{_n}", _fam, {**_p, "tma": True, "stages": _n}))
CASE_BY_NAME = {c.name: c for c in CASES}
TMA_CASES = [f"{b}{v}@s{n}" for b, _, _ in _VARIANT_BASES for v in ("", "+tma") for n in (1, 2, 3, 4)]

# --crossover: one sparse case per pattern, seed-default settings, against cuDNN dense
CROSSOVER_CASES = ["vs-1000/6096", "bs-top100", "ashape-128+4096"]
CROSSOVER_LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768]

DEFAULT_LENGTHS = "8k,16k,32k,64k,128k,256k"
QUICK = {"lengths": "16k,64k", "shapes": "llama3-8b",
         "cases": "dense-cudnn,dense-flash,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096,flex-ashape-128+4096"}


def parse_length(tok: str) -> int:
    """'8k' -> 8192, '1m' -> 1048576, '5000' -> 5000."""
    t = tok.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def parse_lengths(s: str) -> list:
    return [parse_length(t) for t in s.split(",") if t.strip()]


def parse_shapes(s: str) -> list:
    names = [t.strip() for t in s.split(",") if t.strip()]
    bad = [n for n in names if n not in SHAPES]
    if bad:
        raise ValueError(f"unknown shapes {bad}; known: {list(SHAPES)}")
    return names


def parse_cases(s: str | None) -> list:
    if not s:
        return list(CASES)
    names = [t.strip() for t in s.split(",") if t.strip()]
    bad = [n for n in names if n not in CASE_BY_NAME]
    if bad:
        raise ValueError(f"unknown cases {bad}; known: {list(CASE_BY_NAME)}")
    return [CASE_BY_NAME[n] for n in names]


def dense_flops(S: int, Hq: int, D: int, B: int = 1) -> float:
    """FLOPs of causal attention forward on the S(S+1)/2 pairs: 2 matmuls x 2 flops x D per pair."""
    return 4.0 * D * S * (S + 1) / 2 * Hq * B


def dense_bytes(S: int, Hq: int, Hkv: int, D: int, B: int = 1, elem: int = 2) -> float:
    """Minimum HBM traffic of one fused attention: read q, k, v once, write out."""
    return float(elem) * B * S * D * (2 * Hq + 2 * Hkv)
