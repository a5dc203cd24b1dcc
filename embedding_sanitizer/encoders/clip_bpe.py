"""The CLIP byte-level BPE tokenizer, with no download and no host import.

The vocabulary comes from files already on the machine:

* the ``open-clip-torch`` package, which ships ``open_clip/bpe_simple_vocab_16e6.txt.gz``
  (found without importing ``open_clip``, whose import pulls in torchvision);
* an explicit path to such a ``.txt.gz`` file;
* a folder holding Hugging Face style ``vocab.json`` and ``merges.txt`` (for
  example ComfyUI's ``comfy/sd1_tokenizer``), or the path of one of those files.

Both sources give the same 49,408 ids: 256 byte symbols, the same 256 symbols
with the ``</w>`` end-of-word marker, 48,894 merges, then ``<|startoftext|>``
(49406) and ``<|endoftext|>`` (49407).

Text cleanup (``clean=``):

* ``"hf"`` (default): what Stable Diffusion hosts run, i.e. Hugging Face's
  ``CLIPTokenizer`` as ComfyUI and A1111 use it (the ``tokenizers`` backed one
  of transformers 5, and the fast tokenizer before it): the exact strings
  ``<|startoftext|>`` / ``<|endoftext|>`` become BOS / EOS first; the rest gets
  Unicode NFC, every run of whitespace collapsed to one space, and a
  character-by-character lowercase. No HTML unescaping. (The pure-Python
  tokenizer of transformers 4 without ftfy pre-splits text with BERT's basic
  tokenizer instead, which can differ on CJK text and control characters.)
* ``"openai"``: the original CLIP / open_clip cleanup: ``ftfy.fix_text`` when
  ftfy is installed (NFC otherwise), HTML unescaped twice, whitespace collapsed,
  stripped, lowercased. It differs from ``"hf"`` only on unusual input such as
  HTML entities (``&amp;``) or text that ftfy repairs.

Then both use the standard CLIP pre-tokenization pattern, map each piece's
UTF-8 bytes to printable characters (the bytes-to-unicode table), and apply the
merges by rank with ``</w>`` attached to the last symbol of each piece.
"""
from __future__ import annotations

import gzip
import html
import importlib.metadata
import importlib.util
import json
import unicodedata
from functools import lru_cache
from pathlib import Path

import regex

from ..text_normalize import scrub_surrogates

BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
OPEN_CLIP_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
_MERGE_COUNT = 49152 - 256 - 2  # merges used by CLIP's 49,408-entry vocabulary

# CLIP's pre-tokenization pattern (applied to lowercased text). The host tokenizer matches the
# special strings before cleanup and then splits with the same pattern minus its special-token
# alternatives (a lowercased "<|ENDOFTEXT|>" is ordinary text there).
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_PATTERN = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|" + _WORDS, regex.IGNORECASE)
_PATTERN_HF = regex.compile(_WORDS, regex.IGNORECASE)
_WHITESPACE = regex.compile(r"\s+")
_SPECIALS = {BOS_TOKEN: BOS_ID, EOS_TOKEN: EOS_ID}
_SPECIAL_SPLIT = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")

INSTALL_HINT = (
    "pip install --no-deps open-clip-torch (it ships the CLIP vocabulary "
    f"open_clip/{OPEN_CLIP_VOCAB}), or pass the path of a vocabulary: a {OPEN_CLIP_VOCAB} "
    "file or a folder with vocab.json and merges.txt"
)


class VocabularyNotFound(FileNotFoundError):
    """No CLIP BPE vocabulary could be found on this machine."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE.

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space,
    soft hyphen...) map, in byte order, to the characters from U+0100 on. The
    table lists the printable bytes first: that order numbers the vocabulary.
    """
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table = {byte: chr(byte) for byte in keep}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def find_open_clip_vocab() -> Path | None:
    """Path of ``open_clip/bpe_simple_vocab_16e6.txt.gz`` in the installed package, without importing it."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for folder in spec.submodule_search_locations or []:
            candidate = Path(folder) / OPEN_CLIP_VOCAB
            if candidate.is_file():
                return candidate
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == OPEN_CLIP_VOCAB:
            candidate = Path(dist.locate_file(file))
            if candidate.is_file():
                return candidate
    return None


def _load_gz(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(path, "rb").read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_MERGE_COUNT + 1]]
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + END_OF_WORD for symbol in byte_symbols]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def _load_hf(vocab_file: Path, merges_file: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    merges = []
    for line in merges_file.read_text(encoding="utf-8").split("\n"):
        if not line.strip() or line.startswith("#version"):
            continue
        merges.append(tuple(line.split()))
    return vocab, merges


def load_vocabulary(source: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]], str]:
    """``(token -> id, merges in rank order, description of the source)``."""
    if source is None:
        found = find_open_clip_vocab()
        if found is None:
            raise VocabularyNotFound(f"no CLIP BPE vocabulary found: {INSTALL_HINT}")
        return (*_load_gz(found), f"open_clip:{OPEN_CLIP_VOCAB}")
    path = Path(source)
    if path.is_dir():
        vocab_file, merges_file = path / "vocab.json", path / "merges.txt"
    elif path.is_file() and path.name.endswith(".gz"):
        return (*_load_gz(path), path.name)
    elif path.is_file() and path.name in ("vocab.json", "merges.txt"):
        vocab_file, merges_file = path.parent / "vocab.json", path.parent / "merges.txt"
    else:
        raise VocabularyNotFound(f"CLIP vocabulary {str(path)!r} does not exist or is not a vocabulary: {INSTALL_HINT}")
    missing = [str(file) for file in (vocab_file, merges_file) if not file.is_file()]
    if missing:
        raise VocabularyNotFound(f"CLIP vocabulary files missing: {', '.join(missing)}; {INSTALL_HINT}")
    return (*_load_hf(vocab_file, merges_file), f"{vocab_file.parent.name}/vocab.json")


class CLIPBPETokenizer:
    """CLIP BPE tokenizer: text -> word ids (no BOS/EOS), ids -> readable pieces."""

    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, vocab: str | Path | None = None, *, clean: str = "hf", cache_size: int = 100_000):
        if clean not in ("hf", "openai"):
            raise ValueError(f"clean must be 'hf' or 'openai', got {clean!r}")
        self.encoder, merges, self.source = load_vocabulary(vocab)
        self.clean = clean
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.cache_size = cache_size
        # The original CLIP maps the (lowercased) special strings through its BPE cache; the
        # host tokenizer matches them case-sensitively before any cleanup (see encode_words).
        self._seed = {BOS_TOKEN: (BOS_ID,), EOS_TOKEN: (EOS_ID,)} if clean == "openai" else {}
        self._cache: dict[str, tuple[int, ...]] = dict(self._seed)
        if len(self.encoder) != VOCAB_SIZE or self.encoder.get(BOS_TOKEN) != BOS_ID or self.encoder.get(EOS_TOKEN) != EOS_ID:
            raise ValueError(
                f"vocabulary from {self.source} is not the CLIP vocabulary "
                f"({len(self.encoder)} entries, expected {VOCAB_SIZE} with BOS {BOS_ID} and EOS {EOS_ID})"
            )

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    # ------------------------------------------------------------------ text
    def clean_text(self, text: str) -> str:
        if self.clean == "openai":
            try:
                import ftfy
            except ImportError:
                text = unicodedata.normalize("NFC", text)
            else:
                text = ftfy.fix_text(text)
            text = html.unescape(html.unescape(text)).strip()
            return _WHITESPACE.sub(" ", text).strip().lower()
        text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
        return "".join([char.lower() for char in text])  # per character: no final-sigma rule

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces (words, digits, punctuation runs) of cleaned text."""
        return (_PATTERN_HF if self.clean == "hf" else _PATTERN).findall(self.clean_text(text))

    # ------------------------------------------------------------------- BPE
    def bpe(self, piece: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized piece (cached)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [self.byte_encoder[byte] for byte in piece.encode("utf-8")]
        if not symbols:
            return ()
        symbols[-1] += END_OF_WORD
        ranks = self.ranks
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged = []
            index = 0
            while index < len(symbols):
                if index < len(symbols) - 1 and symbols[index] == first and symbols[index + 1] == second:
                    merged.append(first + second)
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        ids = tuple(self.encoder[symbol] for symbol in symbols)
        if len(self._cache) >= self.cache_size:
            self._cache = dict(self._seed)
        self._cache[piece] = ids
        return ids

    def encode_words(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS and EOS (a lone UTF-16 surrogate reads as U+FFFD)."""
        text = scrub_surrogates(text)
        ids: list[int] = []
        parts = _SPECIAL_SPLIT.split(text) if self.clean == "hf" else [text]
        for index, part in enumerate(parts):
            if index % 2:
                ids.append(_SPECIALS[part])
                continue
            for piece in self.pre_tokenize(part):
                ids.extend(self.bpe(piece))
        return ids

    def encode(self, text: str) -> list[int]:
        """``[BOS] + words + [EOS]``, unpadded and untruncated."""
        return [BOS_ID, *self.encode_words(text), EOS_ID]

    # ---------------------------------------------------------------- decode
    def token(self, index: int) -> str:
        """Raw vocabulary entry of an id (byte symbols, with ``</w>``)."""
        try:
            return self.decoder[int(index)]
        except KeyError:
            raise ValueError(f"token id {index} is outside the CLIP vocabulary (0..{VOCAB_SIZE - 1})") from None

    def decode_piece(self, index: int) -> str:
        """Readable text of one id, ``</w>`` stripped (a partial UTF-8 sequence shows as U+FFFD)."""
        token = self.token(index)
        if token in (BOS_TOKEN, EOS_TOKEN):
            return token
        if token.endswith(END_OF_WORD):
            token = token[: -len(END_OF_WORD)]
        return bytes(self.byte_decoder[char] for char in token).decode("utf-8", errors="replace")

    def decode(self, ids) -> str:
        """Text of a sequence of ids (specials dropped), a space after each word end."""
        raw = bytearray()
        for index in ids:
            token = self.token(index)
            if token in (BOS_TOKEN, EOS_TOKEN):
                continue
            word_end = token.endswith(END_OF_WORD)
            if word_end:
                token = token[: -len(END_OF_WORD)]
            raw.extend(self.byte_decoder[char] for char in token)
            if word_end:
                raw.extend(b" ")
        return raw.decode("utf-8", errors="replace").strip()


@lru_cache(maxsize=8)
def _shared(vocab: str | None, clean: str) -> CLIPBPETokenizer:
    return CLIPBPETokenizer(vocab, clean=clean)


def get_tokenizer(vocab: str | Path | None = None, clean: str = "hf") -> CLIPBPETokenizer:
    """A shared tokenizer per vocabulary source (loading one takes about a second)."""
    return _shared(None if vocab is None else str(Path(vocab).resolve()), clean)
