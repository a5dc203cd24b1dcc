"""Prompt weight syntax read as A1111 (parse_prompt_attention semantics) and ComfyUI (token_weights) read it.

The expectations are written by hand from the hosts' documented behaviour (A1111's docstring examples and
its parser's rules; ComfyUI's bracket rules), not produced by running either parser.
"""
import pytest

from embedding_sanitizer.prompt_syntax import ROUND, SQUARE, PromptSyntaxError, parse_prompt


def spans(prompt, syntax="a1111"):
    return [(s.text, pytest.approx(s.weight)) for s in parse_prompt(prompt, syntax).spans]


@pytest.mark.parametrize("prompt, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),  # left open: applies to the rest
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),  # equal weights merge
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.3 * 1.1 * 1.1), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.1 ** 4), (".", 1.1)]),
    ("(nude:1.4)", [("nude", 1.4)]),
    ("((word))", [("word", 1.21)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.21)]),
    ("((a:1.2))", [("a", 1.32)]),  # an explicit weight multiplies with the outer brackets
    ("(a : 1.5 ) b", [("a ", 1.5), (" b", 1.0)]),  # spaces around the number
    ("(a:-0.5)", [("a", -0.5)]),
    ("smile :)", [("smile :)", 1.0)]),  # ':' without a number, ')' without '(' are text
    ("x:1.2) y", [("x:1.2) y", 1.0)]),  # a weight with no '(' open is text
    ("a ] b [c", [("a ] b ", 1.0), ("c", 1 / 1.1)]),
    ("back\\\\slash", [("back\\slash", 1.0)]),
    ("lone \\ backslash", [("lone  backslash", 1.0)]),  # any other backslash is dropped
    ("(a:b)", [("a:b", 1.1)]),  # a non-number after ':' is text, the bracket still counts
    ("", [("", 1.0)]),
])
def test_a1111_attention(prompt, expected):
    assert spans(prompt) == expected


def test_a1111_plain_text_and_weights_of_the_issue_prompt():
    parsed = parse_prompt("a (nude:1.4) woman, ((blood)), [painting]")
    assert parsed.text == "a nude woman, blood, painting"
    assert parsed.weighted
    words = ["a", "nude", "woman", ",", "blood", ",", "painting"]
    assert parsed.word_weights(words) == pytest.approx([1.0, 1.4, 1.0, 1.0, 1.21, 1.0, 1 / 1.1])


def test_a1111_extra_networks_are_taken_out():
    parsed = parse_prompt("a cat <lora:detail_tweaker:0.8> on a mat <hypernet:x:1>")
    assert parsed.text == "a cat  on a mat "
    assert parsed.extra_networks == ["<lora:detail_tweaker:0.8>", "<hypernet:x:1>"]
    assert any("extra networks" in n for n in parsed.notes)
    # ComfyUI has no extra-network syntax: the text stays
    assert parse_prompt("a cat <lora:x:0.8>", "comfyui").text == "a cat <lora:x:0.8>"


def test_a1111_break():
    parsed = parse_prompt("a cat BREAK a dog")
    assert parsed.text == "a cat a dog" and parsed.breaks == [5]
    assert all(s.weight == 1.0 for s in parsed.spans)
    assert any("BREAK" in n for n in parsed.notes)
    assert parse_prompt("BREAKFAST").text == "BREAKFAST" and not parse_prompt("BREAKFAST").breaks
    # inside brackets BREAK is not a chunk break: the word, with the brackets' weight on A1111's -1
    inside = parse_prompt("(a BREAK b)")
    assert not inside.breaks
    assert [(s.text.strip(), round(s.weight, 4)) for s in inside.spans] == [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]


def test_a1111_bad_weight_is_an_error():
    with pytest.raises(PromptSyntaxError, match="not a number"):
        parse_prompt("(a:1.2.3)")
    with pytest.raises(ValueError):  # PromptSyntaxError is a ValueError: the CLI's one-line error
        parse_prompt("(a:.)")


def test_a1111_schedules_are_noted_not_expanded():
    parsed = parse_prompt("a [cat:dog:10] and [red|blue]")
    assert any("schedule" in n for n in parsed.notes)


@pytest.mark.parametrize("prompt, expected", [
    ("a (nude:1.4) woman", [("a ", 1.0), ("nude", 1.4), (" woman", 1.0)]),
    ("((word))", [("word", 1.21)]),
    ("((a:1.2))", [("a", 1.2)]),  # ComfyUI: the explicit weight replaces the outer ones
    ("(a:b)", [("a:b", 1.1)]),
    ("[word]", [("[word]", 1.0)]),  # no square-bracket syntax
    ("\\(x\\) y", [("(x) y", 1.0)]),
    ("(open", [("(open", 1.0)]),  # an unclosed bracket is text
    ("a BREAK b", [("a BREAK b", 1.0)]),
    ("((big:1.5) cat)", [("big", 1.5), (" cat", 1.1)]),  # one bracket around " cat"
])
def test_comfyui_weights(prompt, expected):
    assert spans(prompt, "comfyui") == expected


def test_none_and_unknown_syntax():
    assert parse_prompt("(nude:1.4)", "none").text == "(nude:1.4)"
    with pytest.raises(ValueError, match="unknown prompt syntax"):
        parse_prompt("x", "invokeai")


def test_word_weights_match_uncased_accentless_words():
    parsed = parse_prompt("a (Café:1.3) scene")
    assert parsed.word_weights(["a", "cafe", "scene"]) == pytest.approx([1.0, 1.3, 1.0])
    assert parsed.word_weights(["a", "zzz", "scene"]) == pytest.approx([1.0, 1.0, 1.0])  # not found: where it stands
    split = parse_prompt("(un)safe")
    assert split.word_weights(["unsafe"]) == pytest.approx([ROUND])  # over two stretches: the farthest from 1
    assert SQUARE == pytest.approx(1 / 1.1)


def test_annotate_sets_each_word_record_emphasis():
    from embedding_sanitizer.heatmap import word_records

    parsed = parse_prompt("a (naked:1.4) woman")
    records = parsed.annotate(word_records(["a</w>", "nak", "ed</w>", "woman</w>"], [0.0, 0.5, 0.9, 0.1]))
    assert [(r.word, r.emphasis) for r in records] == [("a", 1.0), ("naked", 1.4), ("woman", 1.0)]
