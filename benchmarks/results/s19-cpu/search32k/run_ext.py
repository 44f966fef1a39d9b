# extra mean-query candidates at high budgets, scored on the stored captures of run.py (no forward)
import os, sys
sys.path.insert(0, '/work/main')
import minference_compile.search.candidates as C
EXTRA = [C.Candidate("block_sparse_meanq", t) for t in (160, 192, 256, 320)]
EXTRA += [C.Candidate("block_sparse_meanq_adaptive", 256, 0, 0.998)]
EXTRA += [C.Candidate("block_sparse_meanq_adaptive", 512, 0, t) for t in (0.99, 0.995, 0.998)]
C.default_candidates = lambda kind="all": list(EXTRA)
W0, W1 = "/tmp/s19search/work", "/tmp/s19search/work_ext"
for run in ("natural-32768", "kv-32768"):
    os.makedirs(os.path.join(W1, run), exist_ok=True)
    for f in os.listdir(os.path.join(W0, run)):
        if f.startswith("layer"):
            dst = os.path.join(W1, run, f)
            if not os.path.exists(dst):
                os.symlink(os.path.join(W0, run, f), dst)
from minference_compile.search import cli
import argparse
p = argparse.ArgumentParser(); cli.add_arguments(p)
a = p.parse_args(["qwen05", "--out", "/tmp/s19search/ext.json", "--prompts", "natural,kv", "--lengths", "32768",
                  "--candidates", "wide", "--match-seed", "--workdir", W1, "--keep-captures", "--device", "cpu",
                  "--threads", "2"])
sys.exit(cli.run(a))
