import torch

from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_WORD
from embedding_sanitizer.pooled import PooledCache, build_pooled_subspace, prompt_weights, sanitize_pooled


def fake_host_pooled(texts):
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(64, 16, generator=gen)
    return torch.stack([table[sum(map(ord, t)) % 64] + (3.0 if "nud" in t else 0.0) for t in texts])


def test_concept_direction_removed_and_untouched_rows_exact():
    sub = build_pooled_subspace(fake_host_pooled, ("nudity", "nude person"))
    pooled = torch.randn(3, 16, dtype=torch.float16)
    out = sanitize_pooled(pooled, torch.tensor([0.0, 1.0, 0.5]), sub)
    assert torch.equal(out[0], pooled[0]) and out.dtype == torch.float16
    inside = ((out[1].float() - sub.center) @ sub.basis).norm()
    assert float(inside) < 1e-2
    assert float(((out[2].float() - sub.center) @ sub.basis).norm()) < float(
        ((pooled[2].float() - sub.center) @ sub.basis).norm())


def test_prompt_weight_is_max_over_words():
    roles = torch.tensor([[ROLE_BOS, ROLE_WORD, ROLE_WORD, ROLE_EOS]])
    weights = torch.tensor([[0.0, 0.2, 0.7, 0.9]])
    assert prompt_weights(weights, roles).tolist() == [0.699999988079071]


def test_cache_builds_once():
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return fake_host_pooled(texts)

    cache = PooledCache()
    a = cache.get("enc", counting, ("nudity",))
    b = cache.get("enc", counting, ("Nudity",))
    assert a is b and len(calls) == 2


def test_weight_above_one_is_full_removal_not_a_flip():
    sub = build_pooled_subspace(fake_host_pooled, ("nudity",))
    pooled = torch.randn(1, 16)
    full = sanitize_pooled(pooled, torch.tensor([1.0]), sub)
    assert torch.equal(sanitize_pooled(pooled, torch.tensor([2.5]), sub), full)
