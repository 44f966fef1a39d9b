"""Pattern search: recall / cost of candidates against brute-force masks, the per-head choice, the CLI on a tiny
random model (config + sidecar, resume), adaptive configs through the backend, shipped configs, explain / viz."""
import json
import math
import os

import pytest
import torch

from minference_compile import MInferenceConfig, get_support_models
from minference_compile.cli import main
from minference_compile.ops.adaptive import (adaptive_block_sparse_index, adaptive_vertical_slash, meanq_block_sparse_index,
                                             antidiag_block_sparse_index)
from minference_compile.search.candidates import Candidate, default_candidates, parse
from minference_compile.search.capture import sample_rows
from minference_compile.search.score import evaluate_layer
from minference_compile.search.select import choose
from minference_compile.search.shipped import shipped_config_path
from minference_compile.triton_kernels.block_sparse_index import block_sparse_index
from minference_compile.triton_kernels.naive import block_sparse_mask, streaming_mask, vertical_slash_mask

CANDS = [Candidate("dense"), Candidate("stream_llm", 16, 100), Candidate("vertical_and_slash", 30, 150),
         Candidate("vertical_and_slash", 5, 40), Candidate("block_sparse", 3),
         Candidate("vertical_and_slash_adaptive", 60, 200, 0.6), Candidate("block_sparse_adaptive", 6, 0, 0.5),
         Candidate("block_sparse_antidiag", 6, 8, 0.5), Candidate("block_sparse_antidiag", 3, 4, 0.9),
         Candidate("block_sparse_128", 2), Candidate("block_sparse_meanq", 2),
         Candidate("block_sparse_meanq_adaptive", 6, 0, 0.5)]


def _record(S, Hq, Hkv, D, n_rows, seed=0):
    torch.manual_seed(seed)
    q, k = torch.randn(Hq, S, D), torch.randn(Hkv, S, D)
    q[..., :3] += 1.5  # some structure: a few keys everybody likes
    k[:, ::37, :3] += 2.0
    rows = sample_rows(S, n_rows)
    n = -(-S // 64)
    qm = torch.stack([q[:, i * 64:(i + 1) * 64].mean(1) for i in range(n)], 1)
    return q, k, dict(k=k, q_rows=q[:, rows], q_means=qm, rows=rows, S=S, q=q)


@pytest.mark.parametrize("S", [65, 333])
def test_recall_and_cost_equal_brute_force_masks(S):
    Hq, Hkv, D = 4, 2, 64
    q, k, rec = _record(S, Hq, Hkv, D, 96)
    recall, cost = evaluate_layer(rec, CANDS, last_q=16)
    rows = rec["rows"]
    G = Hq // Hkv
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    logits = q @ k.repeat_interleave(G, 0).transpose(1, 2) / math.sqrt(D)
    P = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)[:, rows]
    for i, c in enumerate(CANDS):
        thr = c.threshold if c.adaptive else 2.0
        if c.pattern.startswith("vertical"):
            v, s = adaptive_vertical_slash(q[None], k[None], c.v, c.s, thr, last_q=16)
            M = vertical_slash_mask(v, s, S)[0]
        elif c.pattern == "block_sparse_antidiag":
            M = block_sparse_mask(antidiag_block_sparse_index(q[None], k[None], c.v, thr, c.s), S)[0]
        elif c.pattern.startswith("block_sparse_meanq"):  # the op's mean-query index
            M = block_sparse_mask(meanq_block_sparse_index(q[None], k[None], c.v, thr), S)[0]
        elif c.pattern == "block_sparse_128":  # the 128-block pairs, straight from the op's index
            M = block_sparse_mask(block_sparse_index(q[None], k[None], c.v, block=128), S, block=128)[0]
        elif c.pattern.startswith("block"):
            M = block_sparse_mask(adaptive_block_sparse_index(q[None], k[None], c.v, thr), S)[0]
        elif c.pattern == "stream_llm":
            M = streaming_mask(1, Hq, S, c.v, c.s)[0]
        else:
            M = causal.expand(Hq, S, S)
        want = (P * M[:, rows]).sum(-1).mean(-1).double()
        torch.testing.assert_close(recall[i], want, atol=1e-5, rtol=0, msg=c.name)
        share = M.sum((-1, -2)).double() / (S * (S + 1) / 2)
        if c.pattern.startswith("vertical"):  # kernel work (64 x 64 tiles, 64-row columns) covers the selection
            assert (cost[i] >= share - 1e-9).all(), c.name
        else:
            torch.testing.assert_close(cost[i], share, atol=1e-9, rtol=0, msg=c.name)


def test_antidiag_candidates_need_the_full_q():
    """A capture without every q row (capture(full_q=False)) cannot score them: recall -1 (never picked), warned."""
    _, _, rec = _record(130, 2, 1, 64, 32)
    del rec["q"]
    with pytest.warns(UserWarning, match="no full q"):
        recall, cost = evaluate_layer(rec, CANDS, last_q=16)
    ad = [i for i, c in enumerate(CANDS) if c.pattern == "block_sparse_antidiag"]
    assert (recall[ad] == -1).all() and (cost[ad] == 1).all()
    assert (recall[[i for i in range(len(CANDS)) if i not in ad]] > 0).all()


def test_choose_cheapest_meeting_target_else_dense():
    cands = [Candidate("dense"), Candidate("block_sparse", 8), Candidate("block_sparse", 16)]
    recall = torch.tensor([[1.0, 1.0], [0.95, 0.80], [0.99, 0.90]])[:, None]  # [C, L=1, H=2]
    cost = torch.tensor([[1.0, 1.0], [0.2, 0.2], [0.4, 0.4]])[:, None]
    assert choose(recall, cost, cands, target=0.9).tolist() == [[1, 2]]
    assert choose(recall, cost, cands, target=0.97).tolist() == [[2, 0]]
    assert choose(recall, cost, cands, max_work=0.3).tolist() == [[1, 1]]


def test_candidate_names_round_trip():
    for c in default_candidates("all"):
        assert parse(c.name) == c
        MInferenceConfig.from_dict([{"0": c.entry(0.5)}])  # every candidate is a valid config entry


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    d = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


def test_search_cli_tiny_model_writes_config_sidecar_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "cfg.json")
    args = ["search", tiny_model_dir, "--out", out, "--lengths", "200", "--rows", "64", "--device", "cpu",
            "--target-recall", "0.9"]
    assert main(args) == 0
    cfg = MInferenceConfig.from_json(out)
    assert cfg.num_layers == 2 and all(len(layer) == 4 for layer in cfg.layers)
    side = json.load(open(tmp_path / "cfg.search.json"))
    assert side["calibration"]["lengths"] == [200] and len(side["heads"]) == 2
    for layer in side["heads"]:
        for head in layer:
            assert head["recall"] >= 0.9 and head["pick"] in {c.name for c in default_candidates("all")}
    assert {"seed (1000,6096)", "small (100,800)", "searched"} <= set(side["summary"])
    work = tmp_path / "cfg.json.work"
    assert not list(work.glob("*/layer*.pt")) and len(list(work.glob("*/eval*.pt"))) == 4  # 2 prompts x 2 layers
    # resume: stored scores are reused, no forward runs; a fixed-only selection from the same scores
    import minference_compile.search.capture as cap

    monkeypatch.setattr(cap, "capture", lambda *a, **k: pytest.fail("forward ran again"))
    assert main(args + ["--allow", "fixed", "--out", str(tmp_path / "fixed.json"), "--workdir", str(work)]) == 0
    fixed = MInferenceConfig.from_json(tmp_path / "fixed.json")
    assert not any(e[0].endswith("_adaptive") for layer in fixed.layers for _, e in layer)
    # the same scores picked by predicted time: each head's pick is no slower than the work pick's, by the model
    assert main(args + ["--cost", "time", "--out", str(tmp_path / "timed.json"), "--workdir", str(work)]) == 0
    timed = json.load(open(tmp_path / "timed.search.json"))
    assert timed["calibration"]["cost"] == "time"
    assert all("time" in s for s in timed["summary"]["searched"].values())
    for lw, lt in zip(side["heads"], timed["heads"]):
        for hw, ht in zip(lw, lt):
            tw = parse(hw["pick"]).spec.relative_time(hw["cost"], 32)
            tt = parse(ht["pick"]).spec.relative_time(ht["cost"], 32)
            assert ht["recall"] >= 0.9 and tt <= tw + 1e-6, (hw, ht)
    # charged per layer: every head still reaches the target; the layer time of the pick is no worse than the
    # per-head time pick's, by the same model
    assert main(args + ["--cost", "layer", "--out", str(tmp_path / "layer.json"), "--workdir", str(work)]) == 0
    lay = json.load(open(tmp_path / "layer.search.json"))
    assert lay["calibration"]["cost"] == "layer" and all(h["recall"] >= 0.9 for layer in lay["heads"] for h in layer)
    for run, s in lay["summary"]["searched"].items():
        assert s["layer_time"] <= timed["summary"]["searched"][run]["layer_time"] + 1e-9
    with pytest.raises(SystemExit, match="max-work"):
        main(args + ["--cost", "layer", "--max-work", "0.5", "--out", str(tmp_path / "x.json"), "--workdir", str(work)])


def test_time_cost_model_and_choice():
    from minference_compile.search.select import time_cost
    cands = [Candidate("dense"), Candidate("vertical_and_slash", 100, 800), Candidate("block_sparse", 16),
             Candidate("block_sparse_antidiag", 128, 8, 0.9), Candidate("block_sparse_antidiag", 128, 16, 0.9)]
    work = torch.tensor([1.0, 0.3, 0.3, 0.3, 0.3])[:, None, None].expand(5, 1, 2)
    t64 = time_cost(work, cands, 64)[:, 0, 0]
    # dense heads on SDPA 1; VS 0.3 / 0.65 + 0.034; BS 0.3 / 0.80 + 0.014; antidiag pays its estimate by stride
    torch.testing.assert_close(t64, torch.tensor([1.0, 0.3 / 0.65 + 0.034, 0.3 / 0.80 + 0.014,
                                                  0.3 / 0.80 + 0.266, 0.3 / 0.80 + 0.173]), atol=1e-6, rtol=0)
    assert time_cost(work, cands, 128)[1, 0, 0] == pytest.approx(0.3 / 0.62 + 0.012)
    # equal work and recall: by work the first (VS) wins the tie, by time the faster kernel (BS)
    recall = torch.tensor([1.0, 0.95, 0.95, 0.95, 0.95])[:, None, None].expand(5, 1, 2)
    assert choose(recall, work, cands, 0.9)[0, 0] == 1
    assert choose(recall, time_cost(work, cands, 64), cands, 0.9)[0, 0] == 2


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "mask"])
def test_adaptive_config_through_backend_matches_eager_when_covering(with_mask):
    # S <= 100: every diagonal is a forced local slash, so adaptive VS covers all pairs; BS with tau 1 and a cap
    # of all blocks keeps every block with mass (two blocks here): sparse == dense causal
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         attn_implementation="sdpa")).eval()
    cfg = {"layers": [{"0": ["vertical_and_slash_adaptive", 100, 100, 0, {"gamma": 0.5}],
                       "1": ["block_sparse_adaptive", 2, 0, 0, {"tau": 1.0}],
                       "2": ["vertical_and_slash", 100, 100, 0], "3": ["vertical_and_slash_adaptive", 100, 100, 0]}],
           "default": ["block_sparse_adaptive", 2, 0], "min_sparse_len": 0, "allow_layer_mismatch": True}
    ids = torch.randint(0, 128, (1, 100))
    am = torch.ones_like(ids) if with_mask else None
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="minference", options={"config": cfg})
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=ids, attention_mask=am).logits,
                                   model(input_ids=ids, attention_mask=am).logits, atol=2e-5, rtol=1e-4)
    torch._dynamo.reset()


def test_shipped_configs_are_ours_and_load():
    names = get_support_models()
    assert {"smollm2", "qwen05"} <= set(names)
    shapes = {"smollm2": (30, 9), "smollm2-adaptive": (30, 9), "qwen05": (24, 14), "qwen05-adaptive": (24, 14),
              "qwen05-fast": (24, 14)}
    for name in names:
        path = shipped_config_path(name)
        cfg = MInferenceConfig.from_json(path)
        side = json.load(open(path[:-5] + ".search.json"))
        assert side["model"] and side["calibration"]["prompts"]
        if name in shapes:
            cfg.validate_for(*shapes[name])
            assert cfg.num_layers == shapes[name][0]
    seed_dir = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "minference_configs")
    if os.path.isdir(seed_dir):  # never a copy of the seed's files
        seed = {open(os.path.join(seed_dir, f)).read() for f in os.listdir(seed_dir) if f.endswith(".json")}
        assert not seed & {open(shipped_config_path(n)).read() for n in names}


def test_viz_heatmap_mass_and_selection():
    from minference_compile.search.viz import heatmap, selection_rows

    torch.manual_seed(0)
    S, D = 300, 64
    q, k = torch.randn(S, D), torch.randn(S, D)
    cand = Candidate("stream_llm", 4, 32)
    sel = selection_rows(q, k, cand)
    att, kept = heatmap(q, k, sel, grid=50, rows_per_step=64)
    assert att.shape == (50, 50) and abs(float(att.sum()) - S) < 1e-6  # every row has mass 1
    M = streaming_mask(1, 1, S, 4, 32)[0, 0]
    P = torch.softmax((q @ k.T / math.sqrt(D)).masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(),
                                                           float("-inf")), -1)
    assert abs(float((att * kept).sum()) - float((P * M).sum())) < 1e-4
    assert abs(sel.density - float(M.sum()) / (S * (S + 1) / 2)) < 1e-12


def test_explain_and_viz_write_pngs(tiny_model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"0": ["vertical_and_slash_adaptive", 30, 60, 0.9, {"gamma": 0.8}],
                                "1": ["block_sparse_adaptive", 3, 0, 0.9]}]))
    assert main(["explain", tiny_model_dir, "--config", str(cfg), "--out", str(tmp_path / "map.png")]) == 0
    assert main(["viz", tiny_model_dir, "--layer", "0", "--head", "1", "--config", str(cfg), "--length", "130",
                 "--grid", "32", "--out", str(tmp_path / "h.png")]) == 0
    for f in ("map.png", "h.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choose_mean_matches_mean_recall_at_least_cost():
    from minference_compile.search.select import choose_mean

    cands = [Candidate("dense"), Candidate("block_sparse", 8), Candidate("block_sparse", 16)]
    recall = torch.tensor([[1.0, 1.0], [0.90, 0.99], [0.95, 0.995]])[:, None]
    cost = torch.tensor([[1.0, 1.0], [0.1, 0.1], [0.3, 0.3]])[:, None]
    ok = torch.ones(3, dtype=torch.bool)
    pick = choose_mean(recall, cost, ok, mean_target=0.97)  # cheapest way to a mean of 0.97: raise head 0 only
    assert pick.tolist() == [[2, 1]]
    assert choose_mean(recall, cost, ok, mean_target=0.9).tolist() == [[1, 1]]
    assert choose_mean(recall, cost, ok, mean_target=0.9, floor=0.92).tolist() == [[2, 1]]
    # a candidate that is not allowed is never picked, not even where it keeps everything (recall 1)
    recall4 = torch.cat([recall, torch.tensor([[1.0, 1.0]])[:, None]])
    cost4 = torch.cat([cost, torch.tensor([[0.05, 0.05]])[:, None]])
    assert choose_mean(recall4, cost4, torch.tensor([True, True, True, False]), mean_target=0.97).tolist() == [[2, 1]]
    assert choose_mean(recall4, cost4, torch.ones(4, dtype=torch.bool), mean_target=0.97).tolist() == [[3, 3]]


def test_layer_pick_equals_brute_force_with_one_build_per_family():
    # per layer the pick maximises the heads' summed score minus one build per index family present, over every
    # assignment (brute force on 4 candidates x 3 heads); the mean-query fixed / adaptive share a family
    import itertools

    from minference_compile.search.select import index_families, layer_pick
    cands = [Candidate("dense"), Candidate("block_sparse_meanq", 8), Candidate("block_sparse_meanq_adaptive", 128, 0, 0.9),
             Candidate("vertical_and_slash", 100, 800), Candidate("stream_llm", 128, 1024)]
    family, fcost = index_families(cands, 64)
    assert family[0] == -1 and family[4] == -1 and family[1] == family[2] and family[3] not in (family[1], -1)
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        score = torch.rand(5, 2, 3, generator=g) * (1 + trial % 4)
        fc = fcost * (trial % 5) * 3
        pick = layer_pick(score, family, fc)
        for li in range(2):
            def value(assign):
                fams = {int(family[c]) for c in assign if family[c] >= 0}
                return sum(float(score[c, li, h]) for h, c in enumerate(assign)) - 3 * sum(float(fc[f]) for f in fams)
            best = max(value(a) for a in itertools.product(range(5), repeat=3))
            assert value(pick[li].tolist()) == pytest.approx(best, abs=1e-9), (trial, li)


def test_index_families_and_kernel_time_split_the_time_model():
    # kernel_time + one build per family = relative_time; the antidiagonal estimate is one build per stride
    from minference_compile.search.select import index_families, kernel_time, time_cost
    cands = [Candidate("block_sparse_antidiag", 128, 8, 0.9), Candidate("block_sparse_antidiag", 128, 16, 0.9),
             Candidate("block_sparse_antidiag", 256, 8, 0.95), Candidate("block_sparse", 16), Candidate("dense")]
    family, fcost = index_families(cands, 64)
    assert family.tolist() == [0, 1, 0, 2, -1]
    torch.testing.assert_close(fcost, torch.tensor([0.266, 0.173, 0.014], dtype=torch.float64), atol=1e-9, rtol=0)
    work = torch.full((5, 1, 1), 0.3)
    kt = kernel_time(work, cands, 64)[:, 0, 0]
    torch.testing.assert_close(kt, torch.tensor([0.3 / 0.80] * 4 + [0.3]), atol=1e-6, rtol=0)
    per_head = time_cost(work, cands, 64)[:, 0, 0]
    torch.testing.assert_close(per_head - kt, torch.tensor([0.266, 0.173, 0.266, 0.014, 0.0]), atol=1e-6, rtol=0)


def test_layered_choice_skips_a_build_that_one_head_cannot_pay_for():
    from minference_compile.search.select import choose_layered, choose_mean_layered, index_families, kernel_time
    cands = [Candidate("dense"), Candidate("block_sparse_meanq_adaptive", 256, 0, 0.99),
             Candidate("vertical_and_slash", 100, 800)]
    family, fcost = index_families(cands, 64)
    # 4 heads: three fine on the mean-query pattern; head 3 a bit better on vertical-slash, alone in its family
    recall = torch.tensor([[1.0] * 4, [0.98, 0.98, 0.98, 0.96], [0.5, 0.5, 0.5, 0.97]])[:, None]
    cost = torch.tensor([[1.0] * 4, [0.2] * 4, [0.2] * 4])[:, None]
    kt = kernel_time(cost, cands, 64)
    ok = torch.ones(3, dtype=torch.bool)
    # per head (time model with a build per head) head 3 takes VS; charged per layer its build (~0.034 x 4 heads)
    # costs more than its 0.01 recall is worth at this target: it joins the mean-query family
    assert choose_layered(recall, kt, ok, 0.95, family, fcost).tolist() == [[1, 1, 1, 1]]
    assert choose_layered(recall, kt, ok, 0.965, family, fcost).tolist() == [[1, 1, 1, 2]]
    # a mean of 0.975 holds with every head on the mean-query family; 0.978 needs more on head 3, and VS (0.97)
    # falls short of it, so dense, which needs no build
    assert choose_mean_layered(recall, kt, ok, 0.975, family, fcost).tolist() == [[1, 1, 1, 1]]
    pick = choose_mean_layered(recall, kt, ok, 0.978, family, fcost)
    assert float(recall.gather(0, pick[None]).mean()) >= 0.978 and pick.tolist() == [[1, 1, 1, 0]]
    # with VS good enough on head 3 and cheap enough, the build pays for itself
    recall[2, 0, 3] = 0.999
    assert choose_mean_layered(recall, kt, ok, 0.978, family, fcost).tolist() == [[1, 1, 1, 2]]


def test_capture_builds_no_square_mask_and_matches_the_model():
    # the capture forward is plain causal attention without an [S, S] mask tensor, and leaves the outputs as they were
    import transformers.masking_utils as mu
    from transformers import LlamaConfig, LlamaForCausalLM

    from minference_compile.search import capture as cap

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, attn_implementation="sdpa")
    ref_model = LlamaForCausalLM(cfg).eval()
    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict(ref_model.state_dict())
    model.config._attn_implementation = cap.register()
    ids = torch.randint(0, 64, (1, 100))
    assert mu.AttentionMaskInterface._global_mapping[cap.NAME](batch_size=1, cache_position=None, kv_length=100) is None
    out = cap.capture(model, ids, 8)
    assert sorted(out) == [0, 1] and out[0]["k"].shape == (2, 100, 32)
    with torch.no_grad():
        ref = ref_model.model(input_ids=ids, use_cache=False).last_hidden_state
        got = model.model(input_ids=ids, use_cache=False).last_hidden_state
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one unpadded sequence"):
        cap.capture(model, ids.expand(2, -1), 8)


def test_capture_forward_is_the_models_own_forward():
    """The capture's attention (causal SDPA, K/V heads repeated, no mask) gives the model's own hidden states, and
    each record's k is that layer's post-RoPE key (GQA 4:2, fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from minference_compile.search import capture as cap

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         attn_implementation="sdpa")).eval()
    ids = torch.randint(0, 128, (1, 150))
    with torch.no_grad():
        want = model.model(input_ids=ids).last_hidden_state
        model.config._attn_implementation = cap.register()
        cap._STATE.update(rows=torch.arange(100, 150), dir=None)
        try:
            got = model.model(input_ids=ids, use_cache=False).last_hidden_state
            recs = dict(cap._STATE["layers"])
        finally:
            cap._STATE.clear()
            model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert sorted(recs) == [0, 1] and recs[0]["k"].shape == (2, 150, 32) and recs[0]["q_rows"].shape == (4, 50, 32)


def test_match_per_prompt_holds_each_prompts_mean():
    """benchmarks.match_per_prompt: the least cost whose recall mean reaches the target on every prompt."""
    from benchmarks.match_per_prompt import match

    # 3 candidates (dense, cheap, mid) x 1 layer x 2 heads; prompt B needs head 1 on "mid"
    ra = torch.tensor([[1.0, 1.0], [0.96, 0.96], [0.99, 0.99]])[:, None]
    rb = torch.tensor([[1.0, 1.0], [0.96, 0.90], [0.99, 0.97]])[:, None]
    cost = torch.tensor([[1.0, 1.0], [0.1, 0.1], [0.3, 0.3]])[:, None]
    pick, cov, rec = match([ra, rb], [cost, cost], torch.ones(3, dtype=torch.bool), [0.95, 0.95])
    assert pick.tolist() == [[1, 2]] and cov == pytest.approx([0.2, 0.2]) and rec[1] == pytest.approx(0.965)
    assert match([ra, rb], [cost, cost], torch.tensor([True, True, False]), [0.95, 0.95])[0].tolist() == [[1, 0]]
    # minimising another cost (the predicted time: "mid" on a faster kernel than "cheap") moves head 0 too; the
    # coverage reported stays the work of the pick
    slow_cheap = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.35, 0.35]])[:, None]
    pick, cov, _ = match([ra, rb], [cost, cost], torch.ones(3, dtype=torch.bool), [0.95, 0.95],
                         minimise=[slow_cheap, slow_cheap])
    assert pick.tolist() == [[2, 2]] and cov == pytest.approx([0.3, 0.3])


def test_wide_grid_parses_and_allow_kinds_split_it():
    from minference_compile.search.candidates import allowed
    wide = default_candidates("wide")
    assert len({c.name for c in wide}) == len(wide) and all(parse(c.name) == c for c in wide)
    assert {c.name for c in default_candidates("experimental")} <= {c.name for c in wide}
    fixed, adaptive, every = (allowed(wide, k) for k in ("fixed", "adaptive", "all"))
    for c, f, a, e in zip(wide, fixed, adaptive, every):
        anti = c.pattern == "block_sparse_antidiag"
        assert f == (not c.adaptive)
        assert a == (c.pattern == "dense" or (c.adaptive and not anti))
        assert e == (not anti)
    assert all(allowed(wide, "wide")) and any(c.pattern == "block_sparse_antidiag" for c in wide)


@pytest.mark.parametrize("kind", ["fixed", "adaptive", "all", "experimental"])
def test_allow_kinds_keep_their_meaning_on_the_default_grid(kind):
    """On the default experimental scoring, allowed() picks what the kind's own list (plus dense) did before."""
    from minference_compile.search.candidates import allowed
    scored = default_candidates("experimental")
    names = {c.name for c in default_candidates(kind)}
    assert allowed(scored, kind) == [c.name in names or c.pattern == "dense" for c in scored]
