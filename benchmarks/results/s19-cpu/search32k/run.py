# the wide grid without the antidiagonal candidates (CPU: no full-q capture), with the mean-query block-sparse ones;
# extra arguments replace the selection (session 20: --cost layer, --evaluate CONFIG on the same stored scores)
import argparse
import sys
sys.path.insert(0, '/work/main')
import minference_compile.search.candidates as C
_orig = C.default_candidates


def wide_no_antidiag(kind="all"):
    return [c for c in _orig("wide") if c.pattern != "block_sparse_antidiag"]


def run(out="/tmp/s19search/qwen05-32k-meanq.json", extra=("--match-seed",)):
    C.default_candidates = wide_no_antidiag
    from minference_compile.search import cli
    p = argparse.ArgumentParser(); cli.add_arguments(p)
    a = p.parse_args(["qwen05", "--out", out, "--prompts", "natural,kv", "--lengths", "32768", "--candidates", "wide",
                      "--workdir", "/tmp/s19search/work", "--keep-captures", "--device", "cpu", "--threads", "2",
                      *extra])
    return cli.run(a)


if __name__ == "__main__":
    sys.exit(run(*(sys.argv[1:2] or []), extra=tuple(sys.argv[2:]) or ("--match-seed",)))
