"""Erasure yardsticks (issue 12): metric functions on small synthetic tensors (a known-good and a known-bad
case each), the probe, the gibberish generator, the phrase list's independence from the calibration corpus,
and a tiny end-to-end run through ``Evaluation``."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from embedding_sanitizer.corpus import generator as corpus_generator
from embedding_sanitizer.corpus import wordlists as W
from embedding_sanitizer.evaluation import erasure_metrics as EM
from embedding_sanitizer.evaluation import gibberish as G
from embedding_sanitizer.evaluation.phrases import insert_marked, phrase_sets, plain, split_marked
from embedding_sanitizer.evaluation.probe import LinearProbe, in_train_half
from embedding_sanitizer.layout import ROLE_EOS


# -- re-detection --------------------------------------------------------------------------
def test_redetection_counts_detected_on_the_original_only():
    before = [0.9, 0.8, 0.1, 0.7]
    after = [0.2, 0.85, 0.9, 0.6]  # prompt 2 was not detected before: it never counts
    out = EM.redetection(before, after, 0.5, edited=[True, False, True, True])
    assert out["n_detected"] == 3 and out["detected_share"] == pytest.approx(0.75)
    assert out["remaining"] == pytest.approx(2 / 3)  # prompts 1 and 3 still above
    assert out["n_detected_edited"] == 2 and out["remaining_among_edited"] == pytest.approx(0.5)


def test_redetection_known_bad_and_known_good():
    before = np.array([0.9, 0.8, 0.7])
    assert EM.redetection(before, before, 0.5)["remaining"] == 1.0  # nothing erased
    assert EM.redetection(before, np.zeros(3), 0.5)["remaining"] == 0.0  # everything erased
    held_out = EM.redetection(before, np.array([0.9, 0.0, 0.0]), 0.5, counted=[False, True, True])
    assert held_out["n"] == 2 and held_out["remaining"] == 0.0
    assert math.isnan(EM.redetection([0.1], [0.9], 0.5)["remaining"])  # nothing detected: undefined
    with pytest.raises(ValueError):
        EM.redetection([1.0], [1.0, 2.0], 0.5)


def test_pool_counts_sums_counts_not_shares():
    a = EM.redetection([0.9] * 4, [0.9, 0.9, 0.9, 0.0], 0.5, edited=[True] * 4)
    b = EM.redetection([0.9], [0.0], 0.5, edited=[True])
    pooled = EM.pool_counts([a, b])
    assert pooled["n_detected"] == 5 and pooled["remaining"] == pytest.approx(3 / 5)
    assert pooled["remaining_among_edited"] == pytest.approx(3 / 5)


def test_max_cos_scores_hand_case():
    pooled = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    concepts = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    got = EM.max_cos_scores(pooled, concepts)
    assert got.tolist() == pytest.approx([1.0, 0.0, math.sqrt(0.5)])


# -- alignment to the clean caption ----------------------------------------------------------
def _layout_rows(word_of_rows, length=8):
    """word_of [N, L] and roles with BOS at 0, EOS right after the words, then padding."""
    word_of = torch.full((len(word_of_rows), length), -1, dtype=torch.long)
    roles = torch.full((len(word_of_rows), length), 3, dtype=torch.long)  # pad
    for n, row in enumerate(word_of_rows):
        roles[n, 0] = 0
        word_of[n, 1:1 + len(row)] = torch.tensor(row)
        roles[n, 1:1 + len(row)] = 1
        roles[n, 1 + len(row)] = ROLE_EOS
    return word_of, roles


def test_caption_alignment_shifts_words_after_the_phrase():
    # clean caption: words 0, 1 (two tokens), 2; the prompt has a 2-word phrase (words 1, 2) inserted at word 1
    clean_w, clean_r = _layout_rows([[0, 1, 1, 2]])
    out_w, out_r = _layout_rows([[0, 1, 2, 3, 3, 4]])
    n, c, o = EM.caption_alignment(clean_w, clean_r, out_w, out_r, [(1, 3)])
    pairs = sorted(zip(c.tolist(), o.tolist()))
    assert pairs == [(1, 1), (2, 4), (3, 5), (4, 6), (5, 7)]  # words 0, 1 (both tokens), 2, then EOS -> EOS
    assert n.tolist() == [0] * 5
    # a word missing from the output (deleted by a blacklist) has no pair
    del_w, del_r = _layout_rows([[0, 3, 3, 4]])
    _, c2, o2 = EM.caption_alignment(clean_w, clean_r, del_w, del_r, [(1, 3)])
    assert sorted(zip(c2.tolist(), o2.tolist())) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]


def test_aligned_distance_and_gap_closed_known_good_and_bad():
    torch.manual_seed(0)
    clean_w, clean_r = _layout_rows([[0, 1]])
    out_w, out_r = _layout_rows([[0, 1, 2]])  # phrase = word 1, inserted at 1
    clean = torch.randn(1, 8, 4)
    unsafe = torch.randn(1, 8, 4)
    align = EM.caption_alignment(clean_w, clean_r, out_w, out_r, [(1, 2)])
    base = EM.aligned_distance(clean, unsafe, align, 1)
    assert float(base) > 0.01
    fixed = unsafe.clone()
    fixed[0, [1, 3, 4]] = clean[0, [1, 2, 3]]  # caption words and EOS equal to the clean caption's rows
    assert float(EM.aligned_distance(clean, fixed, align, 1)) == pytest.approx(0.0, abs=1e-9)
    from embedding_sanitizer.evaluation import metrics as M
    assert M.gap_closed(base.numpy(), EM.aligned_distance(clean, fixed, align, 1).numpy())["aggregate"] == \
        pytest.approx(1.0)
    assert M.gap_closed(base.numpy(), base.numpy())["aggregate"] == 0.0


def test_relative_change_known_good_and_bad():
    rows = torch.randn(2, 5, 3)
    idx = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert EM.relative_change(rows, rows.clone(), *idx)["mean"] == 0.0
    scaled = rows * 1.1
    got = EM.relative_change(rows, scaled, *idx)
    assert got["mean"] == pytest.approx(0.1) and got["share_over_0.02"] == 1.0
    assert EM.relative_change(rows, rows, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                              torch.zeros(0, dtype=torch.long))["n_rows"] == 0


def test_unflagged_chunks_edited_known_good_and_bad():
    flagged = torch.zeros(1, 8, dtype=torch.bool)
    flagged[0, 1] = True  # chunk 0 (positions 0-3) has a flagged word, chunk 1 none
    only_flagged_chunk = torch.zeros(1, 8, dtype=torch.bool)
    only_flagged_chunk[0, :4] = True
    good = EM.unflagged_chunks_edited(flagged, only_flagged_chunk, 4)
    assert good["n_chunks"] == 2 and good["n_unflagged"] == 1 and good["edited_share"] == 0.0
    assert good["flagged_chunks_edited_share"] == 1.0
    spilled = only_flagged_chunk.clone()
    spilled[0, 6] = True  # a row of the unflagged chunk moved: the promise is broken
    assert EM.unflagged_chunks_edited(flagged, spilled, 4)["edited_share"] == 1.0


def test_edited_rows_only_counts_read_rows():
    a = torch.zeros(1, 3, 2)
    b = a.clone()
    b[0, 2] = 1.0
    assert EM.edited_rows(a, b, torch.tensor([[True, True, False]])).tolist() == [[False, False, False]]
    assert EM.edited_rows(a, b, torch.ones(1, 3, dtype=torch.bool)).tolist() == [[False, False, True]]


def test_caption_word_scores_known_good_and_bad():
    phrase = torch.tensor([[False, True, True, False, False]])
    caption = torch.tensor([[False, False, False, True, True]])
    cold = torch.tensor([[0.0, 0.9, 0.8, 0.01, 0.02]])
    good = EM.caption_word_scores(cold, caption, phrase)
    assert good["meets_mark"] and good["token_auroc"] == 1.0 and good["caption_mean"] == pytest.approx(0.015)
    spread = torch.tensor([[0.0, 0.9, 0.8, 0.92, 0.3]])  # "will 0.92": the heatmap spreads
    bad = EM.caption_word_scores(spread, caption, phrase)
    assert not bad["meets_mark"] and bad["token_auroc"] == 0.5 and bad["caption_share_over_0.5"] == 0.5


# -- the probe -------------------------------------------------------------------------------
def test_probe_separates_a_concept_and_fails_on_shuffled_labels():
    gen = torch.Generator().manual_seed(0)
    direction = torch.zeros(16)
    direction[0] = 1.0
    pos = torch.randn(200, 16, generator=gen) + 2.0 * direction
    neg = torch.randn(400, 16, generator=gen)
    probe = LinearProbe.fit("x", pos[:100], neg[:200])
    from embedding_sanitizer.evaluation import metrics as M
    held = M.auroc(probe.score(pos[100:]), probe.score(neg[200:]))
    assert held > 0.9
    probe.calibrate(neg[200:])
    assert M.rate_above(probe.score(neg[200:]), probe.threshold) <= 0.01
    mixed = torch.cat([pos[:100], neg[:200]])
    order = torch.randperm(300, generator=gen)
    shuffled = LinearProbe.fit("y", mixed[order[:100]], mixed[order[100:]])
    assert M.auroc(shuffled.score(pos[100:]), shuffled.score(neg[200:])) < 0.75


def test_train_half_is_stable_and_about_half():
    texts = [f"prompt number {i}" for i in range(2000)]
    share = sum(in_train_half(t) for t in texts) / len(texts)
    assert 0.45 < share < 0.55
    assert in_train_half("A  Nude  Woman") == in_train_half("a nude woman")  # split by normalised text


# -- gibberish -------------------------------------------------------------------------------
def test_gibberish_is_deterministic_and_keeps_the_prompt():
    prompts = ["a man riding a bike down the street", "two dogs playing in the park"]
    assert G.variant(prompts, "noise6", 0) == G.variant(prompts, "noise6", 0)
    assert G.variant(prompts, "noise6", 0) != G.variant(prompts, "noise6", 1)
    for name, count in G.NOISE_COUNTS.items():
        for original, noisy in zip(prompts, G.variant(prompts, name, 3)):
            words = noisy.split()
            assert len(words) == len(original.split()) + count
            it = iter(words)
            assert all(w in it for w in original.split())  # the prompt's words, in order
    many = " ".join(G.variant(["a cat sitting on a wooden table near a window"] * 200, "noise12", 0))
    assert G.START_TOKEN in many and any(e in many for e in G.EMOJI) and any(e in many for e in G.EMOTICONS)
    with pytest.raises(ValueError):
        G.variant(prompts, "nonsense", 0)


def test_decorated_prompts_carry_real_prompt_decorations():
    out = G.variant(["a red bus parked on a city street"] * 50, "decorated", 0)
    joined = " ".join(out)
    assert all("<lora:" in p and ", by " in p for p in out)
    assert re.search(r"\(\w+:\d\.\d\)", joined) and "((" in joined
    assert any(e in joined for e in G.EMBEDDING_NAMES) and any(t in joined for t in G.QUALITY_TAGS)


def test_insert_marked_spans_and_concept_words():
    words, spans, marked = insert_marked(["a cat on a mat"] * 20, ["a *nude* man", "*naked*"], 0)
    for w, (a, b), m in zip(words, spans, marked):
        assert " ".join(w[:a] + w[b:]) == "a cat on a mat"  # the caption is the exact counterpart
        assert [w[i] for i in m] in (["nude"], ["naked"]) and all(a <= i < b for i in m)
    assert insert_marked(["x y"], ["*a*"], 3) == insert_marked(["x y"], ["*a*"], 3)


# -- phrase list independence ----------------------------------------------------------------
def _corpus_strings() -> tuple[set[str], set[str]]:
    """(every corpus entry, multi-word unsafe/hard-negative entries and template strings)."""
    everything, multi = set(), set()
    for name in dir(W):
        value = getattr(W, name)
        if isinstance(value, list):
            for item in value:
                parts = item if isinstance(item, tuple) else (item,)
                for p in parts:
                    if isinstance(p, str):
                        everything.add(p.lower())
    for pack in W.BUILTIN.values():
        for term, anchor, _ in pack:
            multi |= {s.lower() for s in (term, anchor) if len(s.split()) > 1}
    multi |= {s.lower() for s in W.HARD_NEGATIVES if len(s.split()) > 1}
    source = open(corpus_generator.__file__, encoding="utf-8").read()
    templates = {s.strip(" ,").lower() for s in re.findall(r'"([^"\n{}]+)"', source)}
    multi |= {t for t in templates if len(t.split()) > 1 and re.fullmatch(r"[a-z ']+", t)}
    return everything, multi


def _overlaps(phrase: str, everything: set[str], multi: set[str]) -> list[str]:
    low = phrase.lower()
    hits = [e for e in everything if low == e or low in e]  # the phrase is (part of) a corpus entry
    return hits + [m for m in multi if f" {m} " in f" {low} "]  # or contains a multi-word entry / template


def test_inserted_phrases_are_not_the_calibration_corpus_own():
    everything, multi = _corpus_strings()
    assert "in the style of" in multi and "pool of blood" in multi  # the check reads the real corpus
    assert _overlaps("a man covered in blood", everything, multi)  # known-bad phrases are caught
    assert _overlaps("in the style of Van Gogh", everything, multi)
    assert _overlaps("naked body", everything, multi)
    for concept, phrases in phrase_sets().items():
        assert len(phrases) >= 5, concept
        for phrase in phrases:
            assert not _overlaps(plain(phrase), everything, multi), phrase
            assert any(split_marked(phrase)[1]), phrase  # every phrase marks its concept words


def test_phrase_sets_cover_the_issue_concepts():
    assert set(phrase_sets()) == {"nudity", "violence", "Van Gogh", "church", "garbage truck", "parachute", "tench"}
    for name in ("Van Gogh", "church", "garbage truck", "parachute", "tench"):
        assert all(name.lower() in plain(p).lower() for p in phrase_sets()[name])
    weapons = plain(" ".join(phrase_sets()["violence"]))
    assert all(w in weapons for w in ("rifle", "pistol", "ammunition", "gun", "blade"))


# -- the blacklist keeps track of the words it kept ---------------------------------------------
def test_blacklist_run_maps_reencoded_rows_to_original_words(hash_encoder):
    from embedding_sanitizer.evaluation.methods import Blacklist, Task, WordTokenizer, encode_texts

    tok = WordTokenizer(hash_encoder)
    enc = encode_texts(hash_encoder, tok, ["a naked man on a beach", "a red bus"])
    run = Blacklist(hash_encoder, tok).run(enc, Task("t", ("nudity",), r"\bnaked\b"))
    assert run.flagged[0].sum() == 1 and not run.flagged[1].any()
    kept = [w for w in run.word_of[0].tolist() if w >= 0]
    assert kept == [0, 2, 3, 4, 5]  # "naked" (word 1) deleted, the others keep their original index
    assert torch.equal(run.word_of[1], enc.word_of[1])


# -- a tiny end-to-end run ------------------------------------------------------------------------
def _write_extra_data(root):
    from embedding_sanitizer.evaluation.erasure_data import CE_FILES, I2P_FULL_FILE, T2V_LIST

    sexual = [f"nude woman posing number {i}" for i in range(16)]
    violent = [f"bloody corpse in the street number {i}" for i in range(16)]
    other = [f"a quiet landscape painting number {i}" for i in range(16)]
    rows = [(p, "sexual", 80) for p in sexual] + [(p, "violence", 0) for p in violent] + [(p, "hate", 0) for p in other]
    (root / I2P_FULL_FILE).write_text("prompt,categories,nudity_percentage\n" + "".join(
        f'"{p}",{c},{n}\n' for p, c, n in rows), encoding="utf-8")
    (root / CE_FILES["nudity"]).write_text("prompt\n" + "".join(f"{p}\n" for p in sexual[:6]), encoding="utf-8")
    (root / CE_FILES["violence"]).write_text("prompt\n" + "".join(f"{p}\n" for p in violent[:6]), encoding="utf-8")
    lists = json.loads((root / "concepts" / "concept_lists.json").read_text(encoding="utf-8"))
    lists.append({"name": T2V_LIST, "value": {"violence": ["Blood", "Gun Violence", "Torture"]}})
    (root / "concepts" / "concept_lists.json").write_text(json.dumps(lists), encoding="utf-8")
    coco = root / "benign" / "coco_10k.csv"
    extra = [f"a bench in a park number {i}" for i in range(30)]
    coco.write_text(coco.read_text(encoding="utf-8") + "".join(f"{100 + i},{p}\n" for i, p in enumerate(extra)),
                    encoding="utf-8")


def test_tiny_end_to_end_yardsticks(tmp_path, hash_encoder):
    import importlib.util
    from pathlib import Path

    from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
    from embedding_sanitizer.evaluation import datasets as D
    from embedding_sanitizer.evaluation.erasure_data import load_erasure_data
    from embedding_sanitizer.evaluation.report import markdown_report, readme_section
    from embedding_sanitizer.evaluation.runner import Evaluation

    spec = importlib.util.spec_from_file_location("tm", Path(__file__).with_name("test_metrics.py"))
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    tm.write_tiny_data(tmp_path / "data")
    _write_extra_data(tmp_path / "data")
    data = D.load_data(tmp_path / "data", limit=5)
    extra = load_erasure_data(tmp_path / "data", data, limit=5)
    assert not extra.missing and extra.violence_keywords == ["Blood", "Gun Violence", "Torture"]
    assert not set(extra.coco_pool) & set(data.coco + data.localisation_captions)
    torch.manual_seed(0)
    es = EmbeddingSanitizerNet(ESConfig(width=hash_encoder.width, hidden=32, layers=1, heads=2))
    torch.nn.init.normal_(es.delta_head.weight, std=0.05)
    evaluation = Evaluation(hash_encoder, data, es.eval(), {"file": "random"}, presets=("medium",),
                            bootstrap=0, progress=False, erasure=extra)
    results = evaluation.run_all()
    y = results["yardsticks"]
    sets = y["redetection"]["sets"]
    assert {"I2P nudity", "concept_erasure nudity", "concept_erasure violence"} <= set(sets)
    assert set(sets["I2P nudity"]["detectors"]) == {"max-cos", "probe"}
    for s in sets.values():
        for det, cell in s["rows"]["none"].items():
            if isinstance(cell, dict):  # no defence: whatever was detected stays detected
                assert cell["n_remaining"] == cell["n_detected"]
        assert "maxcos" not in s["rows"]  # detection-only methods have no sanitized embedding
    assert set(y["redetection"]["probes"]) == {"nudity", "violence"}
    for name in ("I2P nudity", "concept_erasure nudity", "concept_erasure violence"):
        for det, info in sets[name]["detectors"].items():  # the style-matched floor: other-I2P prompts flagged
            floor = info["style_floor"]
            assert floor["n"] > 0 and 0.0 <= floor["flagged"] <= 1.0, (name, det, floor)
    gap = y["gap"]
    for concept, g in gap.items():  # deleting the concept words closes part of the gap, never more than all of it
        deletion = g["oracle_gap_pooled"]["aggregate"]
        assert g["oracle_gap_pooled"]["n"] == 0 or -1.0 < deletion <= 1.0, (concept, g["oracle_gap_pooled"])
    assert {"nudity", "violence"} <= set(gap)
    none = gap["nudity"]["rows"]["none"]
    assert none["gap_pooled"]["aggregate"] == 0.0 and none["caption_rows_change"]["mean"] == 0.0
    assert none["unflagged_chunks_edited"]["edited_share"] == 0.0
    assert none["two_chunk_unflagged_edited"]["edited_share"] == 0.0
    assert "two_chunk_unflagged_edited" in gap["nudity"]["rows"]["es+fast"]
    assert "heatmap" in gap["nudity"]["rows"]["maxcos"] and "gap_pooled" not in gap["nudity"]["rows"]["maxcos"]
    gib = y["gibberish"]["sources"]
    assert set(gib) == {"COCO", "Parti"} and set(gib["COCO"]) == {"clean", "noise6", "noise12", "decorated"}
    assert gib["COCO"]["noise6"]["rows"]["none"]["edited"] == 0.0
    results["meta"] = {"date": "2000-01-01", "command": "python -m embedding_sanitizer evaluate", "encoder": "hash"}
    md = markdown_report(results)
    assert "## Erasure yardsticks (issue 12)" in md and "### Benign-gibberish control" in md
    assert "reference: only the concept words deleted" in md and "Style-matched floor" in md
    assert "I2P nudity re-detected" in readme_section(results)


def _results_with(remaining: float, gap: float, gib: float) -> dict:
    red = {"remaining": remaining, "n_detected": 10}
    gap_cell = {"gap_pooled": {"aggregate": gap}, "caption_rows_change": {"mean": 0.01},
                "unflagged_chunks_edited": {"edited_share": 0.0}, "two_chunk_unflagged_edited": {"edited_share": 0.0},
                "heatmap": {"caption_mean": 0.01, "token_auroc": 0.99}}
    sets = {name: {"rows": {"es+fast": {"max-cos": red, "probe": red}}}
            for name in ("I2P nudity", "concept_erasure violence", "concept church")}
    variants = {v: {"rows": {"es+fast": {"prompt_flagged": gib, "edited": gib}}} for v in ("noise6", "noise12",
                                                                                          "decorated")}
    return {"methods": [{"key": "es+fast", "label": "ES then projection"}],
            "yardsticks": {"redetection": {"sets": sets, "at_preset_high": {"rows": {"es+fast": {"max-cos": red,
                                                                                                  "probe": red}}}},
                           "gap": {c: {"rows": {"es+fast": gap_cell}} for c in ("nudity", "violence", "church")},
                           "gibberish": {"sources": {"COCO": variants, "Parti": variants}}},
            "preservation": {"coco": {"es+fast": {"medium": {"untouched": 0.99, "token_cos": 0.999}}}},
            "detection": {"nudity": {"rows": {"es+fast": {"auroc": 0.995}}}}}


def test_issue12_marks_pass_and_fail():
    from embedding_sanitizer.evaluation.report_erasure import issue12_marks, marks_rows

    good = issue12_marks(_results_with(0.01, 0.9, 0.0))
    assert good and {m["status"] for m in good} == {"pass"}
    bad = {m["target"]: m["status"] for m in issue12_marks(_results_with(0.5, 0.2, 0.3))}
    assert bad["re-detected I2P nudity, max-cos"] == "fail" and bad["gap closed, inserted nudity (pooled)"] == "fail"
    assert bad["gibberish flagged or edited (worst of 6/12 junk, decorated; COCO, Parti)"] == "fail"
    assert bad["COCO untouched"] == "pass"
    results = _results_with(0.5, 0.2, 0.3)
    results["yardsticks"]["gap"]["nudity"]["oracle_gap_pooled"] = {"aggregate": 0.4}
    results["yardsticks"]["redetection"]["sets"]["I2P nudity"]["detectors"] = {
        "probe": {"style_floor": {"n": 20, "flagged": 0.35}}}
    ref = {m["target"]: m["reference"] for m in issue12_marks(results)}
    assert ref["gap closed, inserted nudity (pooled)"] == 0.4 and ref["re-detected I2P nudity, probe"] == 0.35
    assert ref["re-detected I2P nudity, max-cos"] is None and ref["COCO untouched"] is None
    row = marks_rows(_results_with(0.01, 0.9, 0.0))[0]
    assert row[0] == "ES then projection" and row[1] == "0.010 / 0.010"
