"""benchmarks/e2e.py plumbing on CPU (--dry-run: tiny random Llama, fp32, sparse forced, no Inductor): rows written,
injected VS sets used, chunked mode with generation. No timing is checked (timing is not a test)."""
import json

import pytest
import torch

from benchmarks import e2e


def _rows(out):
    files = sorted(out.glob("e2e-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())["rows"]


def test_dry_run_chunked_generate(tmp_path):
    assert e2e.main(["--dry-run", "--lengths", "256", "--chunk", "128", "--generate", "3", "--reps", "1",
                     "--methods", "eager-sdpa,vs-injected", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert [r["case"] for r in rows] == ["eager-sdpa", "vs-injected"]
    assert all(r["status"] == "ok" and r["chunk"] == 128 and len(r["tokens"]) == 3 for r in rows), rows
    assert "injected" in rows[1]["note"] and "chunk 128" in rows[1]["note"]
    assert rows[0]["speedup"] == 1.0
    assert (tmp_path / next(p.name for p in tmp_path.glob("*.csv"))).read_text().startswith("shape,layers")


def test_dry_run_chunk_list_runs_both_modes_in_one_process(tmp_path):
    """--chunk 0,128: one-shot and chunked rows from one run, each chunked row noting its ratio to one-shot."""
    assert e2e.main(["--dry-run", "--lengths", "256", "--chunk", "0,128", "--reps", "1", "--no-split",
                     "--methods", "eager-sdpa,ashape", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert [(r["case"], r["chunk"]) for r in rows] == [("eager-sdpa", ""), ("ashape", ""), ("eager-sdpa", 128),
                                                         ("ashape", 128)]
    assert all(r["status"] == "ok" for r in rows), rows
    for r in rows[2:]:
        want = r["prefill_ms"] / next(o for o in rows[:2] if o["case"] == r["case"])["prefill_ms"]
        assert "chunked / one-shot pre-fill %.3f" % want in r["note"]
    assert rows[0]["speedup"] == 1.0 and rows[2]["speedup"] == 1.0  # each mode against its own eager row


def test_dry_run_one_shot_split(tmp_path):
    assert e2e.main(["--dry-run", "--lengths", "256", "--methods", "ashape,seed-config", "--layers", "1", "--reps", "1",
                     "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path)
    assert rows[0]["status"] == "ok" and rows[0]["attention_ms"] > 0 and rows[0]["layers"] == 1
    assert rows[0]["prefill_ms_full_depth"] == pytest.approx(2 * rows[0]["prefill_ms"])
    assert rows[1]["status"].startswith("skip") and "--seed-config" in rows[1]["status"]


def test_injector_budgets_and_shapes():
    """Per-head budgets: entries beyond a head's budget are -1, as the estimate's own output."""
    inj = e2e.VSInjector(4, "cpu", seeds=1)

    def fake_estimate(q, k, vs, ss, *args):
        return torch.zeros(1, 4, max(vs), dtype=torch.int32), torch.zeros(1, 4, max(ss), dtype=torch.int32)

    q, k = torch.zeros(1, 4, 64, 8), torch.zeros(1, 2, 300, 8)
    vert, slash = inj(fake_estimate, q, k, [10, 0, 5, 10], [20, 0, 20, 3])
    assert vert.shape == (1, 4, 10) and slash.shape == (1, 4, 20) and inj.generated_late == 1
    assert (vert[0, 1] == -1).all() and (vert[0, 2, 5:] == -1).all() and (slash[0, 3, 3:] == -1).all()
    assert ((vert[0, 0] >= 0) & (vert[0, 0] < 300)).all() and ((slash[0, 2] >= 0) & (slash[0, 2] < 300)).all()
