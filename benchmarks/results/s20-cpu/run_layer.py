# session 20 on session 19's stored 32K scores (/tmp/s19search/work): the --cost layer selection, and the layer time of
# session 19's --match-seed selection (--evaluate). qwen05-32k-meanq-layer.json (shipped as qwen05-fast, run_layer.log)
# came from commit f890c4c, when dense heads of mixed layers were charged at the streaming kernel's rate (Dense.RATE
# 0.82); since NOTES row 46 (rate 1.0) the same command picks 61 dense heads instead of 47 (predicted layer time
# 2.52x / 2.29x dense against 2.47x / 2.23x for the shipped one under the same model, natural recall 0.9736 against
# 0.9752): not measured on the GPU, not shipped
import os
import sys
sys.path.insert(0, '/work/main/benchmarks/results/s19-cpu/search32k')
from run import run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.argv[1:] == ["evaluate"]:
    sys.exit(run("/tmp/s20/unused.json", ("--cost", "layer", "--evaluate",
                                          os.path.join(HERE, "../s19-cpu/search32k/qwen05-32k-meanq.json"))))
sys.exit(run("/tmp/s20/qwen05-32k-meanq-layer.json", ("--match-seed", "--cost", "layer")))
