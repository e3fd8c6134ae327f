"""The new modules' initialisation: seeded, the backbone untouched, the same tensors with or without a backbone."""

from __future__ import annotations

import copy

import torch
from llama_fixtures import tiny_llama  # noqa: F401 (fixture)

from hat.convert.in_memory import hat_from_llama
from hat.convert.init import SAMPLE_TEXT, build_new_modules, embedding_rms_of, init_new_modules
from hat.model.parts import disk_name, is_backbone


def test_init_new_modules_is_seeded_and_leaves_backbone(tiny_llama):  # noqa: F811
    a, b, c = (hat_from_llama(tiny_llama, seed=s) for s in (0, 0, 1))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    for name in sa:
        if name.startswith("model.backbone."):
            assert torch.equal(sa[name], sc[name])
        elif "norm" in name:
            assert torch.equal(sa[name], torch.ones_like(sa[name]))
        else:
            assert torch.equal(sa[name], sb[name]) and not torch.equal(sa[name], sc[name]), name
    std = a.config.backbone_config.initializer_range
    assert abs(sa["model.encoder.embedding_layer.weight"].std().item() - std) < 0.2 * std
    assert abs(sa["model.encoder_connector.latent_query"].std().item() - 1.0) < 0.3
    init_new_modules(c, seed=0, embedding_rms=embedding_rms_of(tiny_llama.model.embed_tokens.weight))
    assert all(torch.equal(v, sa[k]) for k, v in c.state_dict().items())


def test_build_new_modules_without_backbone(tiny_llama):  # noqa: F811
    """The streaming conversion's new tensors (meta-device backbone) are the in-memory conversion's, per dtype."""
    for dtype in (torch.float32, torch.bfloat16):
        model = hat_from_llama(copy.deepcopy(tiny_llama).to(dtype), seed=5)
        reference = {disk_name(k): v for k, v in model.state_dict().items() if not is_backbone(k)}
        rms = embedding_rms_of(tiny_llama.model.embed_tokens.weight, dtype)  # the streaming path's: a float32 source
        built = build_new_modules(model.config, dtype, seed=5, embedding_rms=rms)
        assert set(built) == set(reference)
        assert all(v.dtype == dtype and torch.equal(v, reference[k]) for k, v in built.items())


def test_word_embeddings_start_at_the_size_of_the_sources_token_embeddings(tiny_llama):  # noqa: F811
    """The rescale after a dummy forward: the pooled sample words have the RMS of the source's embedding table,
    where Llama's 0.02 init alone leaves them far smaller."""
    target = embedding_rms_of(tiny_llama.model.embed_tokens.weight)
    assert abs(target - float(tiny_llama.model.embed_tokens.weight.pow(2).mean().sqrt())) < 1e-6

    def pooled_rms(model) -> float:
        hat, ids = model.model, torch.tensor([list(SAMPLE_TEXT.encode())])
        layout = hat.layout(ids, torch.ones_like(ids))
        with torch.no_grad():
            states = hat.encode(ids, layout.byte_mask(model.config.encoder_config.sliding_window, torch.float32),
                                layout.byte_positions)
            words = hat.pool(states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                             layout.word_positions)  # what the backbone's first block reads
        return float(words.pow(2).mean().sqrt())

    model = hat_from_llama(tiny_llama, seed=2)
    assert abs(pooled_rms(model) / target - 1) < 1e-4
    init_new_modules(model, seed=2)  # without the source's RMS: Llama's 0.02 init alone
    assert pooled_rms(model) < 0.5 * target
