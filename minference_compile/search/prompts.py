"""Calibration prompts, built in and offline: natural text (Python's own documentation topics, pydoc_data) and a
key-value retrieval prompt (random UUID pairs, the question at the end); or the user's text files."""
from __future__ import annotations

import random
import uuid
from typing import Callable, List

import torch

BUILTIN = ("natural", "kv")


def _natural_text() -> str:
    from pydoc_data.topics import topics  # English reference text shipped with every CPython

    return "\n\n".join(topics[k] for k in sorted(topics))


def _kv_text(n_pairs: int, seed: int) -> tuple:
    rng = random.Random(seed)
    pairs = [(str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128))))
             for _ in range(n_pairs)]
    key, value = pairs[rng.randrange(len(pairs))]
    body = ", ".join(f'"{a}": "{b}"' for a, b in pairs)
    head = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{"
    tail = f'}}\n\nKey: "{key}"\nThe value associated with the specified key is: "'
    return head, body, tail, value


class ByteTokenizer:
    """Fallback for model folders without a tokenizer (tiny test models): bytes modulo the vocabulary."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, text: str) -> List[int]:
        return [b % self.vocab_size for b in text.encode()]


def encoder(model_dir: str, vocab_size: int) -> Callable[[str], List[int]]:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        return lambda text: tok(text, add_special_tokens=False).input_ids
    except Exception:  # no tokenizer files: bytes
        return ByteTokenizer(vocab_size)


def prompt_ids(name: str, length: int, encode: Callable[[str], List[int]], seed: int = 0) -> torch.Tensor:
    """[1, length] token ids of a built-in prompt ("natural", "kv") or of a text file (a path)."""
    if name == "kv":
        ids = []
        n = max(8, length // 40)
        while True:  # grow the dictionary until it fills the length; the question stays at the end
            head, body, tail, _ = _kv_text(n, seed)
            ids_h, ids_b, ids_t = encode(head), encode(body), encode(tail)
            if len(ids_h) + len(ids_b) + len(ids_t) >= length:
                ids = ids_h + ids_b[:length - len(ids_h) - len(ids_t)] + ids_t
                break
            n = int(n * 1.5) + 8
        return torch.tensor([ids[-length:]])
    if name == "natural":
        text = _natural_text()
    else:
        with open(name, encoding="utf-8", errors="replace") as f:
            text = f.read()
    ids = encode(text)
    if len(ids) < length:  # repeat short texts (a user file) rather than fail
        ids = ids * (-(-length // max(1, len(ids))))
    return torch.tensor([ids[:length]])
