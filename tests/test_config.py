import json
from pathlib import Path

import pytest

from minference_compile import MInferenceConfig
from minference_compile.config import DEFAULT_ENTRY, DEFAULT_MIN_SPARSE_LEN, ConfigError, as_config
from minference_compile.passes import MInferenceSDPAPass

FIX = Path(__file__).parent / "fixtures"


def test_reads_seed_format_int_and_float_scores():
    cfg = MInferenceConfig.from_json(FIX / "tiny_mixed.json")
    assert cfg.num_layers == 2 and cfg.source.endswith("tiny_mixed.json")
    assert cfg.head_entry(0, 1) == ("stream_llm", 100, 800)
    assert cfg.head_entry(0, 2) == ("block_sparse", 16, 0)
    assert cfg.head_entry(1, 0) == ("vertical_and_slash", 3048, 8144)
    assert cfg.head_entry(0, 3) == DEFAULT_ENTRY == ("vertical_and_slash", 1000, 6096)  # missing head
    assert cfg.head_entry(7, 0) == DEFAULT_ENTRY  # missing layer
    assert cfg.min_sparse_len == DEFAULT_MIN_SPARSE_LEN and cfg.last_q == 64


def test_starting_layer_and_frozen():
    cfg = MInferenceConfig.from_json(FIX / "tiny_mixed.json", starting_layer=1)
    assert cfg.layer_entries(0, 2) == (("dense", 0, 0),) * 2
    assert cfg.head_entry(1, 3) == ("stream_llm", 64, 512)
    with pytest.raises(Exception):
        cfg.starting_layer = 0


def test_round_trip(tmp_path):
    cfg = MInferenceConfig.from_json(FIX / "tiny_mixed.json")
    out = tmp_path / "out.json"
    cfg.to_json(out)
    assert json.loads(out.read_text()) == json.loads((FIX / "tiny_mixed.json").read_text())
    again = MInferenceConfig.from_json(out)
    assert again.layers == cfg.layers and again.scores == cfg.scores


def test_config_like_inputs():
    data = json.loads((FIX / "tiny_mixed.json").read_text())
    assert as_config(str(FIX / "tiny_mixed.json")).layers == as_config(data).layers
    assert as_config({"layers": data, "min_sparse_len": 0}).min_sparse_len == 0
    assert as_config(None).head_entry(0, 0) == DEFAULT_ENTRY


def _write(tmp_path, data, name="cfg.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


@pytest.mark.parametrize(
    "data, words",
    [
        ([{"0": ["vertical_and_slash", 10, 10, 1]}, {"2": ["diagonal", 1, 1, 0]}], ["layer 1", "head 2", "diagonal"]),
        ([{"1": ["stream_llm", -4, 10, 1]}], ["layer 0", "head 1", "init_num must be >= 0, got -4"]),
        ([{"2": ["vertical_and_slash", 0, 10, 1]}], ["layer 0", "head 2", "vertical_size must be >= 1, got 0"]),
        ([{"0": ["block_sparse", 0, 0, 1]}], ["layer 0", "head 0", "topk must be >= 1"]),
        ([{"0": ["stream_llm", 0, 0, 1]}], ["layer 0", "head 0", "local_window_num must be >= 1"]),
        ([{"x": ["stream_llm", 4, 10, 1]}], ["layer 0", "head x"]),
    ],
)
def test_parse_errors_name_file_layer_head(tmp_path, data, words):
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        MInferenceConfig.from_json(p)
    for w in [str(p)] + words:
        assert w in str(e.value)


def test_vs_max_work():
    assert MInferenceConfig().vs_max_work == 0.55
    assert as_config({"layers": [], "vs_max_work": 1.0}).vs_max_work == 1.0
    for bad in (0, -0.1, 1.5, "0.5", True):
        with pytest.raises(ConfigError, match="vs_max_work must be a number in \\(0, 1\\]"):
            MInferenceConfig.from_dict({"layers": [], "vs_max_work": bad})
    assert MInferenceSDPAPass(MInferenceConfig()).uuid() != MInferenceSDPAPass(MInferenceConfig(vs_max_work=1.0)).uuid()


def test_bad_json_names_file():
    with pytest.raises(ConfigError, match="bad_json.json: bad JSON"):
        MInferenceConfig.from_json(FIX / "bad_json.json")


def test_validate_for(tmp_path):
    cfg = MInferenceConfig.from_json(FIX / "tiny_mixed.json")
    cfg.validate_for(2, 4)
    with pytest.raises(ConfigError, match=r"tiny_mixed.json: config has 2 layers, the model has 1 \(set allow_layer"):
        cfg.validate_for(1, 4)
    with pytest.raises(ConfigError, match=r"config has 2 layers, the model has 5"):
        cfg.validate_for(5, 4)
    MInferenceConfig.from_json(FIX / "tiny_mixed.json", allow_layer_mismatch=True).validate_for(5, 4)
    with pytest.raises(ConfigError, match=r"tiny_mixed.json, layer 1, head 3: head index out of range"):
        cfg.validate_for(2, 3)


def test_uuid_changes_with_config():
    a = MInferenceSDPAPass(FIX / "tiny_mixed.json").uuid()
    assert a == MInferenceSDPAPass(FIX / "tiny_mixed.json").uuid()
    assert a != MInferenceSDPAPass(MInferenceConfig.from_json(FIX / "tiny_mixed.json", min_sparse_len=0)).uuid()
    assert a != MInferenceSDPAPass(FIX / "tiny_covering.json").uuid()
