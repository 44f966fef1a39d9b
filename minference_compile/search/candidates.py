"""Candidate patterns and budgets of the search: fixed (the seed's kinds) and adaptive (mass thresholds)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..patterns import Pattern, by_name, parse_label


@dataclasses.dataclass(frozen=True)
class Candidate:
    pattern: str  # a registered pattern name (minference_compile/patterns/)
    v: int = 0  # the seed entry's 2nd element: vertical budget / cap, A-shape init, block-sparse top-k / cap
    s: int = 0  # its 3rd: slash budget / cap, A-shape local window, antidiagonal stride (0: unused)
    threshold: Optional[float] = None  # gamma / tau of the adaptive patterns

    @property
    def adaptive(self) -> bool:
        return by_name(self.pattern).THRESHOLD is not None

    @property
    def spec(self) -> Pattern:
        """The typed spec (validated), e.g. VerticalSlash(100, 800)."""
        return by_name(self.pattern).from_entry(self.entry_numbers())

    def entry_numbers(self) -> list:
        cls = by_name(self.pattern)
        return [self.pattern, self.v, self.s, 0] + ([{cls.THRESHOLD: self.threshold}] if cls.THRESHOLD else [])

    @classmethod
    def from_spec(cls, spec: Pattern) -> "Candidate":
        """A spec as a candidate (adaptive: its threshold in effect, the default when the entry gave none)."""
        _, v, s, *_ = spec.to_entry()
        return cls(spec.name, v, s, spec.threshold if spec.THRESHOLD else None)

    @property
    def name(self) -> str:
        """The spec's label: dense, vs(100,800), ashape(128,1024), bs(16), vsa(1000,6096;0.9), bsa(128;0.9),
        bsx(128,8;0.9)."""
        return self.spec.label

    def entry(self, score: float) -> list:
        """The head's entry in the seed's JSON format (adaptive: the threshold as a 5th element)."""
        return self.spec.to_entry(round(float(score), 4))


def parse(name: str) -> Candidate:
    """Inverse of Candidate.name."""
    return Candidate.from_spec(parse_label(name))


SEED = Candidate("vertical_and_slash", 1000, 6096)
SMALL = Candidate("vertical_and_slash", 100, 800)


KINDS = ("fixed", "adaptive", "all", "experimental", "wide")


def default_candidates(kind: str = "all") -> list:
    """kind: "fixed" (dense, A-shape, vertical-slash grid, block-sparse top-k), "adaptive" (mass thresholds), "all"
    (both), or "experimental": all plus the antidiagonal block-sparse candidates. Those stay out of "all" because
    their index build costs ~18 ms per layer at 128K for 14 heads on an H200 even with the fused mass kernel and
    select, ~27% of cuDNN's dense attention of the same layer (benchmarks/NOTES.md rows 32 and 34, session 16), and
    the default cost (work) counts kernel work only, not index time (``--cost time`` adds it). "wide": experimental
    on a finer grid with higher caps and thresholds (~3x the candidates: for GPU searches; the selection then has
    more points between the heads' needs)."""
    if kind == "wide":
        return _wide()
    fixed = [Candidate("dense")]
    fixed += [Candidate("stream_llm", 128, w) for w in (1024, 2048, 4096)]
    fixed += [Candidate("vertical_and_slash", v, s) for v in (100, 300, 1000) for s in (200, 800, 2048, 6096)]
    fixed += [Candidate("block_sparse", t) for t in (8, 16, 32, 64)]
    fixed += [Candidate("block_sparse_meanq", t) for t in (8, 16, 32, 64)]
    adaptive = [Candidate("vertical_and_slash_adaptive", 1000, 6096, g) for g in (0.8, 0.9, 0.95, 0.98, 0.99)]
    adaptive += [Candidate("block_sparse_adaptive", 128, 0, t) for t in (0.7, 0.8, 0.9, 0.95)]
    adaptive += [Candidate("block_sparse_meanq_adaptive", 128, 0, t) for t in (0.8, 0.9, 0.95, 0.98)]
    # XAttention's strided-antidiagonal estimate, stride 8 (the search capture then keeps every q row)
    antidiag = [Candidate("block_sparse_antidiag", 128, 8, t) for t in (0.8, 0.9, 0.95, 0.98)]
    return {"fixed": fixed, "adaptive": [fixed[0]] + adaptive, "all": fixed + adaptive,
            "experimental": fixed + adaptive + antidiag}[kind]


def _wide() -> list:
    fixed = [Candidate("dense")]
    fixed += [Candidate("stream_llm", 128, w) for w in (512, 1024, 2048, 4096, 8192)]
    fixed += [Candidate("vertical_and_slash", v, s) for v in (30, 100, 300, 1000, 2000)
              for s in (100, 200, 400, 800, 1500, 2048, 3000, 4096, 6096)]
    fixed += [Candidate("block_sparse", t) for t in (4, 8, 16, 24, 32, 48, 64, 96, 128)]
    fixed += [Candidate("block_sparse_128", t) for t in (4, 8, 16, 32, 64)]  # FA4's tile (D >= 128 on sm90)
    fixed += [Candidate("block_sparse_meanq", t) for t in (4, 8, 16, 24, 32, 48, 64, 96, 128)]
    gammas = (0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
    adaptive = [Candidate("vertical_and_slash_adaptive", 1000, 6096, g) for g in gammas]
    adaptive += [Candidate("vertical_and_slash_adaptive", 300, 2048, g) for g in (0.8, 0.9, 0.95, 0.98)]
    adaptive += [Candidate("vertical_and_slash_adaptive", 2000, 8192, g) for g in (0.98, 0.99, 0.995)]
    adaptive += [Candidate("block_sparse_adaptive", 128, 0, t) for t in (0.7, 0.8, 0.9, 0.95)]
    adaptive += [Candidate("block_sparse_adaptive", 256, 0, t) for t in (0.95, 0.98, 0.99)]
    adaptive += [Candidate("block_sparse_meanq_adaptive", 128, 0, t) for t in (0.8, 0.9, 0.95, 0.98)]
    adaptive += [Candidate("block_sparse_meanq_adaptive", 256, 0, t) for t in (0.95, 0.98, 0.99, 0.995)]
    antidiag = [Candidate("block_sparse_antidiag", 128, 8, t) for t in (0.8, 0.9, 0.95, 0.98, 0.99)]
    antidiag += [Candidate("block_sparse_antidiag", 256, 8, t) for t in (0.95, 0.98, 0.99, 0.995)]
    antidiag += [Candidate("block_sparse_antidiag", 512, 8, t) for t in (0.99, 0.995, 0.998)]
    antidiag += [Candidate("block_sparse_antidiag", 256, 16, t) for t in (0.9, 0.95, 0.98, 0.99)]
    return fixed + adaptive + antidiag


def allowed(candidates: list, kind: str) -> list:
    """Which of the scored candidates a selection restricted to ``kind`` may pick: "fixed" the non-adaptive ones,
    "adaptive" dense and the mass-threshold ones without the antidiagonal estimate, "all" both, "experimental" /
    "wide" every one (so a wide scoring can be selected from with the narrower kinds' meaning)."""
    def ok(c: Candidate) -> bool:
        anti = c.pattern == "block_sparse_antidiag"
        return {"fixed": not c.adaptive, "adaptive": c.pattern == "dense" or (c.adaptive and not anti),
                "all": not anti}.get(kind, True)
    return [ok(c) for c in candidates]
