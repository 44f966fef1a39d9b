#!/usr/bin/env bash
# One device call: install (offline), GPU correctness tests, peak memory, then a benchmark mode.
#   bash benchmarks/gpu_check.sh [tests|alltests|forms|callforms|gpuops|memory|quick|full|long|variants|pairab|regress|ashape|guard|tune|crossover|
#                                 tma|tmavs|tmatests|vsest|vsest-time|chunktests|e2e-dense|e2e-sparse|e2e-1m|e2e-1m-prealloc|e2e-cache-128k|
#                                 e2e-1m-vs|e2e-1m-dense|fa4-env|fa4tests|s7tests|e2e-128k-full|e2e-long4|e2e-long-prof|seed-build|seed-peer|seed-fa4|qk8|vsindex|vsfa4|vsfa4split|h200table|h200table-long|
#                                 fa4-gather|fa4-install|fa4 ...]   (default: tests memory quick)
# Logs go to $OUT (device tool) or benchmarks/results/.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_CACHE_DIR=/tmp/ind
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
# wheels carried once (.whl) stay installed in /tmp/site while the machine is warm
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl; fi
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site; fi
# a real model carried in pieces (.qw/pN or .qwN/pN, one per call) is gathered in /tmp/qw
for d in .qw .qw[0-9]*; do if [ -d "$d" ]; then mkdir -p /tmp/qw && cp "$d"/p* /tmp/qw/ && ls /tmp/qw | tr '\n' ' ' && echo; fi; done
export MINFERENCE_COMPILE_CACHE=/tmp/mc
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
nvidia-smi -L; python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
COMMIT=$(cat .commit 2>/dev/null || echo unknown)
modes=${*:-tests memory quick}
# the seed's per-head config for the e2e seed-config rows (never committed: shared/ on the device, ../shared here)
SEEDCFG=$(ls .seed/Qwen2.5_7B_Instruct_1M.json shared/minference_configs/Qwen2.5_7B_Instruct_1M.json ../shared/minference_configs/Qwen2.5_7B_Instruct_1M.json 2>/dev/null | head -1)
H200_CASES=dense-cudnn,dense-fa4,vs-1000/6096+fa4,vs-1000/6096,vs-100/800+fa4,vs-100/800,bs-top100,bs128-top50+fa4,bs-top100+fa4,ashape-128+4096+fa4,ashape-128+4096,flex-ashape-128+4096
TABLE_CASES=dense-cudnn,dense-flash,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096,flex-ashape-128+4096,flex-bs-top100,flex-vs-1000/6096
for m in $modes; do
  echo "=== $m ==="
  case $m in
    tests) timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py tests/test_gpu_ops.py tests/test_ops_cpu.py::test_sparse_prefill_vs_max_work 2>&1 | tee "$OUT/tests_gpu.log" | tail -25 ;;
    alltests) timeout 500 python3 -m pytest -q -p no:cacheprovider 2>&1 | tee "$OUT/tests_all.log" | tail -25 ;;
    memory) timeout 60 python3 -m benchmarks.memory --seq 128k --shape 32,8,128 2>&1 | tee "$OUT/memory.log" ;;
    quick) timeout 400 python3 -m benchmarks.run --quick --commit "$COMMIT" --out "$OUT" 2>&1 | tail -60 ;;
    full)  # the committed table, part 1: llama3-8b 16K-256K (all backends), the other two shapes at 128K
      timeout 270 python3 -m benchmarks.run --shapes llama3-8b --lengths 16k,32k,64k,128k,256k --cases $TABLE_CASES --max-minutes 4.0 --commit "$COMMIT" --out "$OUT" --tag llama 2>&1 | tail -45
      timeout 120 python3 -m benchmarks.run --shapes qwen2.5-7b,qwen2.5-0.5b --lengths 128k --cases dense-cudnn,dense-flash,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096,flex-ashape-128+4096 --max-minutes 1.6 --commit "$COMMIT" --out "$OUT" --tag qwen 2>&1 | tail -30 ;;
    long)  # part 2: llama3-8b at 512K and 1M
      timeout 400 python3 -m benchmarks.run --shapes llama3-8b --lengths 512k,1m --cases dense-cudnn,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096,flex-ashape-128+4096 --max-minutes 6.0 --commit "$COMMIT" --out "$OUT" --tag llama-long 2>&1 | tail -30 ;;
    pairab)  # VS tile pairing on/off, same run: both shapes, 64K and 128K
      timeout 300 python3 -m benchmarks.run --shapes llama3-8b,qwen2.5-0.5b --lengths 64k,128k --cases dense-cudnn,vs-1000/6096-nopair,vs-1000/6096+pair,vs-100/800-nopair,vs-100/800+pair,bs-top100 --max-minutes 4.5 --commit "$COMMIT" --out "$OUT" --tag pairab 2>&1 | tail -40 ;;
    vsest)  # issue 12: fused VS estimate: its tests, stage times, then the 128K index share fused vs torch (same machine)
      MINFERENCE_FUSED_ESTIMATE=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_vs_estimate_fused.py tests/test_patterns.py 2>&1 | tee "$OUT/tests_vsest.log" | tail -8
      timeout 120 python3 -m benchmarks.vs_index_profile --cuda 2>&1 | tee "$OUT/vsest_stages.log"
      MINFERENCE_FUSED_ESTIMATE=1 timeout 150 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800,vs-1000/6096 --max-minutes 2 --commit "$COMMIT" --out "$OUT" --tag vsest-fused 2>&1 | tail -12
      MINFERENCE_FUSED_ESTIMATE=0 timeout 150 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800,vs-1000/6096 --max-minutes 2 --commit "$COMMIT" --out "$OUT" --tag vsest-torch 2>&1 | tail -12 ;;
    regress)  # one length of the table's own cases: a kernel change against the committed 128K row
      timeout 200 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096,flex-ashape-128+4096 --max-minutes 3 --commit "$COMMIT" --out "$OUT" --tag regress 2>&1 | tail -30 ;;
    ashape)  # A-shape config sweep incl. the key tile width, 128K, both head dims
      timeout 400 python3 -m benchmarks.tune --seq 128k --shapes llama3-8b,qwen2.5-0.5b --kernels ashape --stages 2,3,4 --ashape-bn 64,128 --profile-seq "" 2>&1 | tee "$OUT/tune_ashape.log" | tail -30 ;;
    forms)  # the call-form matrix, pass and TP tests on this image's torch/transformers (CPU tensors)
      timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_call_forms.py tests/test_pass.py tests/test_tensor_parallel.py tests/test_backend_models.py 2>&1 | tee "$OUT/tests_forms.log" | tail -15 ;;
    callforms)  # issue 8: use_cache=False vs True at 128K, 4-layer Llama-3-8B shape, same run
      timeout 400 python3 -m benchmarks.call_forms --length 131072 --out "$OUT/call-forms-128k.json" 2>&1 | tee "$OUT/call_forms.log" | tail -30 ;;
    gputests)  # every GPU-marked test: kernels (incl. query offsets), ops, chunked pre-fill, vs_max_work
      timeout 560 python3 -m pytest -q -p no:cacheprovider -x tests/test_kernels_triton.py tests/test_gpu_ops.py tests/test_gpu_chunked.py tests/test_chunked_ops.py tests/test_ops_cpu.py 2>&1 | tee "$OUT/tests_gpu.log" | tail -25 ;;
    regtests)  # the GPU tests of code merged since the last device run: registry dispatch, aligned tiles, adaptive index, ops
      timeout ${TEST_S:-300} python3 -m pytest -q -p no:cacheprovider tests/test_vs_aligned.py tests/test_gpu_ops.py tests/test_gpu_chunked.py tests/test_kernels_triton.py tests/test_adaptive.py tests/test_eval.py::test_eval_runner_on_gpu_runs_the_kernels ${TEST_EXTRA:-} 2>&1 | tee "$OUT/tests_regtests.log" | tail -25 ;;
    gpuops) timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_ops.py tests/test_ops_cpu.py 2>&1 | tee "$OUT/tests_gpuops.log" | tail -15 ;;
    guard) timeout 120 python3 -m benchmarks.guard --seq 128k 2>&1 | tee "$OUT/guard.log" ;;
    tune) timeout 400 python3 -m benchmarks.tune 2>&1 | tee "$OUT/tune.log" | tail -90 ;;
    chunktests)  # query offset / chunked pre-fill on the GPU (kernels at larger sizes, ops, flash dense chunk path)
      timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_chunked.py tests/test_kernels_triton.py -k "offset or chunk" 2>&1 | tee "$OUT/tests_chunk_gpu.log" | tail -25 ;;
    e2e-dense)  # end to end, one shot, 32K and 128K: eager SDPA, compiled dense, A-shape
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 32k,128k --methods eager-sdpa,compile-dense,ashape --max-minutes 8 --commit "$COMMIT" --out "$OUT" --tag a 2>&1 | tail -30 ;;
    e2e-sparse)  # the same lengths: block-sparse, VS on injected sets, the seed's Qwen2.5-7B-1M config (when present)
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 32k,128k --methods eager-sdpa,block-sparse,vs-injected,seed-config --seed-config "$SEEDCFG" --max-minutes 8 --commit "$COMMIT" --out "$OUT" --tag b 2>&1 | tail -30 ;;
    e2e-1m)  # 1M tokens, chunks of 64K, 16 generated tokens: A-shape and block-sparse at full depth
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --generate 16 --methods ashape,block-sparse --max-minutes 6 --commit "$COMMIT" --out "$OUT" --tag sparse 2>&1 | tail -20 ;;
    e2e-1m-prealloc)  # issue 11 / NOTES E7: the E4 row again (A-shape, 1M in 64K chunks, 16 tokens) with the in-place PrefillCache: peak_mem_gib vs E4's 128.2
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --generate 16 --methods ashape --cache prealloc --max-minutes 8 --commit "$COMMIT" --out "$OUT" --tag prealloc 2>&1 | tail -20 ;;
    e2e-cache-128k)  # NOTES E7: peak of compiled chunked pre-fill at 128K (32K chunks, A-shape, full depth), PrefillCache then DynamicCache; and the GPU peak test
      timeout 120 python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_chunked.py -k "peak or tiny_llama" 2>&1 | tail -8
      for c in prealloc dynamic; do timeout 220 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 128k --chunk 32768 --methods ashape --cache $c --reps 1 --max-minutes 3 --commit "$COMMIT" --out "$OUT" --tag cache-$c 2>&1 | tail -6; done ;;
    e2e-1m-vs)  # 1M chunked, VS (1000, 6096) on injected sets, full depth
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 512k,1m --chunk 65536 --generate 16 --methods vs-injected --max-minutes 6 --commit "$COMMIT" --out "$OUT" --tag vs 2>&1 | tail -20 ;;
    e2e-1m-dense)  # dense chunked pre-fill, same chunk, 4 of 28 layers (scaled by depth in prefill_ms_full_depth)
      timeout 580 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 512k,1m --chunk 65536 --methods eager-sdpa --layers 4 --max-minutes 8 --commit "$COMMIT" --out "$OUT" --tag dense4 2>&1 | tail -20 ;;
    evalsmoke)  # the eval's GPU path on a tiny model; the aligned slash-tile kernel tests
      timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_eval.py tests/test_kernels_triton.py -k "gpu or aligned" 2>&1 | tee "$OUT/tests_evalsmoke.log" | tail -8 ;;
    searched)  # issue 10: kernel time at 128K of the shipped searched / adaptive Qwen2.5-0.5B configs vs cuDNN
      for c in ${SEARCHED:-qwen05 qwen05-adaptive}; do timeout 150 python3 -m benchmarks.searched --config minference_compile/configs/$c.json --seq 128k --index 2>&1 | tee "$OUT/searched-$c-128k.log" | tail -12; done ;;
    aligned)  # issue 12: aligned slash tiles against today's tiles, same run, 128K llama3-8b
      timeout 240 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases ${ALIGNED_CASES:-dense-cudnn,vs-1000/6096,vs-1000/6096+aligned,vs-100/800,vs-100/800+aligned,bs-top100,ashape-128+4096,flex-ashape-128+4096} --max-minutes ${ALIGNED_MIN:-3.5} --commit "$COMMIT" --out "$OUT" --tag aligned 2>&1 | tail -30 ;;
    tma)  # issue 12 / NOTES #17: TMA descriptor loads vs pointer loads at 1-4 stages, 128K; one process per shape
      # (a kernel fault then costs one shape); every +tma row first checks its output against pointer loads
      TMA_CASES=dense-cudnn,bs-top100,bs-top100+tma@s1,bs-top100+tma@s2,bs-top100+tma@s3,bs-top100+tma@s4,ashape-128+4096,ashape-128+4096+tma@s1,ashape-128+4096+tma@s2,ashape-128+4096+tma@s3,ashape-128+4096+tma@s4,bs-top100@s1,bs-top100@s2,bs-top100@s3,bs-top100@s4,ashape-128+4096@s1,ashape-128+4096@s2,ashape-128+4096@s3,ashape-128+4096@s4
      for sh in llama3-8b qwen2.5-0.5b; do
        timeout 75 python3 -m benchmarks.run --shapes $sh --lengths 128k --cases $TMA_CASES --no-index --max-minutes 1.0 --commit "$COMMIT" --out "$OUT" --tag tma-$sh 2>&1 | tail -28
      done ;;
    tmavs)  # the same for vertical-slash (TMA slash tiles; columns stay pointer loads), both budgets, 128K
      TMAVS_CASES=dense-cudnn,vs-1000/6096,vs-1000/6096+tma@s1,vs-1000/6096+tma@s2,vs-1000/6096+tma@s3,vs-1000/6096+tma@s4,vs-100/800,vs-100/800+tma@s1,vs-100/800+tma@s2,vs-100/800+tma@s3,vs-100/800+tma@s4
      for sh in llama3-8b qwen2.5-0.5b; do
        timeout 110 python3 -m benchmarks.run --shapes $sh --lengths 128k --cases $TMAVS_CASES --no-index --max-minutes 1.5 --commit "$COMMIT" --out "$OUT" --tag tmavs-$sh 2>&1 | tail -20
      done ;;
    tmatests)  # the TMA variants' kernel tests, compiled (sm90+: real TMA loads; S up to 1000, bf16 and fp16)
      timeout 450 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_tma.py 2>&1 | tee "$OUT/tests_tma.log" | tail -25 ;;
    e2e-main)  # the e2e table's one-shot rows, one process: eager SDPA, A-shape, VS (injected), block-sparse at 32K and 128K
      timeout ${E2E_S:-450} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 32k,128k --methods eager-sdpa,ashape,vs-injected,block-sparse --max-minutes ${E2E_MIN:-6} --commit "$COMMIT" --out "$OUT" --tag main 2>&1 | tail -30 ;;
    e2e-extra)  # the same lengths: torch.compile dense and the seed's own Qwen2.5-7B-1M per-head config (injected VS sets)
      timeout ${E2E_S:-300} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 32k,128k --methods seed-config,compile-dense --seed-config "$SEEDCFG" --max-minutes ${E2E_MIN:-4} --commit "$COMMIT" --out "$OUT" --tag extra 2>&1 | tail -30 ;;
    e2e-128k-chunk)  # chunked (32K chunks) vs one-shot sparse pre-fill at 128K: A-shape and VS (injected)
      timeout 400 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 128k --chunk 32768 --methods ashape,vs-injected --max-minutes 5 --commit "$COMMIT" --out "$OUT" --tag chunk32k 2>&1 | tail -20 ;;
    e2e-chunk-ratio)  # issue 11: chunked (32K) vs one-shot sparse pre-fill at 128K in ONE process, LAYERS deep (default 4)
      timeout ${E2E_S:-300} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 128k --chunk 0,32768 --layers ${LAYERS:-4} --methods ${E2E_METHODS:-eager-sdpa,ashape,vs-injected} --max-minutes ${E2E_MIN:-4} --commit "$COMMIT" --out "$OUT" --tag ratio 2>&1 | tail -20 ;;
    s7tests)  # the GPU tests not yet run on the H200 with today's defaults: antidiagonal (fused mass), PrefillCache, chunked, ops
      timeout ${TEST_S:-240} python3 -m pytest -q -p no:cacheprovider -rf tests/test_antidiag.py tests/test_prefill_cache.py tests/test_gpu_chunked.py tests/test_gpu_ops.py 2>&1 | tee "$OUT/tests_s7.log" | tail -12 ;;
    e2e-128k-full)  # issue 11: full-depth 128K one shot, every method in one process, with a profiled pre-fill each
      timeout ${E2E_S:-540} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 128k --methods ${E2E_METHODS:-eager-sdpa,ashape,vs-injected,block-sparse} --reps 2 --profile --max-minutes ${E2E_MIN:-7.2} --commit "$COMMIT" --out "$OUT" --tag full128k 2>&1 | grep -v "^USDT" | tail -80 ;;
    e2e-long4)  # issue 11: 512K and 1M in 64K chunks, 4 of 28 layers (scaled by depth), every method in one process
      timeout ${E2E_S:-540} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 512k,1m --chunk 65536 --layers 4 --methods ${E2E_METHODS:-eager-sdpa,ashape,block-sparse,vs-injected} --max-minutes ${E2E_MIN:-7.5} --commit "$COMMIT" --out "$OUT" --tag long4 2>&1 | grep -v "^USDT" | tail -30 ;;
    e2e-long-prof)  # NOTES E10: block-sparse and VS at 1M in 64K chunks, 4 layers, timed twice and profiled (where the time goes)
      timeout ${E2E_S:-540} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --layers 4 --methods ${E2E_METHODS:-block-sparse,vs-injected} --profile --max-minutes ${E2E_MIN:-7} --commit "$COMMIT" --out "$OUT" --tag longprof 2>&1 | grep -v "^USDT\|^minference_compile INFO" | tail -40 ;;
    qk8)  # issue 12: the VS kernel with fp8 / int8 Q.K^T operands vs itself in bf16 and cuDNN, 128K, both shapes
      timeout ${QK8_S:-300} python3 -m benchmarks.run --shapes llama3-8b,qwen2.5-0.5b --lengths 128k --cases dense-cudnn,vs-1000/6096,vs-1000/6096+fp8,vs-1000/6096+int8,vs-100/800,vs-100/800+fp8,vs-100/800+int8 --no-index --max-minutes 4 --commit "$COMMIT" --out "$OUT" --tag qk8 2>&1 | tail -24
      timeout ${QK8T_S:-200} python3 -m pytest -q -p no:cacheprovider -rf tests/test_vs_qk8.py 2>&1 | tee "$OUT/tests_qk8.log" | tail -4 ;;
    seed-build)  # issue 12: the seed's source (MInference 0.1.6.0 sdist, carried as .seed/, sha-checked) with its CUDA index converter built in place
      ( echo "232540a7a7764e4d1db181e76730fd47ff6097f21760b2bef13a94de00bdea0e  .seed/minference-0.1.6.0.tar.gz" | sha256sum -c - ) || exit 1
      mkdir -p /tmp/seedsrc && tar xzf .seed/minference-0.1.6.0.tar.gz -C /tmp/seedsrc
      ( cd /tmp/seedsrc/minference-0.1.6.0 && TORCH_CUDA_ARCH_LIST=9.0 timeout 400 python3 setup.py build_ext --inplace > /tmp/seedsrc/build.log 2>&1; tail -3 /tmp/seedsrc/build.log; ls minference/*.so ) ;;
    seed-peer)  # issue 12: the seed's VS kernel vs ours on the same generated sets, cuDNN in the same process, 128K llama3-8b (after seed-build)
      MINFERENCE_SEED_DIR=/tmp/seedsrc/minference-0.1.6.0 timeout ${SEED_S:-300} python3 -m benchmarks.run --shapes ${SEED_SHAPES:-llama3-8b} --lengths ${SEED_SEQ:-128k} --cases dense-cudnn,vs-1000/6096,seed-vs-1000/6096,vs-100/800,seed-vs-100/800 --max-minutes 4 --commit "$COMMIT" --out "$OUT" --tag seed 2>&1 | tail -20 ;;
    s16idx)  # session 16: GPU tests of the adaptive select changes, the adaptive / VS index builds timed with kernel tables
      N=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
      timeout ${TEST_S:-200} python3 -m pytest -q -p no:cacheprovider $N -rf tests/test_block_mass_select.py tests/test_antidiag_kernel.py tests/test_adaptive.py tests/test_antidiag.py tests/test_vs_index_fused.py -k "not large" 2>&1 | tee "$OUT/tests_adaptive_s16.log" | tail -6
      timeout 150 python3 -m benchmarks.searched --config minference_compile/configs/qwen05.json --seq 128k --index --kernels 2>&1 | tee "$OUT/searched-qwen05-index.log" | tail -45
      timeout 90 python3 -m benchmarks.vs_index_profile --cuda 2>&1 | tee "$OUT/vs_index_stages.log" ;;
    s16probe)  # session 16 (after fa4-env): why FA4's A-shape runs slower in the model (layout / data / GEMM before), and
      # the pooled adaptive block-sparse build with the fused softmax + select kernel (qwen2.5-0.5b shape, 128K)
      timeout 150 python3 -m benchmarks.fa4_ashape_probe 2>&1 | grep -v "^USDT" | tee "$OUT/fa4_ashape_probe.log"
      timeout 120 python3 -m benchmarks.searched --config minference_compile/configs/qwen05.json --seq 128k --layers 0 --index --kernels 2>&1 | tee "$OUT/searched-qwen05-index-pooled.log" | grep -v "^USDT" | tail -40 ;;
    s16vsest)  # session 16: the VS estimate with the diagonal carry (half the atomics): its GPU tests, stage times, 128K share
      timeout 70 python3 -m pytest -q -p no:cacheprovider -rf tests/test_vs_estimate_fused.py 2>&1 | tee "$OUT/tests_vsest_s16.log" | tail -3
      timeout 60 python3 -m benchmarks.vs_index_profile --cuda --budgets 100/800 2>&1 | grep -v "^USDT\|Warn\|warn" | tee "$OUT/vs_index_stages_carry.log" | head -12
      timeout 110 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800 --max-minutes 1.2 --commit "$COMMIT" --out "$OUT" --tag vsest-carry 2>&1 | grep -v "^USDT" | grep -A4 "index-build share\|vs-100" | head -12 ;;
    s17a)  # session 17: the fused estimate's launch size, its GPU tests to the end, session 16's cut tests, --cost time vs work
      timeout 90 python3 -m benchmarks.vs_index_profile --cuda --budgets 100/800 --programs 512,1024,2048,4096 2>&1 | grep -v "^USDT\|Warn\|warn" | tee "$OUT/vs_index_programs.log" | tail -14
      for P in 512 2048; do MINFERENCE_VS_EST_PROGRAMS=$P timeout 100 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800 --max-minutes 1.2 --commit "$COMMIT" --out "$OUT" --tag vsest-p$P 2>&1 | grep -v "^USDT" | grep -A4 "index-build share\|vs-100" | head -8; done
      for C in work time; do timeout 100 python3 -m benchmarks.searched --config benchmarks/results/s16-cpu/qwen05-32kw-match-adaptive-$C.json --seq 128k --index 2>&1 | tee "$OUT/searched-cost-$C.log" | tail -14; done ;;
    carry)  # nothing: the header above gathered this call's carried piece
      ;;
    s18a)  # session 18: block_sparse_128 (128 x 128 blocks, top-50: bs-top100's keys per row) on FA4 and on the Triton
      # kernel vs bs-top100 (Triton, and FA4 on the same 64 x 64 blocks), cuDNN, FA4 dense, FlexAttention, 128K, both
      # shapes, one process; then PPL of the qwen05 configs at 16K / 32K on held-out natural text (one process), then
      # the wide 32K search with the bs128 candidates (scores back for CPU selections)
      timeout 230 python3 -m benchmarks.run --shapes llama3-8b,qwen2.5-0.5b --lengths 128k --cases dense-cudnn,dense-fa4,bs-top100,bs-top100+fa4,bs128-top50+fa4,bs128-top50,flex-bs-top100 --max-minutes 3.4 --commit "$COMMIT" --out "$OUT" --tag bs128 2>&1 | grep -v "^USDT" | tail -24
      timeout 200 python3 -m benchmarks.search_ppl --model /tmp/mc/models/qwen05 --lengths 16384,32768 --configs minference_compile/configs/qwen05-fast.json,benchmarks/results/s16-cpu/qwen05-32kw-match-adaptive-work.json,minference_compile/configs/qwen05.json,minference_compile/configs/qwen05-adaptive.json,seed,small 2>&1 | grep -v "Loading\|^USDT" | tee "$OUT/ppl-qwen05-configs.log"
      ;;
    s18search)  # session 18: the wide 32K search with the bs128 candidates (scores back for CPU selections; after qwen-join)
      W=/tmp/s32w; mkdir -p "$W" "$OUT/searchwide"
      timeout ${SEARCH_S:-300} python3 -m minference_compile.cli search qwen05 --device cuda --dtype bfloat16 --prompts natural,kv --lengths 32768 --candidates wide --workdir /tmp/searchwide --out "$W/qwen05-32kw.json" > "$OUT/searchwide/search.log" 2>&1; tail -n 6 "$OUT/searchwide/search.log"
      (cd /tmp && find searchwide -name 'eval*.pt' -o -name '*.json' | tar cf "$OUT/searchwide/scores.tar" -T -) ;;
    s18tests)  # session 18: the [hopper] extra's GPU tests session 16 cut, block_sparse_128 (FA4 real), the select kernel's block
      timeout ${S18T_S:-420} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_fa4_ops.py tests/test_fa4_forms.py tests/test_block_sparse_128.py tests/test_search.py "tests/test_kernels_triton.py::test_block_sparse_index" tests/test_vs_tiled.py 2>&1 | tee "$OUT/tests_s18.log" | tail -12 ;;
    s18b)  # session 18, after fa4-install fa4-env: block_sparse_128's GPU tests again (s18tests' 16 failures were the test's
      # own device mismatch), then bs128 against bs-top100 and cuDNN at 128K in a second process
      timeout 200 python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_128.py "tests/test_kernels_triton.py::test_registry_kernel_path" 2>&1 | tee "$OUT/tests_bs128.log" | tail -6
      timeout 150 python3 -m benchmarks.run --shapes llama3-8b,qwen2.5-0.5b --lengths 128k --cases dense-cudnn,bs-top100,bs128-top50+fa4,bs128-top50 --max-minutes 2 --commit "$COMMIT" --out "$OUT" --tag bs128b 2>&1 | grep -v "^USDT" | grep -A12 "## time\|## speedup" | head -30 ;;
    s18c)  # session 18, after fa4-install fa4-env: the FA4 list-width fix (mask lists no wider than the key tiles at S <= 128)
      timeout 300 python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_128.py "tests/test_kernels_triton.py::test_registry_kernel_path" tests/test_vs_tiled.py tests/test_fa4_ops.py 2>&1 | tee "$OUT/tests_s18c.log" | tail -6 ;;
    s18d)  # session 18, after fa4-install fa4-env: block_sparse_128's GPU tests once more (s18c's 7 failures: the test's
      # reference-vs-reference tolerance on bf16)
      timeout 150 python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_128.py "tests/test_kernels_triton.py::test_registry_kernel_path" 2>&1 | tee "$OUT/tests_s18d.log" | tail -4 ;;
    s17c)  # session 17: one VS estimate per layer call (fixed + adaptive heads): GPU tests, op index per layer shared vs not
      # (session 17's s17b ran the reverted head-subset build, NOTES row 37; its logs are in results/s17-h200/)
      timeout 120 python3 -m pytest -q -p no:cacheprovider -rf tests/test_shared_estimate.py tests/test_vs_estimate_fused.py tests/test_adaptive.py tests/test_patterns.py 2>&1 | tee "$OUT/tests_shared.log" | tail -4
      for C in benchmarks/results/s16-cpu/qwen05-32kw-match-adaptive-time.json benchmarks/results/s16-cpu/qwen05-32kw-match-adaptive-work.json; do
        timeout 120 python3 -m benchmarks.searched --config $C --seq 128k --op-index 2>&1 | tee "$OUT/opindex-shared-$(basename $C .json).log" | tail -3; done ;;
    s17tests)  # session 17: the GPU tests session 16's limits cut
      N=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
      timeout ${TEST_S:-250} python3 -m pytest -q -p no:cacheprovider $N -rf tests/test_vs_estimate_fused.py tests/test_block_mass_select.py tests/test_antidiag_kernel.py tests/test_adaptive.py tests/test_antidiag.py tests/test_vs_index_fused.py -k "not large" 2>&1 | tee "$OUT/tests_s17.log" | tail -8 ;;
    vsidx-large)  # the fused VS index builder at its opt-in large budgets (minutes of JIT)
      timeout ${LARGE_S:-400} python3 -m pytest -v -m "" -p no:cacheprovider tests/test_vs_index_fused.py -k large 2>&1 | tee "$OUT/tests_vsindex_large.log" | tail -8 ;;
    e2e-bs-long)  # block-sparse top-100, chunks of 64K, 512K and 1M, 16 generated tokens, full depth
      timeout 560 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 512k,1m --chunk 65536 --generate 16 --methods block-sparse --max-minutes 7 --commit "$COMMIT" --out "$OUT" --tag bs 2>&1 | tail -20 ;;
    e2e-512k-dense)  # dense chunked pre-fill at 512K on 2 of 28 layers (scaled by depth)
      timeout 200 python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 512k --chunk 65536 --methods eager-sdpa --layers 2 --max-minutes 3 --commit "$COMMIT" --out "$OUT" --tag dense2 2>&1 | tail -20 ;;
    qwen-join)  # join the carried Qwen2.5-Coder-0.5B GGUF, sha-check and export it (minference-compile fetch)
      mkdir -p /tmp/mc/models && cat /tmp/qw/p* > /tmp/mc/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf && python3 -m minference_compile.cli fetch qwen05 2>&1 | tail -5 ;;
    qwen-search|qwen-eval2)  # qwen-eval2: issue 9's evals (needle 4K-32K x 5 depths, kv 50 at 16K; adaptive also ppl/recall)
      # in parallel with the search. qwen-search: issue 10's per-head search at 32K on both calibration prompts (all
      # candidates), three selections from one scoring (per head >= 0.97; --match-seed; --match-seed fixed only), 128K kernels
      run_eval() { n=$1; shift; timeout ${EVAL_S:-400} python3 -m minference_compile.cli eval qwen05 --device cuda --no-progress --quiet --out /tmp/ev/$n "$@" > "$OUT/eval-$n.log" 2>&1; }
      mkdir -p /tmp/ev
      if [ $m = qwen-eval2 ]; then
        run_eval default --config default --tasks needle,kv --lengths 4k,8k,16k,32k --kv-lengths 16k --kv-samples 50 &
        run_eval qwen05 --config minference_compile/configs/qwen05.json --tasks needle,kv --lengths 4k,8k,16k,32k --kv-lengths 16k --kv-samples 50 &
        run_eval qwen05-adaptive --config minference_compile/configs/qwen05-adaptive.json --tasks needle,ppl,kv,recall --lengths 4k,8k,16k,32k --ppl-lengths 16k,32k --recall-lengths 32k --kv-lengths 16k --kv-samples 50 &
      fi
      S32=/tmp/s32cfg; mkdir -p "$S32" "$OUT/search32k"
      timeout ${SEARCH_S:-300} python3 -m minference_compile.cli search qwen05 --device cuda --prompts natural,kv --lengths 32768 --out "$S32/qwen05-32k.json" --workdir /tmp/search32k > "$OUT/search32k/search.log" 2>&1
      timeout 60 python3 -m minference_compile.cli search qwen05 --device cuda --prompts natural,kv --lengths 32768 --out "$S32/qwen05-32k-match.json" --workdir /tmp/search32k --match-seed > "$OUT/search32k/match.log" 2>&1
      timeout 60 python3 -m minference_compile.cli search qwen05 --device cuda --prompts natural,kv --lengths 32768 --out "$S32/qwen05-32k-match-fixed.json" --workdir /tmp/search32k --match-seed --allow fixed > "$OUT/search32k/match-fixed.log" 2>&1
      cp "$S32"/*.json "$OUT/search32k/" 2>/dev/null; (cd /tmp && find search32k -name 'eval*.pt' -o -name '*.json' | tar cf "$OUT/search32k/scores.tar" -T -)
      for f in search match match-fixed; do echo "--- search32k/$f.log"; tail -n 12 "$OUT/search32k/$f.log"; done
      if [ $m = qwen-eval2 ]; then  # the selected configs' accuracy, in what is left of the call (the GPU is shared: no timing here)
        left=$(( ${CALL_S:-570} - SECONDS )); echo "eval3 budget ${left}s"
        for c in "$S32/qwen05-32k-match.json" "$S32/qwen05-32k-match-fixed.json"; do
          [ -f "$c" ] && [ $left -gt 60 ] && EVAL_S=$left run_eval "$(basename $c .json)" --config "$c" --tasks ppl,recall,kv --lengths 16k,32k --ppl-lengths 16k,32k --recall-lengths 32k --kv-lengths 16k --kv-samples ${KV3:-30} &
        done
      fi
      wait; (cd /tmp/ev && tar cf "$OUT/eval-results.tar" .); for f in "$OUT"/eval-*.log; do echo "--- $f"; grep -A40 "^checks" "$f" | head -14; done ;;
    qwen-wide)  # issue 10, session 14: the 32K search on both prompts over the WIDE candidate grid (bf16), four selections
      # from one scoring (match seed: everything / no antidiagonal / fixed only; per head >= 0.97), the scores tarred back,
      # then each match selection's kernels at 128K alone on the GPU (index builds timed apart)
      W=/tmp/s32w; mkdir -p "$W" "$OUT/searchwide"
      srch() { timeout ${2:-60} python3 -m minference_compile.cli search qwen05 --device cuda --dtype bfloat16 --prompts natural,kv --lengths 32768 --candidates wide --workdir /tmp/searchwide --out "$W/$1.json" "${@:3}" > "$OUT/searchwide/$1.log" 2>&1; tail -n 9 "$OUT/searchwide/$1.log"; }
      srch qwen05-32kw ${SEARCH_S:-400}
      srch qwen05-32kw-match 60 --match-seed
      srch qwen05-32kw-match-adaptive 60 --match-seed --allow all
      srch qwen05-32kw-match-fixed 60 --match-seed --allow fixed
      cp "$W"/*.json "$OUT/searchwide/" 2>/dev/null; (cd /tmp && find searchwide -name 'eval*.pt' -o -name '*.json' | tar cf "$OUT/searchwide/scores.tar" -T -)
      for c in ${WIDE_TIMED:-qwen05-32kw-match qwen05-32kw-match-adaptive}; do [ -f "$W/$c.json" ] && timeout 100 python3 -m benchmarks.searched --config "$W/$c.json" --seq 128k --index 2>&1 | tee "$OUT/searchwide/searched-$c-128k.log" | tail -4; done ;;
    qwen-wide-eval)  # perplexity (16K, 32K) and recall (32K) of the wide selections vs dense in one eval process
      timeout ${EVAL_S:-500} python3 -m minference_compile.cli eval qwen05 --device cuda --no-progress --quiet --out /tmp/evw \
        --config $(ls /tmp/s32w/qwen05-32kw-match*.json | grep -v search.json | tr '\n' ',' | sed 's/,$//') \
        --tasks ppl,recall --ppl-lengths 16k,32k --recall-lengths 32k > "$OUT/eval-wide.log" 2>&1
      (cd /tmp/evw && tar cf "$OUT/eval-wide.tar" .); grep -B2 -A30 "^checks" "$OUT/eval-wide.log" | head -60 ;;
    searched32k)  # kernel time at 128K of the configs qwen-search selected (alone on the GPU)
      for c in ${SEARCHED32:-qwen05-32k-match}; do timeout 90 python3 -m benchmarks.searched --config "/tmp/s32cfg/$c.json" --seq 128k --index 2>&1 | tee "$OUT/searched-$c-128k.log" | tail -4; done ;;
    fa4-gather)  # issue 12: FlashAttention-4 wheels carried in pieces (.fa4/c1, .fa4/c2, optional .fa4/c3; one per call,
      # benchmarks/fa4_carry.md) are gathered in /tmp/fa4pieces while the machine is warm
      # (or .fa4/d1-d3: the cu13 wheel in three 40 MB parts, when the tree is too large for 51 MB pieces)
      mkdir -p /tmp/fa4pieces; for d in .fa4/c1 .fa4/c2 .fa4/c3 .fa4/d1 .fa4/d2 .fa4/d3; do [ -d "$d" ] && cp "$d"/* /tmp/fa4pieces/; done
      ls -l /tmp/fa4pieces ;;
    fa4-install)  # join the split cu13 wheel, sha-check every wheel, install offline into /tmp/fa4 (--target, no deps)
      SUMS=$PWD/benchmarks/fa4_wheels.sha256; OPT=$PWD/benchmarks/fa4_wheels_opt.sha256
      ( cd /tmp/fa4pieces 2>/dev/null || { echo "fa4-install: no /tmp/fa4pieces (run fa4-gather with .fa4/c1, then .fa4/c2)"; exit 1; }
        [ -f cu13.whl.part0 ] && [ -f cu13.whl.part1 ] || { echo "fa4-install: missing cu13.whl.part0/part1: $(ls)"; exit 1; }
        cat $(ls cu13.whl.part* | sort) > nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
        grep -v '^#' "$SUMS" | sha256sum -c - || { echo "fa4-install: sha256 mismatch"; exit 1; }
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fa4 $(grep -v '^#' "$SUMS" | awk '{print $2}') || exit 1
        # dependencies the image normally has (the earlier H200 install needed none): from .fa4/c3 only where missing
        for pair in einops:einops-0 google.protobuf:protobuf-7 cuda.pathfinder:cuda_pathfinder-1 cuda.bindings:cuda_bindings-13; do
          mod=${pair%%:*}; whl=$(ls ${pair#*:}*.whl 2>/dev/null | head -1)
          python3 -c "import $mod" 2>/dev/null && continue
          if [ -n "$whl" ] && grep -v '^#' "$OPT" | grep " $whl\$" | sha256sum -c - >/dev/null; then
            python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fa4 "$whl" && echo "installed $whl (image lacks $mod)"
          else echo "fa4-install: the image lacks $mod: carry .fa4/c3 in a call with fa4-gather fa4-install"; fi
        done ) && echo "fa4-install: ok (/tmp/fa4)" ;;
    fa4)  # issue 12: FA4 dense / block-sparse / A-shape vs cuDNN and our kernels, 128K, both head dims, one process
      [ -d /tmp/fa4 ] || echo "fa4: /tmp/fa4 missing (fa4-install first): the benchmark will say flash_attn.cute is not importable"
      # (FA4 JIT-compiles each kernel variant on first call; the disk cache helps a second run on the same machine)
      PYTHONPATH=/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH} TVM_FFI_DISABLE_TORCH_C_DLPACK=1 \
      FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4cache \
        timeout ${FA4_S:-500} python3 -m benchmarks.fa4_peer --seq ${FA4_SEQ:-128k} --shapes ${FA4_SHAPES:-llama3-8b,qwen2.5-0.5b} --max-minutes ${FA4_MIN:-7.3} --out "$OUT" ${FA4_ARGS:-} 2>&1 | tee "$OUT/fa4_peer.log" | tail -45 ;;
    fa4-env)  # the [hopper] extra for the modes after it: FA4 from /tmp/fa4 (fa4-install) on the path
      export PYTHONPATH=/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH} TVM_FFI_DISABLE_TORCH_C_DLPACK=1 \
        FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4cache
      python3 -c "from minference_compile.ops import fa4; import torch; q = torch.zeros(1, 2, 8, 64, device='cuda', dtype=torch.bfloat16); print('fa4 path:', fa4.reason(q, q) or 'on')" ;;
    fa4tests)  # the [hopper] extra's GPU tests (after fa4-install fa4-env): FA4 A-shape / dense vs the naive references, op on/off
      timeout ${FA4T_S:-200} python3 -m pytest -q -p no:cacheprovider -rf tests/test_fa4_ops.py tests/test_fa4_forms.py 2>&1 | tee "$OUT/tests_fa4.log" | tail -8 ;;
    vsfa4)  # issue 12 / NOTES row 25: 128-tiled VS on FA4 tile lists + Triton columns (after fa4-install fa4-env): its GPU
      # tests, then 128K kernel rows against the Triton VS kernel and cuDNN in one process per shape
      timeout ${VSF_S:-150} python3 -m pytest -q -p no:cacheprovider -rf tests/test_vs_tiled.py 2>&1 | tee "$OUT/tests_vsfa4.log" | tail -4
      for sh in ${VSF_SHAPES:-llama3-8b qwen2.5-0.5b}; do timeout 130 python3 -m benchmarks.run --shapes $sh --lengths ${VSF_LEN:-128k} --cases dense-cudnn,vs-1000/6096,vs-1000/6096+fa4,vs-1000/6096+fa4k64,vs-100/800,vs-100/800+fa4,vs-100/800+fa4k64 --max-minutes 1.9 --commit "$COMMIT" --out "$OUT" --tag vsfa4-$sh 2>&1 | grep -v "^USDT" | tail -12; done ;;
    vsfa4split)  # NOTES row 26: VS on FA4 tiles split into lists / FA4 / columns pass (each columns config), 128K and the
      # last 64K chunk of 1M, llama3-8b shape (after fa4-install fa4-env)
      timeout ${VSS_S:-240} python3 -m benchmarks.vs_fa4_split --out "$OUT/vs-fa4-split.json" 2>&1 | grep -v "^USDT" | tail -12 ;;
    seed-fa4)  # issue 12: the seed's VS kernel vs ours on Triton and on FA4 tiles, same sets, cuDNN in the same process (after seed-build, fa4-env)
      MINFERENCE_SEED_DIR=/tmp/seedsrc/minference-0.1.6.0 timeout ${SEED_S:-300} python3 -m benchmarks.run --shapes ${SEED_SHAPES:-llama3-8b} --lengths ${SEED_SEQ:-128k} --cases dense-cudnn,vs-1000/6096,vs-1000/6096+fa4,seed-vs-1000/6096,vs-100/800,vs-100/800+fa4,seed-vs-100/800,flex-ashape-128+4096,ashape-128+4096,ashape-128+4096+fa4 --max-minutes 4 --commit "$COMMIT" --out "$OUT" --tag seedfa4 2>&1 | grep -v "^USDT" | tail -20 ;;
    vsindex)  # issue 12 / NOTES row 24: the two-launch VS index builder: its GPU tests, then the 128K index share fused vs torch
      timeout ${VSI_S:-200} python3 -m pytest -q -p no:cacheprovider -rf -n ${VSI_N:-0} tests/test_vs_index_fused.py 2>&1 | tee "$OUT/tests_vsindex.log" | tail -4
      for f in 1 0; do MINFERENCE_FUSED_VS_INDEX=$f timeout 100 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800,vs-1000/6096 --max-minutes 1.3 --commit "$COMMIT" --out "$OUT" --tag vsindex$f 2>&1 | grep -A4 "index-build share"; done ;;
    vsest-time)  # the fused VS estimate vs the torch one: VS rows at 128K (index share), one process each (the switch is read per call)
      for f in 1 0; do MINFERENCE_FUSED_ESTIMATE=$f timeout 90 python3 -m benchmarks.run --shapes llama3-8b --lengths 128k --cases dense-cudnn,vs-100/800,vs-1000/6096 --max-minutes 1.2 --commit "$COMMIT" --out "$OUT" --tag vsest-fused$f 2>&1 | tail -14; done ;;
    h200table)  # issue 12: the README kernel table from one process per shape (after fa4-install fa4-env): every default
      # path (FA4 tiles / A-shape with [hopper], Triton) next to cuDNN, flash, FA4 dense and FlexAttention, 16K-128K
      timeout ${TAB_S:-300} python3 -m benchmarks.run --shapes llama3-8b --lengths ${TAB_LEN:-16k,64k,128k} --cases $H200_CASES,dense-flash,flex-bs-top100,vs-1000/6096+fp8 --max-minutes ${TAB_MIN:-4.3} --commit "$COMMIT" --out "$OUT" --tag h200table 2>&1 | grep -v "^USDT" | tail -48
      timeout 90 python3 -m benchmarks.run --shapes qwen2.5-0.5b --lengths 128k --cases dense-cudnn,dense-flash,dense-fa4,vs-1000/6096,vs-100/800,bs-top100,ashape-128+4096+fa4,ashape-128+4096,flex-ashape-128+4096 --max-minutes 1.2 --commit "$COMMIT" --out "$OUT" --tag h200table-qwen05 2>&1 | grep -v "^USDT" | tail -14 ;;
    h200table-long)  # the same table at 512K and 1M (one process; no index / op timing: the dense rows alone take ~150 s at 1M)
      timeout ${TABL_S:-330} python3 -m benchmarks.run --shapes llama3-8b --lengths 512k,1m --cases ${H200_CASES#dense-cudnn,dense-fa4,},dense-cudnn,dense-fa4 --no-index --max-minutes ${TABL_MIN:-4.8} --commit "$COMMIT" --out "$OUT" --tag h200table-long 2>&1 | grep -v "^USDT" | tail -40 ;;
    s19tests)  # session 19 (after fa4-install fa4-env): the GPU tests of 5e447c0 (VS tile lists' mask-list width, the shared topk_index)
      timeout ${S19T_S:-200} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_vs_tiled.py tests/test_block_sparse_128.py 2>&1 | tee "$OUT/tests_s19.log" | tail -6 ;;
    s19e15)  # session 19: NOTES E15 again at HEAD (1M in 64K chunks, 4 of 28 layers, VS on FA4 tiles vs dense chunked, one process, profiled)
      timeout ${E2E_S:-480} python3 -m benchmarks.e2e --shape qwen2.5-7b --lengths 1m --chunk 65536 --layers 4 --methods ${E2E_METHODS:-vs-injected-fa4,eager-sdpa} --profile --max-minutes ${E2E_MIN:-7.5} --commit "$COMMIT" --out "$OUT" --tag s19e15 2>&1 | grep -v "^USDT\|^minference_compile INFO" | tail -45 ;;
    h200table-1m)  # the table's 1M column alone (h200table-long ran out of its minutes before cuDNN there): cuDNN first
      timeout ${TAB1_S:-400} python3 -m benchmarks.run --shapes llama3-8b --lengths 1m --cases dense-cudnn,dense-fa4,$(echo ${H200_CASES#dense-cudnn,dense-fa4,} | sed "s/,bs-top100+fa4//") --no-index --max-minutes ${TAB1_MIN:-6} --commit "$COMMIT" --out "$OUT" --tag h200table-1m 2>&1 | grep -v "^USDT" | tail -40 ;;
    s19meanq)  # session 19: block_sparse_meanq's GPU tests (the log-mass kernel compiled, the fused select, the registry kernel
      # path), then its index build and kernel at 128K against bs-top100 and cuDNN, both shapes, one process each
      timeout ${S19M_S:-150} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_meanq.py tests/test_block_mass_select.py "tests/test_kernels_triton.py::test_registry_kernel_path" 2>&1 | tee "$OUT/tests_s19meanq.log" | tail -5
      for sh in llama3-8b qwen2.5-0.5b; do timeout 100 python3 -m benchmarks.run --shapes $sh --lengths 128k --cases dense-cudnn,bs-top100,bsq-top100 --max-minutes 1.4 --commit "$COMMIT" --out "$OUT" --tag s19meanq-$sh 2>&1 | grep -v "^USDT" | sed -n '/## ms (kernel/,/## efficiency/p;/index-build/,/crossover/p' | head -30; done ;;
    s20a)  # session 20: the mean-query log-mass kernel's key split and the one index per layer (GPU tests), then its
      # launch configs at 128K on both shapes (the best over both in /tmp/meanq_best for s20b)
      timeout ${S20T_S:-150} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_meanq.py tests/test_shared_estimate.py tests/test_block_mass_select.py "tests/test_kernels_triton.py::test_registry_kernel_path" 2>&1 | tee "$OUT/tests_s20.log" | tail -5
      timeout ${TUNE_S:-330} python3 -m benchmarks.tune_meanq --seq 128k --out "$OUT/tune_meanq.json" --best /tmp/meanq_best 2>&1 | grep -v "^USDT" | tee "$OUT/tune_meanq.log" | tail -75; echo "best: $(cat /tmp/meanq_best 2>/dev/null)" ;;
    s20b)  # session 20 (after qwen-join; s20a's tuned launch when the machine is still warm): perplexity of the 32K
      # mean-query search selection vs dense, qwen05-fast and the seed, then kernels + the op's index builds at 128K
      export MINFERENCE_MEANQ_CONFIG=$(cat /tmp/meanq_best 2>/dev/null); echo "meanq launch: ${MINFERENCE_MEANQ_CONFIG:-default}"
      MQ=benchmarks/results/s19-cpu/search32k/qwen05-32k-meanq.json
      timeout ${PPL_S:-240} python3 -m benchmarks.search_ppl --model /tmp/mc/models/qwen05 --lengths 16384,32768 --configs $MQ,minference_compile/configs/qwen05-fast.json,seed 2>&1 | grep -v "Loading\|^USDT\|UserWarning\|exe_args" | tee "$OUT/ppl-s20.log"
      for C in $MQ minference_compile/configs/qwen05-fast.json; do
        timeout 120 python3 -m benchmarks.searched --config $C --seq 128k --op-index 2>&1 | grep -v "^USDT" | tee "$OUT/opindex-s20-$(basename $C .json).log" | tail -4; done ;;
    s20c)  # session 20: GPU tests of the select's skipped bisections, the select's warps (and log-mass launches near s20a's best)
      timeout ${S20T_S:-150} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_block_sparse_meanq.py tests/test_shared_estimate.py tests/test_block_mass_select.py tests/test_adaptive*.py "tests/test_kernels_triton.py::test_registry_kernel_path" 2>&1 | tee "$OUT/tests_s20c.log" | tail -5
      timeout ${TUNE_S:-200} python3 -m benchmarks.tune_meanq --seq 128k --configs "64,64,4,2;64,32,4,2;64,128,4,2;64,64,4,1;128,64,8,3" --out "$OUT/tune_select.json" --best /tmp/meanq_best 2>&1 | grep -v "^USDT" | tee "$OUT/tune_select.log" | tail -30 ;;
    s20d)  # session 20 (after qwen-join): the layer-charged selection (search --cost layer) vs s19's: perplexity, then
      # kernels + the op's index builds at 128K (SELECT_WARPS: s20c's best, passed in the command)
      export MINFERENCE_MEANQ_CONFIG=$(cat /tmp/meanq_best 2>/dev/null) MINFERENCE_SELECT_WARPS=$(cat /tmp/meanq_best.select 2>/dev/null)
      echo "meanq launch: ${MINFERENCE_MEANQ_CONFIG:-default}; select warps: ${MINFERENCE_SELECT_WARPS:-default}"
      L=benchmarks/results/s20-cpu/qwen05-32k-meanq-layer.json; MQ=benchmarks/results/s19-cpu/search32k/qwen05-32k-meanq.json
      timeout ${PPL_S:-200} python3 -m benchmarks.search_ppl --model /tmp/mc/models/qwen05 --lengths 16384,32768 --configs $L 2>&1 | grep -v "Loading\|^USDT\|UserWarning\|exe_args" | tee "$OUT/ppl-s20d.log"
      for C in $L $MQ; do
        timeout 120 python3 -m benchmarks.searched --config $C --seq 128k --op-index 2>&1 | grep -v "^USDT" | tee "$OUT/opindex-s20d-$(basename $C .json).log" | tail -4; done ;;
    s20e)  # session 20: dense heads of mixed layers on SDPA per kv head (GPU tests), then kernels + the op's index builds
      # at 128K of the layer-charged selection and of qwen05-fast (MINFERENCE_SELECT_WARPS as s20c found)
      timeout ${S20T_S:-150} python3 -m pytest -q -p no:cacheprovider -rf -n 6 tests/test_kernels_triton.py -k "dense_heads or registry_kernel_path" tests/test_gpu_ops.py 2>&1 | tee "$OUT/tests_s20e.log" | tail -5
      for C in benchmarks/results/s20-cpu/qwen05-32k-meanq-layer.json minference_compile/configs/qwen05-fast.json; do
        MINFERENCE_SELECT_WARPS=2048:4 timeout 150 python3 -m benchmarks.searched --config $C --seq 128k --op-index 2>&1 | grep -v "^USDT" | tee "$OUT/opindex-s20e-dense-$(basename $C .json).log" | tail -3; done ;;
    crossover) timeout 400 python3 -m benchmarks.run --crossover --commit "$COMMIT" --out "$OUT" 2>&1 | tail -40 ;;
  esac
done
