"""hat.model.decoder: the shift by one word, and the word conditioning (cross-attention with one key)."""

import torch
import torch.nn.functional as F

from hat import HATConfig, HATModel


def tiny():
    torch.manual_seed(0)
    return HATModel(HATConfig.tiny()).eval()


def test_predict_words_shifts_right_by_one_word():
    model = tiny()
    word_states = torch.randn(2, 4, model.config.backbone_config.hidden_size)
    preds = model.predict_words(word_states)
    torch.testing.assert_close(preds[:, 1:], word_states[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(preds[:, 0], model.decoder_connector.first_word_embedding[0].expand(2, -1))


def test_word_conditioning_is_cross_attention_to_one_key():
    """With one key the softmax is 1: the term is `o_proj(v_proj(kv_norm(pred)))`, whatever the query."""
    model = tiny()
    block = model.decoder.decoder_layers[0]
    attn = block.cross_attention
    preds = torch.randn(2, 3, model.config.backbone_config.hidden_size)
    terms = model.word_conditioning(preds)
    assert len(terms) == len(model.decoder.decoder_layers) and terms[0].shape == (2, 3, attn.o_proj.out_features)
    for query in (torch.randn(2 * 3, 1, attn.q_proj.in_features), torch.zeros(2 * 3, 1, attn.q_proj.in_features)):
        positions = torch.zeros(2 * 3, 1, dtype=torch.long)
        q = attn.project_query(query, positions).transpose(1, 2)  # (n, H, 1, hd)
        k, v = attn.project_key_value(block.kv_norm(preds.reshape(6, 1, -1)), positions)
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2),
                                             enable_gqa=attn.num_heads != attn.num_kv_heads)
        full = attn.o_proj(out.transpose(1, 2).reshape(6, -1)).reshape(2, 3, -1)
        torch.testing.assert_close(terms[0], full, rtol=1e-5, atol=1e-6)


def test_one_word_per_row_broadcasts_like_a_gather():
    """`byte_word` None (one word per row, as cached decoding passes it) equals gathering word 0 for every byte."""
    model = tiny()
    E = model.config.decoder_config.hidden_size
    byte_states = torch.randn(2, 5, E)
    terms = model.word_conditioning(torch.randn(2, 1, model.config.backbone_config.hidden_size))
    positions = torch.arange(5).expand(2, 5)
    zeros = torch.zeros(2, 5, dtype=torch.long)
    torch.testing.assert_close(model.decode(byte_states, terms, None, None, positions),
                               model.decode(byte_states, terms, zeros, None, positions), rtol=0, atol=0)
