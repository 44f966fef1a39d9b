"""CPU count for an untried change to vertical-slash on FA4 tiles (benchmarks/NOTES.md row 31): promote a 128-key tile
holding >= T vertical columns to a touched tile of every causal 128-row block, so FA4 computes it and the columns
pass skips its columns. Counts, on the benchmark's generated sets (llama3-8b, 32 heads, 128K, `generate_vs` seed 0):
tiles promoted per head, the share of the columns pass's (128-row block x column) entries they absorb, and the FA4
tiles they add.

    python -m benchmarks.column_tiles
"""
import torch

from benchmarks.indexsets import generate_vs

TILE = 128
THRESHOLDS = (4, 8, 13, 16, 32)


def slash_tiles(s: torch.Tensor, M: int, NT: int) -> torch.Tensor:
    """bool [M, NT]: key tile n is touched in 128-row block m (rows [128 m, 128 m + 128)) by an offset of s (one
    head's slash offsets), causal tiles only: offset s covers keys [128 m - s, 128 m - s + 127], at most 2 tiles."""
    m = torch.arange(M)[:, None]
    lo = m * TILE - s[None, :]
    hi = lo + TILE - 1
    first, last = torch.clamp(lo, min=0) // TILE, torch.clamp(hi, min=0) // TILE
    hit = torch.zeros(M, NT + 1, dtype=torch.int32)
    for d in range(2):
        t = first + d
        ok = (hi >= 0) & (t <= last) & (t <= m)
        hit.scatter_add_(1, torch.where(ok, t, NT), ok.int())
    return hit[:, :NT] > 0


def count(S: int, H: int, nv: int, ns: int) -> None:
    V, Sl = generate_vs(S, H, nv, ns, seed=0)
    M = NT = S // TILE
    blocks = torch.arange(M)[:, None]
    base = outside_total = 0
    res = {t: [0, 0, 0] for t in THRESHOLDS}  # promoted tiles, absorbed entries, added FA4 tiles
    for h in range(H):
        v, s = V[0, h].long(), Sl[0, h].long()
        touched = slash_tiles(s, M, NT)
        base += int(touched.sum())
        col_tile = v // TILE
        per_tile = torch.bincount(col_tile, minlength=NT)
        outside = (col_tile[None, :] <= blocks) & ~touched[:, col_tile]  # what the columns pass computes
        outside_total += int(outside.sum())
        for t in THRESHOLDS:
            promoted = per_tile >= t
            causal = promoted[None, :] & (torch.arange(NT)[None, :] <= blocks)
            res[t][0] += int(promoted.sum())
            res[t][1] += int((outside & promoted[col_tile][None, :]).sum())
            res[t][2] += int((causal & ~touched).sum())
    print(f"({nv}, {ns}) at {S}: slash tiles {base}, columns-pass entries {outside_total}")
    for t, (p, a, add) in res.items():
        print(f"  tiles with >= {t:2d} columns: {p / H:5.1f} per head, absorb {a / outside_total:6.1%} of the "
              f"columns pass, add {add / base:6.2%} FA4 tiles")


def main() -> None:
    for nv, ns in [(1000, 6096), (100, 800)]:
        count(131072, 32, nv, ns)


if __name__ == "__main__":
    main()
