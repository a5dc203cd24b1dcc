"""ES runs its network over the live positions only (cheaper at batch 1); the result must be what the whole
chunk gives: the same scores and flags, and the same rows, padding rows of edited chunks included."""
import torch

from embedding_sanitizer.es_model import EmbeddingSanitizerNet, ESConfig, apply_es
from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, SD1_CLIP_L, token_roles

L, D = 77, 24


def reference(model, rows, roles, intensity):
    """apply_es's rule with the network run over every position of every chunk (the definition)."""
    with torch.inference_mode():
        logits, delta = model(rows, roles)
    out = apply_es(model, rows, roles, intensity, L)
    expected = rows + out.weights.unsqueeze(-1) * delta
    return out, expected, torch.sigmoid(logits)


def make(seed: int, lengths):
    torch.manual_seed(seed)
    model = EmbeddingSanitizerNet(ESConfig(width=D, hidden=16, heads=2)).eval()
    with torch.no_grad():  # a delta head that is not zero, and scores that flag some words
        model.delta_head.weight.normal_(0, 0.3)
        model.delta_head.bias.normal_(0, 0.3)
        model.score_head[-1].bias.fill_(0.5)
    ids = torch.full((len(lengths), L), SD1_CLIP_L.pad_id)
    ids[:, 0] = SD1_CLIP_L.bos_id
    for n, k in enumerate(lengths):
        ids[n, 1:1 + k] = torch.randint(1, 40000, (k,))
        ids[n, 1 + k] = SD1_CLIP_L.eos_id
    roles = token_roles(ids, SD1_CLIP_L)
    return model, torch.randn(len(lengths), L, D), roles


def test_live_positions_give_the_whole_chunk_result():
    for seed in range(4):
        model, rows, roles = make(seed, [3, 9, 20, 75])
        for intensity in (0.0, 0.6, 1.0, 2.5):
            out, expected, probs = reference(model, rows, roles, intensity)
            assert torch.allclose(out.rows, expected, atol=1e-5)
            word = roles == ROLE_WORD
            assert torch.allclose(out.scores[word], probs[word], atol=1e-6)
            assert bool((out.scores[~word] == 0).all())
            unedited = out.weights == 0
            assert torch.equal(out.rows[unedited], rows[unedited])  # bit for bit
            if intensity > 0:
                assert bool((out.weights[roles == ROLE_PAD] > 0).any()), "padding rows of edited chunks move"
            assert bool((out.weights[roles == ROLE_BOS] == 0).all())


def test_a_chunk_without_padding_and_a_batch_of_unedited_chunks():
    model, rows, roles = make(7, [75, 2])
    out, expected, _ = reference(model, rows, roles, 1.0)
    assert torch.allclose(out.rows, expected, atol=1e-5)
    assert roles[0, -1] == ROLE_EOS or roles[0, -1] == ROLE_PAD
    with torch.no_grad():
        model.score_head[-1].bias.fill_(-20.0)  # nothing scores: nothing is edited, the rows come back as given
    out = apply_es(model, rows, roles, 1.0, L)
    assert torch.equal(out.rows, rows) and bool((out.weights == 0).all())


def test_the_bench_quiet_copy_edits_nothing_and_leaves_the_model_alone():
    from embedding_sanitizer.evaluation.bench import unedited_copy

    model, rows, roles = make(3, [4, 30])
    model.config.prompt_pooling = "eos"
    with torch.no_grad():
        model.prompt_direction.normal_()
        model.prompt_platt.copy_(torch.tensor([1.0, 0.0]))
    assert bool((apply_es(model, rows, roles, 1.0, L).weights > 0).any())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet = apply_es(unedited_copy(model), rows, roles, 2.5, L)
    assert bool((quiet.weights == 0).all()) and torch.equal(quiet.rows, rows)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_eval_forward_matches_the_transformer_modules():
    """In eval mode the network runs its layers written out (``_encoder_layers_eval``); that must be what
    ``nn.TransformerEncoder`` itself computes (training mode uses the modules), for chunks of every length
    and for live-only prefixes, and an all-padding row stays finite."""
    for seed in range(3):
        model, rows, roles = make(seed, [1, 9, 20, 75])
        with torch.inference_mode():
            for length in (L, 24, 5):
                x = model.input_proj(model.input_norm(rows[:, :length]))
                x = x + model.position[:length] + model.role(roles[:, :length])
                padding = roles[:, :length] == ROLE_PAD
                ours = model(rows[:, :length], roles[:, :length])
                torch.manual_seed(0)
                hidden = model.output_norm(model.encoder(x, src_key_padding_mask=padding))
                logits = model.score_head(hidden).squeeze(-1)
                delta = model.delta_head(hidden) * model.row_scale
                live = ~padding if length < L else torch.ones_like(padding)
                assert torch.allclose(ours[0][live], logits[live], atol=1e-5)
                assert torch.allclose(ours[1][live], delta[live], atol=1e-5)
            empty = torch.full((1, L), ROLE_PAD)
            logits, delta = model(rows[:1], empty)
            assert torch.isfinite(logits).all() and torch.isfinite(delta).all()


def test_training_mode_uses_the_modules_and_keeps_gradients():
    model, rows, roles = make(0, [4, 30])
    model.train()
    logits, delta = model(rows, roles)
    (logits.sum() + delta.sum()).backward()
    assert model.encoder.layers[0].self_attn.in_proj_weight.grad is not None
