"""The whole-prompt detector: pooling, fitting, the confirmation gate in apply_es, storage."""
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.es_model import CONFIRM_SCORE, PROMPT_BUFFERS, ESConfig, EmbeddingSanitizerNet, apply_es
from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, SD1_CLIP_L, T5
from embedding_sanitizer.prompt_detector import (chunk_vectors, fit_prompt_detector, nuisance_directions,
                                                 pooling_for, prompt_probability)
from embedding_sanitizer.train import auroc
from embedding_sanitizer.weights_io import load_es, save_es

D = 16


def roles_of(n_words: int, length: int = 8) -> torch.Tensor:
    r = [ROLE_BOS] + [ROLE_WORD] * n_words + [ROLE_EOS] + [ROLE_PAD] * (length - n_words - 2)
    return torch.tensor([r])


def test_mean_pooling_ignores_padding_and_is_unit():
    rows = torch.randn(1, 8, D)
    roles = roles_of(3)
    v = chunk_vectors(rows, roles, "mean")
    expected = torch.nn.functional.normalize(rows[0, :5].mean(0), dim=-1)
    assert torch.allclose(v[0], expected, atol=1e-6)
    noisy = rows.clone()
    noisy[0, 5:] += 100.0
    assert torch.allclose(chunk_vectors(noisy, roles, "mean"), v)
    assert abs(float(v.norm()) - 1.0) < 1e-6


def test_eos_pooling_reads_the_first_eos_row():
    rows = torch.randn(2, 8, D)
    roles = torch.cat([roles_of(3), roles_of(5)])
    v = chunk_vectors(rows, roles, "eos")
    assert torch.allclose(v[0], torch.nn.functional.normalize(rows[0, 4], dim=-1))
    assert torch.allclose(v[1], torch.nn.functional.normalize(rows[1, 6], dim=-1))
    with pytest.raises(ValueError, match="pooling"):
        chunk_vectors(rows, roles, "max")


def test_pooling_follows_the_layout():
    assert pooling_for(SD1_CLIP_L) == "eos" and pooling_for(T5) == "mean"


def test_fit_separates_two_clusters_and_is_calibrated():
    g = torch.Generator().manual_seed(0)
    centre = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    benign = torch.nn.functional.normalize(torch.randn(400, D, generator=g), dim=-1)
    unsafe = torch.nn.functional.normalize(torch.randn(300, D, generator=g) * 0.5 + 2 * centre, dim=-1)
    fit = fit_prompt_detector(unsafe, benign)
    pu = prompt_probability(unsafe, fit["direction"], fit["slope"], fit["bias"])
    pb = prompt_probability(benign, fit["direction"], fit["slope"], fit["bias"])
    assert auroc(pu, pb) > 0.99
    assert float(pu.mean()) > 0.8 and float(pb.mean()) < 0.2
    assert bool(((pu >= 0) & (pu <= 1)).all())
    assert fit["slope"] > 0 and math.isfinite(fit["bias"])
    with pytest.raises(ValueError):
        fit_prompt_detector(unsafe[:0], benign)


def test_nuisance_direction_is_projected_out_and_junk_no_longer_reads_unsafe():
    """Unsafe prompts in the corpus carry more junk than benign ones (a shift along ``junk``), so the plain
    centroid direction partly means "junk"; the benign prompts with and without junk give that axis, and
    with it projected out a junk-laden benign prompt scores as its clean self."""
    g = torch.Generator().manual_seed(1)
    concept = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    junk = torch.randn(D, generator=g)
    junk = torch.nn.functional.normalize(junk - (junk @ concept) * concept, dim=0)
    benign = torch.randn(400, D, generator=g) * 0.3
    unsafe = torch.randn(300, D, generator=g) * 0.3 + 1.5 * concept + 1.0 * junk
    clean = torch.randn(200, D, generator=g) * 0.3
    noisy = clean + 1.2 * junk + torch.randn(200, D, generator=g) * 0.05
    axis = nuisance_directions(clean, noisy, 1)
    assert axis.shape == (1, D) and abs(float(axis[0] @ junk)) > 0.95
    plain = fit_prompt_detector(unsafe, benign)
    fixed = fit_prompt_detector(unsafe, benign, nuisance=axis)
    assert plain["nuisance_removed"] == 0.0 and 0.1 < fixed["nuisance_removed"] < 1.0
    assert abs(float(fixed["direction"] @ axis[0])) < 1e-4 * float(fixed["direction"].norm())

    def prob(fit, x):
        return prompt_probability(x, fit["direction"], fit["slope"], fit["bias"])

    assert float((prob(plain, noisy) - prob(plain, clean)).mean()) > 0.2  # junk alone raised the score
    assert float((prob(fixed, noisy) - prob(fixed, clean)).abs().mean()) < 0.01  # only the small random part
    assert auroc(prob(fixed, unsafe), prob(fixed, benign)) > 0.99  # the concept still separates
    with pytest.raises(ValueError, match="nuisance pairs"):
        nuisance_directions(clean, noisy[:10])


def test_junk_nuisance_uses_the_corpus_junk_and_respects_the_time_budget(hash_encoder):
    from embedding_sanitizer.train import junk_nuisance

    axis, pairs = junk_nuisance(hash_encoder, ["nudity"], 0, "mean", n_pairs=40, batch_size=16)
    assert pairs == 40 and axis.shape == (1, hash_encoder.width)
    assert abs(float(axis.norm()) - 1.0) < 1e-5
    axis2, pairs2 = junk_nuisance(hash_encoder, ["nudity"], 0, "mean", n_pairs=40, batch_size=16,
                                  out_of_time=lambda: True)
    assert pairs2 == 16  # the first batch is always encoded, then the budget stops it
    none, zero = junk_nuisance(hash_encoder, ["nudity"], 0, "mean", n_pairs=0)
    assert none is None and zero == 0


def gated_model(word_score: float, prompt_bias: float) -> EmbeddingSanitizerNet:
    """Every word scores ``word_score``; the prompt probability is sigmoid(prompt_bias); corrections are +1."""
    model = EmbeddingSanitizerNet(ESConfig(width=D, hidden=16, layers=1, heads=2, max_length=8, dropout=0.0))
    with torch.no_grad():
        model.score_head[-1].weight.zero_()
        model.score_head[-1].bias.fill_(math.log(word_score / (1 - word_score)))
        model.delta_head.bias.fill_(1.0)
        model.prompt_direction.fill_(1.0)
        model.prompt_platt.copy_(torch.tensor([0.0, prompt_bias]))
    model.config.prompt_pooling = "mean"
    return model.eval()


@pytest.mark.parametrize("score,bias,intensity,edited", [
    (0.3, -10.0, 1.0, False),  # uncertain word, prompt detector says benign: left alone
    (0.3, 10.0, 1.0, True),  # uncertain word confirmed by the whole prompt
    (0.9, -10.0, 1.0, True),  # confident word: edited without confirmation
    (0.3, -10.0, 2.0, True),  # intensity 2 x 0.3 reaches the confirmation score
])
def test_confirmation_gate(score, bias, intensity, edited):
    model = gated_model(score, bias)
    rows = torch.randn(1, 8, D)
    roles = roles_of(3)
    out = apply_es(model, rows, roles, intensity, 8)
    assert bool((out.weights > 0).any()) is edited
    assert torch.equal(out.rows[0, 0], rows[0, 0])  # BOS never changes
    assert out.prompt is not None and out.prompt.shape == (1, 1)
    assert out.unconfirmed == (0 if edited else 1)
    assert (intensity * score >= CONFIRM_SCORE) or edited == (bias > 0)


def test_intensity_zero_is_identity_with_a_detector():
    model = gated_model(0.9, 10.0)
    rows = torch.randn(2, 8, D)
    roles = torch.cat([roles_of(3), roles_of(6)])
    out = apply_es(model, rows, roles, 0.0, 8)
    assert torch.equal(out.rows, rows) and not bool((out.weights > 0).any())


def test_without_a_detector_every_flag_edits():
    model = gated_model(0.3, -10.0)
    model.config.prompt_pooling = ""
    out = apply_es(model, torch.randn(1, 8, D), roles_of(3), 1.0, 8)
    assert out.prompt is None and bool((out.weights > 0).any())


def test_detector_round_trips_and_old_files_load_without_it(tmp_path):
    model = gated_model(0.3, 2.0)
    path = save_es(tmp_path / "with.safetensors", model, encoder_name="tiny", encoder_fingerprint="",
                   layout={}, concepts=["nudity"])
    loaded, _ = load_es(path)
    assert loaded.has_prompt_detector and loaded.config.prompt_pooling == "mean"
    assert torch.equal(loaded.prompt_platt, model.prompt_platt)
    # a file written before the detector existed: same tensors minus the prompt buffers
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys() if k not in PROMPT_BUFFERS}
    meta["config"] = meta["config"].replace('"prompt_pooling": "mean"', '"prompt_pooling": ""')
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata=meta)
    legacy, _ = load_es(old)
    assert not legacy.has_prompt_detector
    # a file missing a real weight is refused with a clear message
    broken = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in state.items() if k != "delta_head.bias"}, str(broken), metadata=meta)
    with pytest.raises(ValueError, match="calibrate it again"):
        load_es(broken)


def test_sanitizer_reports_the_prompt_score(hash_encoder):
    model = EmbeddingSanitizerNet(ESConfig(width=hash_encoder.width, hidden=16, layers=1, heads=2))
    with torch.no_grad():
        model.prompt_direction.normal_()
        model.prompt_platt.copy_(torch.tensor([1.0, 0.0]))
    model.config.prompt_pooling = "mean"
    batch, enc = hash_encoder.encode_texts(["a cat on a chair", " ".join(["forest"] * 90)])
    result = Sanitizer(hash_encoder, model.eval(), {}).sanitize(enc.tokens, batch.ids, hash_encoder.layout,
                                                               Settings(mode="es"))
    assert result.prompt_scores is not None and result.prompt_scores.shape == (2,)
    assert bool(((result.prompt_scores >= 0) & (result.prompt_scores <= 1)).all())
    for prompt, value in zip(result.report["prompts"], result.prompt_scores.tolist()):
        assert prompt["prompt_score"] == round(value, 4)
    # projection only: no ES, no prompt score
    plain = Sanitizer(hash_encoder, model.eval(), {}).sanitize(enc.tokens, batch.ids, hash_encoder.layout,
                                                              Settings(mode="off"))
    assert plain.prompt_scores is None


def test_unconfirmed_chunks_are_noted_on_their_own_prompt():
    """The report's per-prompt notes name the prompt whose chunk the gate left unedited; the batch note sums them."""
    from embedding_sanitizer.layout import ChunkLayout

    layout = ChunkLayout("tiny-8", 8, 1, 2, 0, 3)
    model = gated_model(0.3, 0.0)
    with torch.no_grad():
        model.prompt_platt.copy_(torch.tensor([10.0, 0.0]))  # probability follows the sign of the rows' mean
    ids = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0, 1, 5, 2, 0, 0, 0, 0, 0],
                        [1, 5, 6, 7, 2, 0, 0, 0, 1, 5, 2, 0, 0, 0, 0, 0]])
    rows = torch.ones(2, 16, D)
    rows[1, 8:] = -1.0  # the second prompt's second chunk reads as benign: its uncertain word stays unedited
    result = Sanitizer(None, model).sanitize(rows, ids, layout, Settings(mode="es"))
    prompts = result.report["prompts"]
    assert prompts[0]["notes"] == []
    assert len(prompts[1]["notes"]) == 1 and prompts[1]["notes"][0].startswith("1 chunk(s) with uncertain")
    assert result.report["notes"] == prompts[1]["notes"]
    assert bool((result.weights[1, :8] > 0).any()) and not bool((result.weights[1, 8:] > 0).any())
