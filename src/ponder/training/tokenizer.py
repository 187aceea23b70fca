"""Character-level tokenizer of the embedded models: one token per character.

Digit-level tokens let a tiny model learn carries; the vocabulary holds all printable ASCII so
prompts with earlier attempts, tags or notes still encode.
"""

from __future__ import annotations

from ponder.errors import ConfigError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
    """Maps text to token ids and back; ids 0..2 are ``<pad>``, ``<bos>``, ``<eos>``."""

    def __init__(self) -> None:
        self.itos: list[str] = list(SPECIALS) + list(CHARS)
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self.pad_id = self.stoi[PAD]
        self.bos_id = self.stoi[BOS]
        self.eos_id = self.stoi[EOS]

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = False) -> list[int]:
        unknown = sorted({ch for ch in text if ch not in self.stoi})
        if unknown:
            raise ConfigError(
                f"text has characters the embedded tokenizer cannot encode: {unknown!r} "
                "(it knows printable ASCII and newline)"
            )
        ids = [self.stoi[ch] for ch in text]
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids if i >= len(SPECIALS))

    def token_of(self, ch: str) -> int:
        return self.stoi[ch]
