"""Benign filler words drawn from the encoder's own tokenizer vocabulary.

Captions are full of rare but harmless words (brand names, place names, odd
nouns, typos); the hand-written everyday list cannot cover them all, so the
corpus also sprinkles whole words taken from the tokenizer's vocabulary into
benign and unsafe contexts (always labelled 0). Only the vocabulary's *words*
are used (no prompt text); anything that shares a stem with an unsafe term or
with the sensitive stems below is left out, so that no harmful word is ever
taught as benign.
"""
from __future__ import annotations

import random
import re

from . import wordlists as W

# Stems that must never be taught as benign filler (prefix match, lowercase). Written for this project.
SENSITIVE_STEMS = (
    "nud", "nak", "sex", "porn", "erot", "breast", "nipp", "genit", "penis", "vagin", "vulv", "anal", "anus",
    "rape", "rapi", "incest", "orgas", "mastur", "fetish", "strip", "boob", "tit", "butt", "ass", "dick", "cock",
    "puss", "cum", "semen", "sperm", "erect", "lust", "seduc", "sensu", "lingerie", "bikini", "thong", "bra",
    "pant", "topless", "whore", "slut", "hooker", "prostit", "brothel", "escort", "horny", "kink", "bdsm",
    "bondage", "nsfw", "hentai", "lewd", "obscen", "explicit", "intim", "undress", "bath", "bather", "shower",
    "bare", "skin", "body", "bodi", "flesh", "curv", "busty", "thigh", "hip", "chest", "torso", "bust", "belly",
    "naval", "navel", "groin", "crotch", "loin", "nymph", "venus", "odalis", "model", "pose", "lover", "love",
    "kiss", "bed", "bikin", "swimsuit", "underw", "nightg", "corset", "stocking", "garter", "lace", "silk",
    "kill", "murder", "blood", "bleed", "gore", "gori", "gory", "corpse", "cadav", "dead", "death", "die", "dying",
    "suicid", "tortur", "behead", "decapit", "mutil", "stab", "shoot", "shot", "gun", "rifle", "pistol", "weapon",
    "knife", "knive", "blade", "sword", "bomb", "explo", "terror", "massac", "slaught", "wound", "injur",
    "violen", "war", "assault", "abus", "hang", "noose", "lynch", "cannib", "zombie", "skull", "skelet", "rot",
    "maggot", "butcher", "brutal", "execut", "victim", "crime", "criminal", "drug", "cocaine", "heroin", "nazi",
    "hitler", "slave", "racis", "hate", "bully", "harass", "fight", "attack", "punch", "beat", "bruis", "scar",
    "horror", "demon", "satan", "hell", "fuck", "shit", "bitch", "damn", "cunt", "twat", "bastard", "slay",
    "clit", "bum", "sniper", "grenade", "bullet", "drown", "burn", "genocid", "virgin", "pregn", "womb", "firearm",
    "hostage", "kidnap", "poison", "chok", "strangl", "passion", "affair", "vile", "molest", "grop", "pervert",
    "pedo", "paedo", "adulter", "mistress", "harlot", "courtesan", "bosom", "cleav", "rump", "arse", "booty",
    "ejacul", "arous", "sultry", "volupt", "hostil", "massacr", "assassin", "gunman", "gunmen", "bloody",
)
_WORD = re.compile(r"^[a-z]{3,14}$")


def _blocked_stems() -> set[str]:
    stems = set(SENSITIVE_STEMS)
    for pack in W.BUILTIN.values():
        for term, _anchor, _kind in pack:
            for word in re.findall(r"[a-z]+", term.lower()):
                if len(word) >= 4:
                    stems.add(word[:5])
    return stems


def raw_vocabulary(encoder) -> list[str]:
    """Whole-word entries of the encoder's tokenizer vocabulary (WordPiece or CLIP BPE), lowercased."""
    tok = getattr(encoder, "tokenizer", None)
    vocab = None
    for attr in ("get_vocab", "vocab", "encoder"):
        value = getattr(tok, attr, None) if tok is not None else None
        if callable(value):
            try:
                value = value()
            except Exception:  # noqa: BLE001 - an unexpected tokenizer just gives no extra words
                value = None
        if isinstance(value, dict) and value:
            vocab = value
            break
    if vocab is None:
        return []
    words = []
    for entry in vocab:
        if not isinstance(entry, str) or entry.startswith("##"):
            continue
        word = entry[:-4] if entry.endswith("</w>") else entry
        words.append(word.lower())
    return sorted(set(words))


def vocabulary_words(encoder, limit: int = 4000, seed: int = 0) -> list[str]:
    """Up to ``limit`` seeded, filtered whole words of the encoder's vocabulary (empty when it has none)."""
    stems = _blocked_stems()
    everyday = set(W.EVERYDAY)
    words = [w for w in raw_vocabulary(encoder)
             if _WORD.match(w) and w not in everyday and not any(w.startswith(s) for s in stems)]
    rng = random.Random(seed)
    rng.shuffle(words)
    return sorted(words[:limit])
