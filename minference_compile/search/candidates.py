"""Candidate patterns and budgets of the search: fixed (the seed's kinds) and adaptive (mass thresholds)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..config import ADAPTIVE_THRESHOLD_KEYS


@dataclasses.dataclass(frozen=True)
class Candidate:
    pattern: str  # a config.PATTERNS name
    v: int = 0  # vertical budget / cap, A-shape init, block-sparse top-k / cap
    s: int = 0  # slash budget / cap, A-shape local window
    threshold: Optional[float] = None  # gamma / tau of the adaptive patterns

    @property
    def adaptive(self) -> bool:
        return self.pattern in ADAPTIVE_THRESHOLD_KEYS

    @property
    def name(self) -> str:
        short = {"dense": "dense", "vertical_and_slash": "vs", "stream_llm": "ashape", "block_sparse": "bs",
                 "vertical_and_slash_adaptive": "vsa", "block_sparse_adaptive": "bsa"}[self.pattern]
        if self.pattern == "dense":
            return short
        args = f"{self.v}" if self.pattern.startswith("block") else f"{self.v},{self.s}"
        return f"{short}({args}" + (f";{self.threshold:g})" if self.adaptive else ")")

    def entry(self, score: float) -> list:
        """The head's entry in the seed's JSON format (adaptive: the threshold as a 5th element)."""
        out = [self.pattern, self.v, self.s, round(float(score), 4)]
        if self.adaptive:
            out.append({ADAPTIVE_THRESHOLD_KEYS[self.pattern]: self.threshold})
        return out


def parse(name: str) -> Candidate:
    """Inverse of Candidate.name."""
    if name == "dense":
        return Candidate("dense")
    head, args = name.rstrip(")").split("(")
    thr = None
    if ";" in args:
        args, t = args.split(";")
        thr = float(t)
    nums = [int(x) for x in args.split(",")]
    pattern = {"vs": "vertical_and_slash", "ashape": "stream_llm", "bs": "block_sparse",
               "vsa": "vertical_and_slash_adaptive", "bsa": "block_sparse_adaptive"}[head]
    return Candidate(pattern, nums[0], nums[1] if len(nums) > 1 else 0, thr)


SEED = Candidate("vertical_and_slash", 1000, 6096)
SMALL = Candidate("vertical_and_slash", 100, 800)


def default_candidates(kind: str = "all") -> list:
    """kind: "fixed" (dense, A-shape, vertical-slash grid, block-sparse top-k), "adaptive", or "all"."""
    fixed = [Candidate("dense")]
    fixed += [Candidate("stream_llm", 128, w) for w in (1024, 2048, 4096)]
    fixed += [Candidate("vertical_and_slash", v, s) for v in (100, 300, 1000) for s in (200, 800, 2048, 6096)]
    fixed += [Candidate("block_sparse", t) for t in (8, 16, 32, 64)]
    adaptive = [Candidate("vertical_and_slash_adaptive", 1000, 6096, g) for g in (0.8, 0.9, 0.95, 0.98, 0.99)]
    adaptive += [Candidate("block_sparse_adaptive", 128, 0, t) for t in (0.7, 0.8, 0.9, 0.95)]
    return {"fixed": fixed, "adaptive": [fixed[0]] + adaptive, "all": fixed + adaptive}[kind]
