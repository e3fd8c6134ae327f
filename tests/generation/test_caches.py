"""hat.generation.caches: the byte rings, the word cache, slot bookkeeping and RoPE tables."""

import torch

from hat.generation.caches import ByteKVCache, ByteSlots, ModelCaches, RotaryTable, WordKVCache


def test_byte_ring_keeps_the_last_columns_and_writes_only_the_given_rows():
    C = 4
    cache = ByteKVCache(C)
    keys = torch.arange(2 * 1 * 6 * 1, dtype=torch.float32).reshape(2, 1, 6, 1)  # (B, Hkv, T, hd), T > C
    k, v = cache.update(keys, -keys, 0)
    assert torch.equal(k, keys) and torch.equal(v, -keys)  # the prefill attends to all of its keys
    stored = cache.kv[0][:, 0, :, 0]  # the keys of slots 0..3: columns 4, 5, 2, 3
    assert stored[0].tolist() == [4.0, 5.0, 2.0, 3.0]
    # column 6 of row 1 only, into slot 6 % 4 = 2; attention reads all four slots
    cache.begin_step(torch.tensor([1]), torch.tensor([[2]]), None, 4)
    new = torch.full((2, 1, 1, 1), 100.0)
    k, v = cache.update(new, -new, 0)
    assert k[:, 0, :, 0].tolist() == [[4.0, 5.0, 2.0, 3.0], [10.0, 11.0, 100.0, 9.0]]
    assert v[1, 0, 2, 0] == -100.0


def test_word_cache_advances_any_subset_of_rows_and_grows():
    cache = WordKVCache()
    prompt = torch.ones(3, 1, 2, 1)  # three rows, two words each
    cache.update(prompt, prompt, 0)
    capacity = cache.capacity
    cache.begin_step(torch.tensor([0, 2]), torch.tensor([2, 1]), n_keys=capacity + 1)  # row 2 overwrites word 1
    assert cache.capacity > capacity
    k, v = cache.update(torch.full((2, 1, 1, 1), 5.0), torch.full((2, 1, 1, 1), 6.0), 0)
    assert k.shape == (2, 1, capacity + 1, 1)  # the two rows of the step
    assert k[0, 0, :3, 0].tolist() == [1.0, 1.0, 5.0] and k[1, 0, :3, 0].tolist() == [1.0, 5.0, 0.0]
    assert cache.keys[0][1, 0, :3, 0].tolist() == [1.0, 1.0, 0.0]  # row 1 untouched


def test_slot_bias_kept_incrementally_equals_the_rebuilt_mask():
    C, window = 6, 4
    positions = torch.tensor([[0, 1, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    valid = torch.tensor([[True, True, True, False, False, False], [True, False, False, False, False, False]])
    slots = ByteSlots.from_prefill(positions.clone(), valid.clone(), window, torch.float32)
    length = [3, 1]
    for _ in range(8):  # both rows append bytes; the ring wraps and old bytes leave the window
        rows = torch.tensor([0, 1])
        cols = torch.tensor(length)
        slots.append(rows, cols, cols.clone())
        length = [n + 1 for n in length]
        newest = torch.tensor([[n - 1] for n in length])  # (B, 1)
        rebuilt = slots.mask(newest, window, C, torch.float32)[:, 0, 0]  # (B, C)
        assert torch.equal(slots.bias, rebuilt), length
    kept = slots.select_rows(torch.tensor([1]))
    assert torch.equal(kept.bias, slots.bias[1:]) and kept.window == window


def test_rotary_table_is_computed_once_and_grown():
    calls = []

    def compute(positions):  # (1, n) -> cos, sin (1, n, 2)
        calls.append(positions.shape[1])
        p = positions[..., None].float()
        return torch.cat([p, p], -1).cos(), torch.cat([p, p], -1).sin()

    table = RotaryTable(compute, torch.device("cpu"))
    cos, sin = table(torch.tensor([[0, 5], [3, 3]]), 5)
    assert cos.shape == (2, 2, 2) and torch.allclose(cos[0, 1], torch.tensor(5.0).cos().expand(2))
    table(torch.tensor([[7]]), 7)
    assert calls == [1024]
    table(torch.tensor([[2000]]), 2000)
    assert calls == [1024, 4000]


def test_model_caches_select_rows_of_all_three():
    caches = ModelCaches(ByteKVCache(4), WordKVCache(), ByteKVCache(4))
    x = torch.arange(3.0).reshape(3, 1, 1, 1)
    caches.encoder.update(x, x, 0)
    caches.backbone.update(x, x, 0)
    caches.decoder.update(x, x, 0)
    caches.select_rows(torch.tensor([2, 0]))
    assert caches.encoder.kv[0][:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert caches.backbone.keys[0][:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert caches.decoder.kv[0][:, 0, 0, 0].tolist() == [2.0, 0.0]
