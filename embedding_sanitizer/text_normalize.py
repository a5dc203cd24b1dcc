"""Text normalisation for the scoring side: what an obfuscated prompt reads as.

Written by the Embedding Sanitizer team. The facts it encodes are Unicode's: NFKC
(Unicode Standard Annex #15) folds compatibility forms (full-width letters, ligatures,
mathematical alphanumerics, circled letters) into plain ones; the look-alike table
below lists Cyrillic, Greek and Armenian letters that Unicode's confusables data
(Unicode Technical Standard #39, ``confusables.txt``) maps to a Latin letter, chosen by
hand for the letters that pass for Latin ones in ordinary fonts. No file of the
Unicode data is copied or read at run time.

``normalize_prompt(text)``:

1. lone UTF-16 surrogates (``"\\ud800"``, which no tokenizer can encode) become U+FFFD;
2. NFKC;
3. control characters (category Cc: NUL, escape, ...) and the line/paragraph separators
   become a space: they are used as word separators that some tokenizers drop, gluing
   the words together;
4. format characters (category Cf: zero-width space and joiners, soft hyphen, BOM, bidi
   marks) are removed: they are used inside words to split them;
5. in every word that mixes Latin letters with look-alikes, or consists only of
   look-alikes, each look-alike becomes its Latin letter. Words with other non-Latin
   letters (real Cyrillic or Greek words) are left as they are;
6. runs of spaces become one space, and the ends are stripped.

The host's own tokens and embeddings never see this text: the sanitizer scores the
normalised text alongside the original (``sanitize.Sanitizer.sanitize(texts=...)``).
"""
from __future__ import annotations

import re
import unicodedata

#: Non-Latin letters that look like a Latin letter (after NFKC), and that letter.
LOOKALIKES: dict[str, str] = {
    # Cyrillic lowercase
    "\u0430": "a", "\u0432": "b", "\u0435": "e", "\u0451": "e", "\u0456": "i", "\u0457": "i", "\u0458": "j",
    "\u043a": "k", "\u043c": "m", "\u043d": "h", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0442": "t",
    "\u0443": "y", "\u0445": "x", "\u0455": "s", "\u0501": "d", "\u051b": "q", "\u051d": "w", "\u04bb": "h",
    "\u0491": "r", "\u04cf": "l", "\u0475": "v", "\u044c": "b", "\u0433": "r",
    # Cyrillic uppercase
    "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u0401": "E", "\u0406": "I", "\u0407": "I", "\u0408": "J",
    "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T",
    "\u0423": "Y", "\u0425": "X", "\u0405": "S", "\u04ae": "Y", "\u0474": "V", "\u051a": "Q", "\u051c": "W",
    "\u04c0": "I",
    # Greek lowercase
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03c5": "u",
    "\u03c4": "t", "\u03c7": "x", "\u03b5": "e", "\u03f2": "c", "\u03f3": "j", "\u03c9": "w", "\u03b7": "n",
    # Greek uppercase
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I", "\u039a": "K",
    "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
    "\u03f9": "C", "\u037f": "J",
    # Armenian
    "\u0585": "o", "\u057d": "u", "\u0570": "h", "\u0578": "n", "\u0581": "g", "\u0584": "f", "\u0566": "q",
    # Latin letters outside a-z that pass for one
    "\u0131": "i", "\u0237": "j", "\u0269": "i", "\u0261": "g", "\u01c0": "l", "\u0251": "a",
}

_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[^\s]+")


def scrub_surrogates(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD (tokenizers cannot encode them)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _is_latin_letter(char: str) -> bool:
    return char.isalpha() and char.isascii()


def _fold_word(word: str) -> str:
    letters = [c for c in word if c.isalpha()]
    if not any(c in LOOKALIKES for c in letters):
        return word
    # a word with other non-Latin letters is a real word of that script: leave it
    if not all(_is_latin_letter(c) or c in LOOKALIKES for c in letters):
        return word
    return "".join(LOOKALIKES.get(c, c) for c in word)


def _clean_char(char: str) -> str:
    category = unicodedata.category(char)
    if category == "Cc" or char in "\u2028\u2029\u0085":
        return " "
    if category == "Cf":
        return ""
    return char


def normalize_prompt(text: str) -> str:
    """The text an obfuscated prompt reads as (see the module docstring for the steps)."""
    text = unicodedata.normalize("NFKC", scrub_surrogates(str(text)))
    text = "".join(_clean_char(c) for c in text)
    text = _WORD.sub(lambda m: _fold_word(m.group(0)), text)
    return _SPACES.sub(" ", text).strip()


_PLAIN_SPACES = re.compile(r"[ \t\n\r]+")  # not str.isspace(): it counts \x1c-\x1f, which tokenizers drop


def differs(text: str) -> bool:
    """Whether normalising changes ``text`` beyond its plain spacing (spaces, tabs, line breaks)."""
    return normalize_prompt(text) != _PLAIN_SPACES.sub(" ", str(text)).strip()
