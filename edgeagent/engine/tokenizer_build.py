"""Builds a Gemma-shaped ``tokenizer.json`` for random-weight checkpoints.

Structure copied from Gemma's released tokenizer (transformers'
``GemmaConverter``): BPE with byte fallback, normalizer ``" " -> "▁"``,
decoder ``▁ -> " "`` + ByteFallback + Fuse, a post-processor adding ``<bos>``.

Id layout (every id in ``[0, vocab_size)`` holds exactly one token):
- fixed special ids (Gemma's where the vocabulary allows): 0 ``<pad>``,
  1 ``<eos>``, 2 ``<bos>``, 3 ``<unk>``, 4 ``<mask>``, 105 ``<start_of_turn>``,
  106 ``<end_of_turn>``, plus the multimodal markers at the ids the preset gives;
- byte tokens ``<0x00>``…``<0xFF>`` at the first 256 free ids after 106, so any
  text encodes;
- then the learned tokens (alphabet + BPE merges trained on a fixed corpus) in
  the remaining free ids, ascending; then ``<unusedN>`` fillers.
Training is deterministic for a given corpus. The "builtin" corpus is the
English text below; "builtin+pydoc" adds the Python documentation topics
shipped in the standard library (``pydoc_data.topics``), whose text — and so
the merges — can differ between Python versions.
"""

from __future__ import annotations

import json
import logging
import pydoc_data.topics
from collections.abc import Mapping
from dataclasses import dataclass, field

import tokenizers
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from edgeagent.errors import TokenizerError

_LOGGER = logging.getLogger(__name__)

BASE_SPECIALS: dict[str, int] = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "<start_of_turn>": 105,
    "<end_of_turn>": 106,
}
BYTES_AFTER = 106  # byte tokens go at the first free ids above this one
SPACE = "▁"

_BUILTIN_CORPUS = """\
The quick brown fox jumps over the lazy dog. A small assistant runs on the device in the kitchen.
It listens, thinks, and answers in a short, friendly sentence. What is the weather like today?
It is sunny and warm, with a light breeze from the west.
Please turn on the lights in the living room.
The lights are on. Set a timer for ten minutes. The timer is set for ten minutes, starting now.
Hello! How are you? I am fine, thank you. What time is it? It is half past three in the afternoon.
Can you tell me a story? Once upon a time there was a little robot who wanted to learn to sing.
Every morning the robot practised, and every evening it sang for the people of the town.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 100 256 1024 2048. Dates: Monday, Tuesday, Wednesday.
The user asked the model a question, and the model gave an answer. The model is a language model.
user model system assistant question answer hello thanks please sorry yes no maybe
Water boils at one hundred degrees. The sun rises in the east and sets in the west.
She said that they would meet at the station before the train left for the city.
"""


@dataclass(frozen=True)
class TokenizerSpec:
    """What to build: total ``vocab_size`` and the ids that must hold given special tokens."""

    vocab_size: int
    text_vocab_size: int  # ids >= this are multimodal: markers and fillers only, no text tokens
    special_ids: Mapping[str, int] = field(
        default_factory=dict
    )  # token string -> id, beyond BASE_SPECIALS
    corpus: str = "builtin"  # "builtin" | "builtin+pydoc"
    max_learned: int = 16_000  # cap on alphabet + merges (training time grows with it)


def corpus_text(name: str) -> str:
    """The training text called ``name``."""
    if name == "builtin":
        return _BUILTIN_CORPUS
    if name == "builtin+pydoc":
        return _BUILTIN_CORPUS + "\n".join(
            pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)
        )
    raise TokenizerError(f"unknown tokenizer corpus {name!r}")


def _fixed_ids(spec: TokenizerSpec) -> dict[int, str]:
    specials = {**BASE_SPECIALS, **spec.special_ids}
    by_id: dict[int, str] = {}
    for token, i in specials.items():
        if not 0 <= i < spec.vocab_size:
            raise TokenizerError(
                f"special token {token} id {i} outside vocabulary [0, {spec.vocab_size})"
            )
        if i in by_id:
            raise TokenizerError(f"special tokens {by_id[i]} and {token} both want id {i}")
        by_id[i] = token
    free_after = (i for i in range(BYTES_AFTER + 1, spec.text_vocab_size) if i not in by_id)
    for b in range(256):
        try:
            by_id[next(free_after)] = f"<0x{b:02X}>"
        except StopIteration:
            raise TokenizerError(
                f"vocabulary of {spec.vocab_size} is too small for 256 byte tokens"
            ) from None
    return by_id


def _learn(corpus: str, n_slots: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Alphabet + merged tokens (at most ``n_slots``) and the merges, trained on ``corpus``."""
    if n_slots <= 0:
        return [], []
    model = tokenizers.Tokenizer(BPE(unk_token="<unk>"))
    model.normalizer = normalizers.Replace(" ", SPACE)
    model.pre_tokenizer = pre_tokenizers.Split(SPACE, "merged_with_next")
    trainer = BpeTrainer(
        vocab_size=n_slots,
        show_progress=False,
        limit_alphabet=min(96, max(1, n_slots // 2)),
        initial_alphabet=[SPACE],
    )
    model.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    state = model.to_str()
    bpe = json.loads(state)["model"]
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    return tokens, [(a, b) for a, b in merges]


def build_tokenizer(spec: TokenizerSpec) -> tokenizers.Tokenizer:
    """A Gemma-shaped BPE tokenizer with exactly ``spec.vocab_size`` ids."""
    by_id = _fixed_ids(spec)
    free = [i for i in range(spec.text_vocab_size) if i not in by_id]
    taken = set(by_id.values())
    learned, merges = _learn(corpus_text(spec.corpus), min(len(free), spec.max_learned))
    learned = [t for t in learned if t not in taken][: len(free)]
    for i, token in zip(free, learned, strict=False):
        by_id[i] = token
    unused = 0
    for i in free[len(learned) :] + [
        i for i in range(spec.text_vocab_size, spec.vocab_size) if i not in by_id
    ]:
        while f"<unused{unused}>" in taken:
            unused += 1
        by_id[i] = f"<unused{unused}>"
        unused += 1
    vocab = {token: i for i, token in by_id.items()}
    known = set(vocab)
    merges = [(a, b) for a, b in merges if a in known and b in known and a + b in known]
    tok = tokenizers.Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A <bos> $B",
        special_tokens=[("<bos>", BASE_SPECIALS["<bos>"])],
    )
    specials = {**BASE_SPECIALS, **spec.special_ids}
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, _ in sorted(specials.items(), key=lambda kv: kv[1])
        ]
    )
    if tok.get_vocab_size(with_added_tokens=True) != spec.vocab_size:
        raise TokenizerError(
            f"built tokenizer has {tok.get_vocab_size()} ids, expected {spec.vocab_size}"
        )
    _LOGGER.debug(
        "tokenizer: %d ids, %d learned tokens, %d merges",
        spec.vocab_size,
        len(learned),
        len(merges),
    )
    return tok
