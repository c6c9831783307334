"""The checkpoint's ``tokenizer.json``, wrapped around the ``tokenizers`` library.

Works with Gemma's released tokenizer (SentencePiece-style BPE with byte
fallback, ``▁`` for spaces, a post-processor that adds ``<bos>``) and with the
ones ``edgeagent model init`` builds. :meth:`Tokenizer.encode` never adds
``<bos>``: the conversation code places it, exactly once, itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import tokenizers

from edgeagent.errors import TokenizerError

_LOGGER = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
UNK = "<unk>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"


class Tokenizer:
    """Text <-> token ids for one checkpoint."""

    def __init__(self, tok: tokenizers.Tokenizer, path: Path | None = None) -> None:
        self._tok = tok
        self.path = path

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a ``tokenizer.json``; TokenizerError naming the file when it is unreadable."""
        p = Path(path)
        try:
            tok = tokenizers.Tokenizer.from_file(str(p))
        except Exception as exc:  # tokenizers raises plain Exception for any parse failure
            raise TokenizerError(f"{p}: cannot load tokenizer: {exc}") from exc
        return cls(tok, p)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (for code that needs offsets etc.)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings become their ids; no ``<bos>`` added."""
        try:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        except Exception as exc:
            raise TokenizerError(f"{self._where}: cannot encode text: {exc}") from exc

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (byte-fallback tokens are fused back into UTF-8)."""
        vocab = self.vocab_size
        for i in ids:
            if not 0 <= int(i) < vocab:
                raise TokenizerError(
                    f"{self._where}: token id {i} outside the vocabulary [0, {vocab})"
                )
        try:
            return str(
                self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
            )
        except Exception as exc:
            raise TokenizerError(f"{self._where}: cannot decode ids: {exc}") from exc

    def token_to_id(self, token: str) -> int | None:
        """Id of the token string ``token``, or None when it is not in the vocabulary."""
        result = self._tok.token_to_id(token)
        return None if result is None else int(result)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of ``token_id``, or None when out of range."""
        result = self._tok.id_to_token(int(token_id))
        return None if result is None else str(result)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def bos_id(self) -> int | None:
        """Id of ``<bos>``."""
        return self.token_to_id(BOS)

    @property
    def eos_id(self) -> int | None:
        """Id of ``<eos>``."""
        return self.token_to_id(EOS)

    @property
    def pad_id(self) -> int | None:
        """Id of ``<pad>``."""
        return self.token_to_id(PAD)

    @property
    def start_of_turn_id(self) -> int | None:
        """Id of ``<start_of_turn>``."""
        return self.token_to_id(START_OF_TURN)

    @property
    def end_of_turn_id(self) -> int | None:
        """Id of ``<end_of_turn>``."""
        return self.token_to_id(END_OF_TURN)

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else "tokenizer"


def load_tokenizer(directory: str | Path) -> Tokenizer | None:
    """The tokenizer of the checkpoint in ``directory``; None when it has no ``tokenizer.json``."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.exists():
        _LOGGER.info("%s has no %s", directory, TOKENIZER_FILE)
        return None
    return Tokenizer.from_file(path)
