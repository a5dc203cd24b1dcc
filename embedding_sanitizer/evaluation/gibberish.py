"""Benign-gibberish control (issue 12): benign prompts with adversarial-style noise or real-prompt decorations.

Attack prompts (MMA-Diffusion, P4D, SneakyPrompt and the like) are full of junk tokens; a detector that
learns "odd text" instead of "unsafe text" scores them well and also flags harmless prompts that carry
the same kind of noise. This generator makes such harmless prompts, deterministically from a seed:

* ``noise6`` / ``noise12``: 6 or 12 junk tokens inserted at random word boundaries of a benign prompt.
  Junk kinds, drawn uniformly: random sub-word letter strings, two random words glued together, a
  misspelling of one of the prompt's words (or of a common word), an emoji, an emoticon, and the
  literal ``<|startoftext|>``.
* ``decorated``: the decorations real prompts carry: quality tags, an artist list, A1111 weight
  syntax (``(word:1.3)``, ``((word))``, ``[word]``), ``<lora:name:0.8>`` tags and textual-inversion
  embedding names.

The prompts are the raw text a tool sees before a host parses weight syntax or LoRA tags (``scan``
and the evaluation tokenize raw text); hosts strip some of it before encoding, so this is the harder case.
Every list below was written for this project.
"""
from __future__ import annotations

import random
import string

VARIANTS = ("noise6", "noise12", "decorated")
NOISE_COUNTS = {"noise6": 6, "noise12": 12}

EMOJI = ("🙂", "😀", "🌸", "🔥", "✨", "🐱", "🌈", "🎉", "💫", "🍕", "⭐", "🌙", "🎨", "👀", "💯", "🌊")
EMOTICONS = (":)", ";-)", "xD", ":-P", "^_^", "<3", "o_O", ":3", "T_T", ":D")
START_TOKEN = "<|startoftext|>"
COMMON_WORDS = (
    "light", "river", "window", "garden", "morning", "yellow", "table", "street", "cloud", "paper", "green",
    "silver", "market", "bridge", "pencil", "summer", "little", "wooden", "corner", "forest", "button", "coffee",
    "orange", "castle", "travel", "bright", "simple", "planet", "circle", "island", "letter", "mirror",
)
QUALITY_TAGS = (
    "masterpiece", "best quality", "ultra detailed", "highres", "absurdres", "8k uhd", "sharp focus",
    "intricate details", "award winning", "professional photo", "hdr", "extremely detailed", "4k wallpaper",
    "trending on artstation", "cinematic", "octane render", "volumetric lighting", "depth of field",
)
ARTISTS = (
    "greg rutkowski", "alphonse mucha", "artgerm", "wlop", "thomas kinkade", "studio ghibli", "makoto shinkai",
    "ilya kuvshinov", "james gurney", "simon stalenhag", "beeple", "ross tran", "loish", "moebius",
)
LORA_NAMES = ("add_detail", "detail_tweaker", "film_grain_v2", "epi_noiseoffset", "lowra", "more_details",
              "sharpness_fix", "pastel_colors", "cinematic_style_v3")
EMBEDDING_NAMES = ("easynegative", "bad-hands-5", "ng_deepnegative_v1_75t", "verybadimagenegative_v1.3",
                   "badhandv4", "fastnegativev2", "style-empire", "charturnerv2")
WEIGHTS = ("1.1", "1.2", "1.3", "1.4", "0.8", "0.9")
NOISE_KINDS = ("subword", "glued", "misspelling", "emoji", "emoticon", "start_token")


def _subword(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 6)))


def _misspell(word: str, rng: random.Random) -> str:
    """Swap, drop or double one letter (never the identity for words of 2+ letters)."""
    if len(word) < 2:
        return word + word
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1 and len(word) > 3:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def noise_token(kind: str, words: list[str], rng: random.Random) -> str:
    if kind == "subword":
        return _subword(rng)
    if kind == "glued":
        pool = [w for w in words if w.isalpha()] or list(COMMON_WORDS)
        return rng.choice(pool).lower() + rng.choice(COMMON_WORDS)
    if kind == "misspelling":
        pool = [w for w in words if w.isalpha() and len(w) > 3] or list(COMMON_WORDS)
        return _misspell(rng.choice(pool).lower(), rng)
    if kind == "emoji":
        return rng.choice(EMOJI)
    if kind == "emoticon":
        return rng.choice(EMOTICONS)
    if kind == "start_token":
        return START_TOKEN
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")


def add_noise(prompt: str, count: int, rng: random.Random) -> str:
    """``count`` junk tokens at random word boundaries; the prompt's own words keep their order."""
    words = prompt.split()
    out = list(words)
    for _ in range(count):
        token = noise_token(rng.choice(NOISE_KINDS), words, rng)
        out.insert(rng.randint(0, len(out)), token)
    return " ".join(out)


def decorate(prompt: str, rng: random.Random) -> str:
    """The prompt with weight syntax on one or two of its words, quality tags, artists, LoRA and embeddings."""
    words = prompt.rstrip(".").split()
    content = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3]
    for i in rng.sample(content, min(len(content), rng.randint(1, 2))):
        style = rng.randrange(3)
        words[i] = (f"({words[i]}:{rng.choice(WEIGHTS)})" if style == 0 else
                    f"(({words[i]}))" if style == 1 else f"[{words[i]}]")
    parts = [" ".join(words)]
    parts += rng.sample(QUALITY_TAGS, rng.randint(2, 4))
    parts.append("by " + ", ".join(rng.sample(ARTISTS, rng.randint(1, 3))))
    tail = [f"<lora:{rng.choice(LORA_NAMES)}:{rng.choice(('0.6', '0.7', '0.8', '1'))}>"]
    tail += rng.sample(EMBEDDING_NAMES, rng.randint(1, 2))
    rng.shuffle(tail)
    if rng.random() < 0.5:
        parts = rng.sample(QUALITY_TAGS, 1) + parts
    return ", ".join(parts + tail)


def variant(prompts: list[str], name: str, seed: int) -> list[str]:
    """One variant of every prompt, deterministic for (prompts, name, seed)."""
    rng = random.Random(f"{name}:{seed}")
    if name in NOISE_COUNTS:
        return [add_noise(p, NOISE_COUNTS[name], rng) for p in prompts]
    if name == "decorated":
        return [decorate(p, rng) for p in prompts]
    raise ValueError(f"unknown variant {name!r}; expected one of {VARIANTS}")
