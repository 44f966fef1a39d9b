"""The pattern registry (minference_compile/patterns/): every registered pattern round-trips through the seed's JSON
entry, the op's int lists and its label; owns a CPU path, a kernel path, a naive reference and a crossover; its CPU
path matches its reference; bad entries are clear errors; seed-format files load to the same entries as before.

Tolerances: those of tests/test_ops_cpu.py (fp32 1e-5: same math, different summation order).
"""
import dataclasses
import json

import pytest
import torch

from minference_compile import MInferenceConfig
from minference_compile.config import ConfigError
from minference_compile.ops.adaptive import pack_threshold
from minference_compile.ops.crossover import auto_min_sparse_len, pattern_min_len
from minference_compile.patterns import (REGISTRY, AShape, BlockSparse, BlockSparse128, BlockSparseAdaptive, BlockSparseAntidiag,
                                         BlockSparseMeanQ, BlockSparseMeanQAdaptive, Dense,
                                         HeadGroup, Pattern,
                                         PatternError, VerticalSlash, VerticalSlashAdaptive, as_spec, pack_layer,
                                         parse_entry, parse_label, unpack)
from minference_compile.search.candidates import Candidate, default_candidates, parse
from test_ops_cpu import close, poisoned, qkv

# two specs per pattern (an adaptive one with and without its threshold); every registered pattern is here
SPECS = {
    "dense": [Dense(), Dense()],
    "vertical_and_slash": [VerticalSlash(4, 8), VerticalSlash(2, 70)],
    "stream_llm": [AShape(0, 5), AShape(3, 17)],
    "block_sparse": [BlockSparse(1), BlockSparse(2)],
    "vertical_and_slash_adaptive": [VerticalSlashAdaptive(10, 20, 0.8), VerticalSlashAdaptive(5, 5)],
    "block_sparse_adaptive": [BlockSparseAdaptive(2, 0.5), BlockSparseAdaptive(1)],
    "block_sparse_antidiag": [BlockSparseAntidiag(2, 8, 0.5), BlockSparseAntidiag(1, 4)],  # a layer of two strides
    "block_sparse_128": [BlockSparse128(2), BlockSparse128(1)],
    "block_sparse_meanq": [BlockSparseMeanQ(2), BlockSparseMeanQ(1)],
    "block_sparse_meanq_adaptive": [BlockSparseMeanQAdaptive(2, 0.5), BlockSparseMeanQAdaptive(1)],
}
ALL = [s for specs in SPECS.values() for s in specs]


def test_every_registered_pattern_is_covered_here():
    assert set(SPECS) == set(REGISTRY)
    assert sorted(c.id for c in REGISTRY.values()) == list(range(len(REGISTRY)))  # the op's ids: 0..n-1


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.label)
def test_round_trips(spec):
    entry = spec.to_entry(0.25)
    assert entry[0] == spec.name and entry[3] == 0.25
    assert parse_entry(entry) == spec
    assert parse_entry(json.loads(json.dumps(entry))) == spec  # through JSON text
    assert unpack(spec.id, *spec.pack()) == spec  # the op's int lists
    assert as_spec(spec.head_entry()) == spec  # the config's stored (pattern, v_slot, s_slot)
    assert parse_label(spec.label) == spec
    # as a search candidate: the threshold in effect (an entry without one: the default 0.9)
    given = spec.THRESHOLD is None or getattr(spec, spec.THRESHOLD) is not None
    assert Candidate.from_spec(spec).spec == (spec if given else dataclasses.replace(spec, **{spec.THRESHOLD: 0.9}))
    ids, vs, ss = pack_layer([spec, Dense()])
    assert ids == [spec.id, 0] and (vs[0], ss[0]) == spec.pack()


def test_packed_slots_are_the_seeds():
    """The int lists the op receives are unchanged: budgets as they were, a threshold packed in the slash slot."""
    assert VerticalSlash(1000, 6096).head_entry() == ("vertical_and_slash", 1000, 6096)
    assert AShape(128, 4096).head_entry() == ("stream_llm", 128, 4096)
    assert BlockSparse(16).head_entry() == ("block_sparse", 16, 0)
    assert Dense().head_entry() == ("dense", 0, 0)
    assert VerticalSlashAdaptive(1000, 6096, 0.95).head_entry() == ("vertical_and_slash_adaptive", 1000,
                                                                    pack_threshold(6096, 0.95))
    assert VerticalSlashAdaptive(100, 800).head_entry() == ("vertical_and_slash_adaptive", 100, 800)
    assert BlockSparseAdaptive(128, 0.9).head_entry() == ("block_sparse_adaptive", 128, pack_threshold(0, 0.9))
    assert VerticalSlashAdaptive(5, 5).threshold == 0.9 and BlockSparseAdaptive(3, 0.7).threshold == 0.7
    assert BlockSparseAntidiag(128, 8, 0.9).head_entry() == ("block_sparse_antidiag", 128, pack_threshold(8, 0.9))
    assert BlockSparseAntidiag(128, 8, 0.9).label == "bsx(128,8;0.9)"


def test_search_candidates_keep_their_names_and_entries():
    for c in default_candidates("all"):
        assert parse(c.name) == c
        assert parse_entry(c.entry(0.5)) == c.spec
    assert Candidate("vertical_and_slash", 100, 800).name == "vs(100,800)"
    assert Candidate("block_sparse_adaptive", 128, 0, 0.9).entry(0.12345) == ["block_sparse_adaptive", 128, 0,
                                                                              0.1235, {"tau": 0.9}]


@pytest.mark.parametrize("cls", list(REGISTRY.values()), ids=lambda c: c.name)
def test_every_pattern_owns_its_paths(cls):
    for method in ("attend_cpu", "attend_cuda", "reference", "min_sparse_len"):
        # defined by the pattern (or a pattern class it extends), not inherited from the abstract base
        assert any(method in c.__dict__ for c in cls.__mro__ if c is not Pattern), f"{cls.name} lacks {method}"
    for spec in SPECS[cls.name]:
        t = spec.min_sparse_len()
        assert isinstance(t, int) and t >= 0
        assert pattern_min_len(spec.id, *spec.pack()) == t  # the length rule reads the spec's crossover
    assert auto_min_sparse_len(*pack_layer(SPECS[cls.name]), "cuda") == max(s.min_sparse_len() for s in SPECS[cls.name])
    assert cls.label and cls.short
    # the search's time model (--cost time): every pattern states its own measured rate; the time grows with the work
    assert any("RATE" in c.__dict__ for c in cls.__mro__ if c is not Pattern), f"{cls.name} lacks RATE"
    for spec in SPECS[cls.name]:
        for d in (64, 128):
            lo, hi = spec.relative_time(0.1, d), spec.relative_time(0.5, d)
            assert 0 < lo < hi < 2 and all(0 < r <= 1.2 for r in cls.RATE) and all(0 <= i < 1 for i in cls.INDEX)


# ---- CPU path vs the naive reference, through the registry ----

def _group(q, k, v, specs):
    return HeadGroup(q, k, v, q.shape[-1] ** -0.5, 64, tuple(specs))


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("mixed", [False, True], ids=["all_heads", "head_mask"])
@pytest.mark.parametrize("q_len", [None, 33], ids=["unchunked", "chunk"])
def test_cpu_path_matches_reference(name, mixed, q_len):
    """B=2, S=65 (a partial last block), GQA 4:2, D=64; out NaN-poisoned: heads of the group written, others not."""
    cls = REGISTRY[name]
    if q_len is not None and not cls.chunked:
        pytest.skip(f"{name} runs unchunked pre-fill only")
    q, k, v = qkv(65, 4, 2, 64, torch.float32, B=2, seed=3, q_len=q_len)
    a, b = SPECS[name]
    specs = [a, None, b, None] if mixed else [a, b, b, a]
    group = _group(q, k, v, specs)
    mask = torch.tensor([s is not None for s in specs]) if mixed else None
    selection = cls.select(group)
    out = cls.attend_cpu(group, selection, mask, poisoned(q))
    ref = cls.reference(group, selection)
    heads = [h for h, s in enumerate(specs) if s is not None]
    close(out[:, heads], ref[:, heads], torch.float32)
    others = [h for h, s in enumerate(specs) if s is None]
    assert torch.isnan(out[:, others]).all()  # heads of other patterns untouched


def test_sparse_prefill_dispatches_every_pattern():
    """One layer holding every registered pattern: each head equals its pattern's reference."""
    q, k, v = qkv(65, len(SPECS), 1, 64, torch.float32, B=2, seed=5)
    specs = [SPECS[n][i % 2] for i, n in enumerate(SPECS)]
    scale = 0.125
    out = torch.ops.minference.sparse_prefill(q, k, v, *pack_layer(specs), scale, 0, 64)
    for cls in REGISTRY.values():
        group = HeadGroup(q, k, v, scale, 64, tuple(s if s.id == cls.id else None for s in specs))
        ref = cls.reference(group, cls.select(group))
        heads = [h for h, s in enumerate(specs) if s.id == cls.id]
        close(out[:, heads], ref[:, heads], torch.float32)


# ---- errors ----

@pytest.mark.parametrize("raw, words", [
    (["diagonal", 1, 1, 0], ["unknown pattern 'diagonal'", "known: dense, vertical_and_slash"]),
    (["vertical_and_slash", -3, 10, 0], ["vertical_and_slash vertical_size must be >= 1, got -3"]),
    (["stream_llm", 4, -1, 0], ["stream_llm local_window_num must be >= 1, got -1"]),
    (["block_sparse", 0, 0, 0], ["block_sparse topk must be >= 1, got 0"]),
    (["block_sparse", 4, -2, 0], ["block_sparse (unused) must be >= 0, got -2"]),
    (["vertical_and_slash", 2.5, 10, 0], ["vertical_size must be an integer, got 2.5"]),
    (["vertical_and_slash", True, 10, 0], ["vertical_size must be an integer, got True"]),
    (["vertical_and_slash", 10], ["expected [pattern, vertical_size, slash_size, score]"]),
    ("vertical_and_slash", ["expected [pattern, vertical_size, slash_size, score]"]),
    (["block_sparse", 4, 0, 0, {"tau": 0.9}], ["block_sparse takes [pattern, topk, (unused), score]", "4 elements"]),
    (["vertical_and_slash_adaptive", 4, 8, 0, {"gamma": 0.9}, 1], ["5 elements at most"]),
    (["vertical_and_slash_adaptive", 4, 8, 0, {"tau": 0.9}], ["optional 5th element {\"gamma\": x}"]),
    (["block_sparse_adaptive", 4, 0, 0, {"tau": 1.5}], ["block_sparse_adaptive tau must be a number in (0, 1]"]),
    (["vertical_and_slash_adaptive", 4, 2 * 10**9, 0], ["slash cap must be below 1e9"]),
    (["block_sparse_antidiag", 4, 6, 0], ["block_sparse_antidiag: antidiagonal stride must be a positive divisor"]),
    (["block_sparse_antidiag", 4, 0, 0], ["block_sparse_antidiag stride must be >= 1, got 0"]),
])
def test_bad_entries_are_clear_errors(tmp_path, raw, words):
    with pytest.raises(PatternError) as e:
        parse_entry(raw)
    for w in words:
        assert w in str(e.value), str(e.value)
    path = tmp_path / "bad.json"  # through a file: the message also names file, layer and head
    path.write_text(json.dumps([{"0": ["dense", 0, 0, 0]}, {"3": raw}]))
    with pytest.raises(ConfigError) as e:
        MInferenceConfig.from_json(path)
    for w in [str(path), "layer 1, head 3"] + words:
        assert w in str(e.value), str(e.value)


def test_bad_specs_and_ids_are_clear_errors():
    with pytest.raises(PatternError, match="vertical_and_slash slash_size must be >= 1, got 0"):
        VerticalSlash(10, 0)
    with pytest.raises(PatternError, match="stream_llm init_num must be >= 0, got -1"):
        AShape(-1, 4)
    with pytest.raises(PatternError, match="gamma must be a number in"):
        VerticalSlashAdaptive(4, 4, 0.0)
    with pytest.raises(PatternError, match=r"unknown pattern id 99 \(0 dense, 1 vertical_and_slash"):
        unpack(99, 1, 1)
    with pytest.raises(PatternError, match="vs takes 2 number"):
        parse_label("vs(3)")
    with pytest.raises(PatternError, match="unknown pattern label"):
        parse_label("zz(3)")
    q, k, v = qkv(65, 2, 1, 64, torch.float32, B=1)
    with pytest.raises(ValueError, match="block_sparse topk must be >= 1, got 0"):  # the op's int lists too
        torch.ops.minference.sparse_prefill(q, k, v, [3, 0], [0, 0], [0, 0], 0.125, 0, 64)
    with pytest.raises(ConfigError, match="<config>, head default: vertical_and_slash vertical_size must be >= 1"):
        MInferenceConfig(default=("vertical_and_slash", 0, 5))


# ---- seed-format files ----

SEED_FILE = [  # the seed's format: per layer {head: [pattern, v, s, score]}, int and float scores
    {"0": ["vertical_and_slash", 1000, 6096, 12], "1": ["stream_llm", 100, 800, 7], "2": ["block_sparse", 16, 0, 3],
     "3": ["dense", 0, 0, 0.5]},
    {"0": ["vertical_and_slash", 3048, 8144, 0.8198], "2": ["vertical_and_slash_adaptive", 1000, 6096, 0.9,
                                                            {"gamma": 0.95}],
     "3": ["block_sparse_adaptive", 64, 0, 1, {"tau": 0.8}], "1": ["vertical_and_slash_adaptive", 100, 800, 0]},
]
# a searched file may also hold the antidiagonal pattern (id 6): stride in the 3rd element, tau as for id 5
ANTIDIAG_FILE = [{"0": ["block_sparse_antidiag", 128, 8, 0.97, {"tau": 0.95}],
                  "1": ["block_sparse_antidiag", 64, 4, 1]}]


def test_antidiag_entries_load_and_write_back(tmp_path):
    path = tmp_path / "ad.json"
    path.write_text(json.dumps(ANTIDIAG_FILE))
    cfg = MInferenceConfig.from_json(path)
    assert cfg.layers == (((0, ("block_sparse_antidiag", 128, 950_000_000_008)),
                           (1, ("block_sparse_antidiag", 64, 4))),)
    assert cfg.layer_specs(0, 2) == (BlockSparseAntidiag(128, 8, 0.95), BlockSparseAntidiag(64, 4))
    out = tmp_path / "out.json"
    cfg.to_json(out)
    assert json.loads(out.read_text()) == ANTIDIAG_FILE


def test_seed_format_file_loads_to_the_same_entries(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED_FILE))
    cfg = MInferenceConfig.from_json(path)
    # the stored entries (what the op receives) exactly as before the registry
    assert cfg.layers == (
        ((0, ("vertical_and_slash", 1000, 6096)), (1, ("stream_llm", 100, 800)), (2, ("block_sparse", 16, 0)),
         (3, ("dense", 0, 0))),
        ((0, ("vertical_and_slash", 3048, 8144)), (1, ("vertical_and_slash_adaptive", 100, 800)),
         (2, ("vertical_and_slash_adaptive", 1000, 950_000_006_096)),
         (3, ("block_sparse_adaptive", 64, 800_000_000_000))),
    )
    assert cfg.layer_specs(0, 5) == (VerticalSlash(1000, 6096), AShape(100, 800), BlockSparse(16), Dense(),
                                     VerticalSlash(1000, 6096))  # head 4: the default
    assert cfg.layer_specs(1, 4) == (VerticalSlash(3048, 8144), VerticalSlashAdaptive(100, 800),
                                     VerticalSlashAdaptive(1000, 6096, 0.95), BlockSparseAdaptive(64, 0.8))
    out = tmp_path / "out.json"
    cfg.to_json(out)
    written = json.loads(out.read_text())
    assert written == [{h: layer[h] for h in sorted(layer, key=int)} for layer in SEED_FILE]
    assert MInferenceConfig.from_json(out).layers == cfg.layers
    # specs are accepted wherever entries are
    same = MInferenceConfig(layers=(((0, VerticalSlash(1000, 6096)),),), default=AShape(0, 64))
    assert same.layers == (((0, ("vertical_and_slash", 1000, 6096)),),) and same.default == ("stream_llm", 0, 64)
