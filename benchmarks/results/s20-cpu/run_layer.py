# the wide grid without the antidiagonal candidates (CPU: no full-q capture), with the mean-query block-sparse ones
import sys
sys.path.insert(0, '/work/main')
import minference_compile.search.candidates as C
_orig = C.default_candidates
def wide_no_antidiag(kind="all"):
    return [c for c in _orig("wide") if c.pattern != "block_sparse_antidiag"]
C.default_candidates = wide_no_antidiag
from minference_compile.search import cli
import argparse
p = argparse.ArgumentParser(); cli.add_arguments(p)
a = p.parse_args(["qwen05", "--out", "/tmp/s20/qwen05-32k-meanq-layer.json", "--prompts", "natural,kv",
                  "--lengths", "32768", "--candidates", "wide", "--match-seed", "--cost", "layer", "--workdir", "/tmp/s19search/work",
                  "--keep-captures", "--device", "cpu", "--threads", "2"])
sys.exit(cli.run(a))
