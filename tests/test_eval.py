"""The eval machinery on a tiny random Llama built in-process (no downloads).

Structure (every task, store, resume, files) and a constructed case: a config whose budgets keep almost no
attention (vertical 1, slash 1) must be caught by recall and by perplexity, while covering budgets pass.
Perplexity is measured on text *sampled from the dense model itself*: then E[-log p_sparse] >= E[-log p_dense]
(Gibbs), so a sparse config that changes the distribution must raise it (random-weight models on random
text would not show that).
"""
import json
import math

import pytest
import torch

from eval_tiny import CharTokenizer, tiny_llama
from minference_compile.chunked import cache_kwarg
from minference_compile.config import MInferenceConfig
from minference_compile.eval import report, tasks
from minference_compile.eval.data import PromptBuilder, kv_prompt, needle_prompt
from minference_compile.eval.recall import head_recall, measuring, sample_rows
from minference_compile.eval.runner import Runner, force_sparse, profile_ops
from minference_compile.eval.store import Store

GOOD = force_sparse(MInferenceConfig(default=("vertical_and_slash", 1024, 1024)))  # covers every pair
BAD = force_sparse(MInferenceConfig(default=("vertical_and_slash", 1, 1)))  # keeps ~65 keys of each row


@pytest.fixture(scope="module")
def model():
    return tiny_llama(sharpen=3.0)


@pytest.fixture(scope="module")
def runner(model):
    return Runner(model, {"good": GOOD, "bad": BAD})


def sampled_text(model, length: int, seed: int = 0) -> torch.Tensor:
    """[1, length] ids sampled (temperature 1) from the dense model."""
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (1, 32), generator=g)
    toks = [ids]
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        kw = {cache_kwarg(model): cache}
        out = model(input_ids=ids, use_cache=True, **kw)
        for _ in range(length - ids.shape[1]):
            nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1, generator=g)
            toks.append(nxt)
            out = model(input_ids=nxt, use_cache=True, **kw)
    return torch.cat(toks, 1)


def test_prompts_exact_length_and_contain_answer():
    tok = CharTokenizer()
    pb = PromptBuilder(tok, seed=0)
    for depth in (0.0, 0.5, 1.0):
        p = needle_prompt(pb, 700, depth, seed=3)
        assert p.ids.shape == (1, 700)
        text = tok.decode(p.ids[0].tolist())
        assert f"The pass key is {p.answer}." in text and text.endswith("The pass key is")
        start = text.index("quiz you about it.") + 20
        end = text.index("What is the pass key?")
        pos = (text.index("The pass key is") - start) / (end - start)
        assert abs(pos - depth) < 0.2, (depth, pos)
    p = kv_prompt(pb, 900, pairs=6, seed=1)
    text = tok.decode(p.ids[0].tolist())
    assert p.ids.shape == (1, 900) and text.count("special magic numbers for ") == 6
    assert f"numbers for {p.meta['key']} is: {p.answer}." in text
    with pytest.raises(ValueError, match="too short"):
        needle_prompt(pb, 40, 0.5, seed=0)


def test_sparse_path_really_runs(runner):
    ids = torch.randint(1, 128, (1, 300))
    runner.prefill("bad", ids)  # compile first: the profile below sees only the run
    counts = profile_ops(lambda: runner.prefill("bad", ids))
    assert counts["sparse_prefill"] == 2 and counts["sdpa_outside"] == 0, counts
    assert profile_ops(lambda: runner.prefill("dense", ids))["sparse_prefill"] == 0
    assert runner.stats["bad"].rewritten >= 2 and runner.stats["bad"].left_dense == 0


def test_covering_budgets_match_dense(runner, model):
    ids = sampled_text(model, 384)
    d, _ = runner.nll("dense", ids, 128)
    g, _ = runner.nll("good", ids, 128)
    assert abs(g - d) < 1e-4, (g, d)
    toks_d, _ = runner.answer("dense", ids, 6)
    toks_g, _ = runner.answer("good", ids, 6)
    assert toks_d == toks_g


def test_answer_decodes_from_the_prefill_cache(runner, model):
    # the greedy answer continues the pre-fill's cache: equal to generate() (a cache handed to forward under the
    # wrong argument name is ignored and every answer decodes from an empty context: the GPU run of session 4)
    ids = sampled_text(model, 200, seed=3)
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)[0, ids.shape[1]:].tolist()
    for mode in ("dense", "good"):
        toks, _ = runner.answer(mode, ids, 6)
        assert toks == ref[:len(toks)] and len(toks) >= 1, (mode, toks, ref)


def test_recall_one_for_covering_low_for_tiny_budgets(model):
    ids = torch.randint(1, 128, (1, 512))
    with measuring(model, {"good": GOOD, "bad": BAD}) as out:
        ref = model(input_ids=ids).logits
    assert model.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(ref, model(input_ids=ids).logits)  # the measuring forward is the dense one
    good, bad = out["good"], out["bad"]
    assert sorted(good["recall"]) == [0, 1] and sorted(bad["density"]) == [0, 1]
    for what in ("recall", "density"):
        assert all(torch.allclose(r, torch.ones(4)) for r in good[what].values())
        assert all((r < 0.5).all() for r in bad[what].values()), bad  # ~65 keys of >= 256


def test_recall_against_naive_mask():
    # recall of an A-shape pattern on random q/k equals the mass inside the mask built element by element
    torch.manual_seed(0)
    S, D = 200, 64
    q, k = torch.randn(1, 4, S, D), torch.randn(1, 2, S, D)
    entries = (("stream_llm", 4, 16),) * 2 + (("dense", 0, 0),) + (("vertical_and_slash", 8, 2),)
    rows = sample_rows(S, 32)
    got = head_recall(q, k, entries, D ** -0.5, rows)
    kk = k.repeat_interleave(2, 1)[0]
    p = torch.softmax((q[0] @ kk.transpose(1, 2) * D ** -0.5).masked_fill(
        torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf")), -1)[:, rows]
    i, j = rows.view(-1, 1), torch.arange(S).view(1, -1)
    stream = ((j < 4) | (i - j < 16)) & (j <= i)
    for h in (0, 1):
        assert math.isclose(float(got[h]), float((p[h] * stream).sum(-1).mean()), rel_tol=1e-4)
    assert math.isclose(float(got[2]), 1.0, rel_tol=1e-5)
    assert 0 < float(got[3]) < 1


def test_eval_end_to_end_resumes_and_flags_bad_config(runner, model, tmp_path):
    tok = CharTokenizer()
    spec = tasks.EvalSpec(tasks=("needle", "ppl", "kv", "recall"), lengths=(768,), depths=(0.0, 1.0),
                          ppl_lengths=(512,), ppl_last=128, kv_samples=2, kv_pairs=2, new_tokens=4)
    modes = ["dense", "good", "bad"]
    fps = {m: tasks.fingerprint("tiny", m, runner.configs.get(m)) for m in modes}
    store = Store(tmp_path / "cells.jsonl")
    ctx = tasks.Context(runner=runner, tok=tok, store=store, model_id="tiny", fingerprints=fps, log=lambda s: None)
    text = sampled_text(model, 512, seed=1)
    tasks.run_all(ctx, spec, modes, text_ids=lambda L: text[:, :L])
    n_cells = len(tasks.plan(spec)) * len(modes)
    assert n_cells == (2 + 1 + 2) * 3 and len(store.records) == n_cells

    # resume: a new store on the same file measures nothing again
    store2 = Store(tmp_path / "cells.jsonl")
    calls = []
    ctx2 = tasks.Context(runner=runner, tok=tok, store=store2, model_id="tiny", fingerprints=fps, log=calls.append)
    tasks.run_all(ctx2, spec, modes, text_ids=lambda L: text[:, :L])
    assert calls == [] and len(store2.records) == n_cells
    # a new sparse config: its cells are measured, and the dense ppl cell again (for its recall)
    runner3 = Runner(model, {"good": GOOD, "bad": BAD, "other": force_sparse(MInferenceConfig(default=("stream_llm", 4, 64)))})
    fps3 = {**fps, "other": tasks.fingerprint("tiny", "other", runner3.configs["other"])}
    spec3 = tasks.EvalSpec(tasks=("ppl", "recall"), ppl_lengths=(512,), ppl_last=128)
    ctx3 = tasks.Context(runner=runner3, tok=tok, store=store2, model_id="tiny", fingerprints=fps3, log=calls.append)
    tasks.run_all(ctx3, spec3, ["dense", "good", "other"], text_ids=lambda L: text[:, :L])
    assert [c.split()[0:2] for c in calls] == [["[", "dense]"], ["[", "other]"]], calls
    assert set(Store(tmp_path / "cells.jsonl").get(Store.key("ppl", "dense", fps["dense"], length=512))["recall"]) \
        == {"good", "bad", "other"}

    summary = report.write_all(list(store2.records.values()), modes, tmp_path, {"model": "tiny", "device": "cpu"},
                               report.Thresholds())
    checks = {(c["mode"], c["check"].split(":")[0]): c["passed"] for c in summary["checks"]}
    assert checks[("good", "ppl@512")] and checks[("good", "recall@512")]
    assert not checks[("bad", "ppl@512")], summary["check_lines"]  # perplexity catches it ...
    assert not checks[("bad", "recall@512")], summary["check_lines"]  # ... and so does recall
    assert not summary["passed"]
    import importlib.util

    pngs = ("needle.png", "recall.png") if importlib.util.find_spec("matplotlib") else ()  # CI's .[test] has none
    for f in ("summary.md", "summary.json", "cells.csv", *pngs):
        assert (tmp_path / f).stat().st_size > 0, f
    assert json.loads((tmp_path / "summary.json").read_text())["passed"] is False
    assert "| good |" in summary["table"] and "perplexity" in summary["table"]


def test_checks_logic():
    recs = [
        {"task": "needle", "mode": "dense", "length": 1, "depth": 0.5, "found": True},
        {"task": "needle", "mode": "s", "length": 1, "depth": 0.5, "found": False},
        {"task": "needle", "mode": "dense", "length": 1, "depth": 0.0, "found": False},
        {"task": "needle", "mode": "s", "length": 1, "depth": 0.0, "found": True},
        {"task": "ppl", "mode": "dense", "length": 8, "ppl": 10.0},
        {"task": "ppl", "mode": "s", "length": 8, "ppl": 10.05},
    ] + [{"task": "kv", "mode": m, "length": 8, "sample": i, "found": i < n}
         for m, n in (("dense", 10), ("s", 9)) for i in range(20)]
    got = {name.split(":")[0]: ok for _, name, ok, _ in report.checks(recs, ["dense", "s"], report.Thresholds())}
    assert got == {"needle": False, "ppl@8": True, "kv@8": False}
    got = {name.split(":")[0]: ok for _, name, ok, _ in
           report.checks(recs, ["dense", "s"], report.Thresholds(ppl_rise=0.001, kv_drop=0.05))}
    assert got == {"needle": False, "ppl@8": False, "kv@8": True}


def test_cli_arguments():
    import argparse

    from minference_compile.eval import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["some/folder", "--budgets", "100/800", "--lengths", "4k,8192"])
    assert cli._ints(args.lengths) == [4096, 8192]
    configs = cli.build_configs(args)
    assert list(configs) == ["default", "100/800"]
    assert configs["100/800"].default == ("vertical_and_slash", 100, 800)
    assert all(c.min_sparse_len == 0 and c.vs_max_work == 1.0 for c in configs.values())
    args = p.parse_args(["x", "--as-deployed"])
    assert cli.build_configs(args)["default"].min_sparse_len is None


def test_cli_several_configs(tmp_path):
    import argparse

    from minference_compile.eval import cli

    f = tmp_path / "mine.json"
    f.write_text(json.dumps([{"0": ["stream_llm", 4, 64, 1.0]}]))
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    configs = cli.build_configs(p.parse_args(["x", "--config", f"default,{f}", "--budgets", "100/800"]))
    assert list(configs) == ["default", "mine", "100/800"]
    assert configs["mine"].layer_entries(0, 1)[0][0] == "stream_llm"
    with pytest.raises(SystemExit, match="two configs named"):
        cli.build_configs(p.parse_args(["x", "--config", f"{f},{f}"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_eval_runner_on_gpu_runs_the_kernels(tmp_path):
    # the eval's GPU path (bf16, Triton kernels): the sparse op runs, covering budgets give dense's answer
    model = tiny_llama(sharpen=3.0).to("cuda", torch.bfloat16)
    runner = Runner(model, {"good": GOOD, "bad": BAD})
    ids = sampled_text(tiny_llama(sharpen=3.0), 1000)
    runner.prefill("bad", ids)
    counts = profile_ops(lambda: runner.prefill("bad", ids))
    assert counts["sparse_prefill"] == 2 and counts["sdpa_outside"] == 0, counts
    d, _ = runner.nll("dense", ids, 256)
    g, _ = runner.nll("good", ids, 256)
    b, _ = runner.nll("bad", ids, 256)
    assert math.isfinite(d) and abs(g - d) < 0.02 * abs(d) + 0.02, (g, d)
    assert b != g, (b, g)  # the tiny budgets change the result (on this model not always for the worse)


def test_ppl_length_must_exceed_ppl_last():
    with pytest.raises(ValueError, match="needs longer texts"):
        tasks.EvalSpec(tasks=("ppl",), ppl_lengths=(1024,), ppl_last=1024)
    tasks.EvalSpec(tasks=("needle",), lengths=(512,), ppl_last=1024)  # no ppl task: no constraint


def test_checks_refuse_a_baseline_that_finds_nothing():
    # dense 0/2 needles and 0% kv: "sparse finds wherever dense finds" would pass vacuously; it must fail instead
    recs = [{"task": "needle", "mode": m, "length": 1, "depth": d, "found": False}
            for m in ("dense", "s") for d in (0.0, 1.0)]
    recs += [{"task": "kv", "mode": m, "length": 8, "sample": i, "found": False} for m in ("dense", "s") for i in range(3)]
    got = {name: (ok, detail) for _, name, ok, detail in report.checks(recs, ["dense", "s"], report.Thresholds())}
    assert got["needle: dense baseline finds some needle"][0] is False
    assert "cannot judge" in got["kv@8: dense baseline answers some"][1] and not got["kv@8: dense baseline answers some"][0]
    assert not any(name.startswith("needle: found") or name.startswith("kv@8: accuracy") for name in got)


def test_recall_of_adaptive_patterns_against_their_naive_selections():
    """Adaptive heads (mass-threshold vertical-slash, block-sparse, antidiagonal block-sparse) get the recall of
    the keys their naive reference selection keeps, element by element (before the registry path they had none)."""
    from minference_compile.patterns import BlockSparseAdaptive, BlockSparseAntidiag, VerticalSlashAdaptive
    from minference_compile.triton_kernels.naive import block_sparse_mask, vertical_slash_mask
    from minference_compile.triton_kernels.naive_adaptive import (adaptive_block_sparse_index_ref,
                                                                   adaptive_vertical_slash_ref,
                                                                   antidiag_block_sparse_index_ref)
    torch.manual_seed(1)
    S, D = 333, 64
    q, k = torch.randn(1, 6, S, D), torch.randn(1, 2, S, D)
    specs = (VerticalSlashAdaptive(40, 60, 0.6), VerticalSlashAdaptive(20, 200, 0.9),
             BlockSparseAdaptive(3, 0.5), BlockSparseAdaptive(4, 0.7),
             BlockSparseAntidiag(3, 8, 0.5), BlockSparseAntidiag(4, 4, 0.7))
    rows = sample_rows(S, 40)
    got = head_recall(q, k, specs, D ** -0.5, rows)
    kk = k.repeat_interleave(3, 1)[0]
    p = torch.softmax((q[0] @ kk.transpose(1, 2) * D ** -0.5).masked_fill(
        torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf")), -1)[:, rows]
    vs = adaptive_vertical_slash_ref(q, k, [40, 20, 0, 0, 0, 0], [60, 200, 0, 0, 0, 0], [0.6, 0.9, 0.9, 0.9, 0.9, 0.9])
    masks = []
    for h in (0, 1):
        vert, sl = (torch.tensor(x, dtype=torch.int32).view(1, 1, -1) for x in vs[h])
        masks.append(vertical_slash_mask(vert, sl, S)[0, 0])
    bsa = adaptive_block_sparse_index_ref(q, k, [0, 0, 3, 4, 0, 0], [0.9, 0.9, 0.5, 0.7, 0.9, 0.9])
    masks += [block_sparse_mask(bsa[:, h:h + 1], S)[0, 0] for h in (2, 3)]
    masks.append(block_sparse_mask(antidiag_block_sparse_index_ref(q, k, [0] * 4 + [3, 0], [0.9] * 4 + [0.5, 0.9],
                                                                   8)[:, 4:5], S)[0, 0])
    masks.append(block_sparse_mask(antidiag_block_sparse_index_ref(q, k, [0] * 5 + [4], [0.9] * 5 + [0.7], 4)[:, 5:6],
                                   S)[0, 0])
    for h, m in enumerate(masks):
        want = float((p[h] * m[rows]).sum(-1).mean())
        assert 0.05 < want < 0.999, (h, want)  # a partial selection: the comparison can fail either way
        assert math.isclose(float(got[h]), want, rel_tol=1e-4), (h, float(got[h]), want)
