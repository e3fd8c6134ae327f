"""Cached HAT decoding, one step at a time: what `hat.generation.generate` runs for each byte.

`prefill` runs the left-padded prompt and fills every cache; `advance` appends one byte to some rows (`encode_step`),
runs the backbone for the rows whose byte completed a word (`backbone_step`) and returns the next-byte logits of the
rows that have them (`decode_step`). All of it works on an explicit `DecodeState`, one row per sequence.

Caches (`hat.caches`, batch-first, one row per sequence): a sliding-window ring `ByteKVCache` each for the encoder
and the decoder, a `WordKVCache` for the backbone that any subset of rows can advance, and `enc_ring`, the encoder
states of each row's last `max_word_size + slack` bytes, which the connector pools when a word ends and the decoder
re-reads when it re-decodes positions. Per step the byte stacks reuse one incrementally kept window mask
(`ByteSlots.bias`, or none while every row may see every slot) and one RoPE table, and run their layers as
`hat.fused.FusedStack`s: the same math as transformers' `LlamaDecoderLayer` in a third of the tensor ops, which is
what a width-128 layer's cost is made of (layers the stack cannot fuse run as themselves).

Word boundaries (SPEC §3): each row has a `hat.splitter.WordBoundaryDetector`, which re-splits the row's current word
plus each new byte with the splitter's byte rule. The words it reports complete are pooled by the connector, and the
backbone takes one step per word; its output conditions the next word. Bytes that were decoded under the old word's
prediction but belong to a later word (the first bytes of a multi-byte first character, or an unfinished character
that turned out invalid) are re-decoded under their own word's prediction: the decoder re-runs those `k` positions
and overwrites their cache slots (other rows keep theirs). The newest byte is decoded under the prediction of the
word it belongs to, which is the current word, or a word completed at once (a special byte such as eos, or a word
that reached `max_word_size`): the logits of a word's bytes depend only on the words before it, exactly as in the
full-sequence forward.

Rows complete words at different steps. If every row waited for every backbone step ("lockstep"), a batch of 16
would run the backbone nearly every byte, each time for ~3 rows: about as many backbone calls as bytes per row,
where a token model needs one call per ~4 bytes. So by default (`word_sync`) a row that completes a word parks: its
byte is encoded, but its decoder step waits until 3/4 of the unfinished rows are parked (`WORD_SYNC_QUORUM`), all the
others are, or it has waited `WORD_SYNC_PATIENCE` steps; then one backbone call serves all parked rows. Every row's
bytes are the same as in lockstep (greedy output is identical); rows only advance at different times, so sampled
rows draw their random numbers in a different order. `hat.generation.generate` decides when rows go in lockstep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .caches import ByteKVCache, ByteSlots, RotaryTable, WordKVCache
from .fused import FusedStack, fused_stack
from .model.layout import additive_mask, build_layout, causal_mask, gather_words
from .splitter import WordBoundaryDetector

# Ring slots beyond the sliding window: a step may re-decode up to this many trailing positions minus one.
BYTE_CACHE_SLACK = 16
# A parked row waits at most this many steps for the other rows before the backbone runs for the parked ones.
WORD_SYNC_PATIENCE = 8
# ... or as soon as this fraction of the unfinished rows is parked.
WORD_SYNC_QUORUM = 0.75


# ----------------------------------------------------------------------------------------------------------
# Decoding state: prefill, encoder step, backbone step, decoder step
# ----------------------------------------------------------------------------------------------------------
@dataclass
class DecodeState:
    """Everything cached decoding needs, one row per sequence. Columns count bytes including left padding."""

    length: list[int]  # columns of each row so far (prompt + generated)
    pad: torch.Tensor  # (B,) left padding of each row, in columns
    padded: bool  # whether any row has left padding
    decoder_window: int  # the decoder's sliding window (the encoder's is `slots.window`)
    slots: ByteSlots
    encoder_cache: ByteKVCache
    decoder_cache: ByteKVCache
    word_cache: WordKVCache
    num_words: list[int]  # complete words per row (= its backbone cache length)
    enc_ring: torch.Tensor  # (B, R, E) encoder output of column c at slot c % R
    word_pred: torch.Tensor  # (B, D) backbone prediction for each row's current word
    conditioning: list[torch.Tensor | None]  # per decoder block: (B, 1, E) term of each row's current word, or None
    words: list  # per row a `hat.splitter.WordBoundaryDetector`
    word_start: list[int]  # column of each row's current word's first byte (one past the end if it is empty)
    pending: list[list[tuple[int, int]]]  # per row: completed words (start column, length) awaiting the backbone
    redo: list[list[int]]  # per row: first columns of the words after the first one its last byte completed
    waited: list[int]  # steps each parked row has waited
    rotary: tuple[RotaryTable, RotaryTable] | None = None  # encoder's and decoder's (may be the same object)
    # the encoder's and decoder's layers as `hat.fused.FusedStack`s for steps (None: run the modules themselves)
    stacks: tuple[FusedStack | None, FusedStack | None] = (None, None)

    def unmasked(self, window: int) -> bool:
        """Whether each row's newest byte may attend to every cached slot (no padding, equal lengths, all in the
        window): its step then needs no attention mask."""
        return not self.padded and self.length[0] <= window and self.length.count(self.length[0]) == len(self.length)

    def select_rows(self, rows: list[int]) -> None:
        """Keep only `rows` (finished rows leave the batch)."""
        idx = torch.tensor(rows, device=self.pad.device)
        self.pad = self.pad.index_select(0, idx)
        self.padded = bool(self.pad.any())
        self.slots = self.slots.select_rows(idx)
        for cache in (self.encoder_cache, self.decoder_cache, self.word_cache):
            cache.select_rows(idx)
        self.enc_ring = self.enc_ring.index_select(0, idx)
        self.word_pred = self.word_pred.index_select(0, idx)
        self.conditioning = [c if c is None else c.index_select(0, idx) for c in self.conditioning]
        for name in ("length", "num_words", "words", "word_start", "pending", "redo", "waited"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])


def word_conditioning(model, word_pred: torch.Tensor) -> list[torch.Tensor | None]:
    """word_pred (n, D) -> per decoder block the term each byte of the word adds, (n, 1, E) (None: none)."""
    blocks = model.model.decoder.decoder_layers
    return [block.word_conditioning(word_pred[:, None]) if block.add_cross_attention else None for block in blocks]


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
    """Run the (left padded) prompt through the model as `HATModel.forward` does, filling every cache.

    All complete prompt words go through the backbone; the last word is the current one and is continued.
    Returns the state and the last position's logits (B, 256).
    """
    hat, cfg = model.model, model.config
    B, T = input_ids.shape
    device = input_ids.device
    dtype = hat.encoder.embedding_layer.weight.dtype
    enc_window, dec_window = cfg.encoder_config.sliding_window, cfg.decoder_config.sliding_window
    capacity = max(enc_window, dec_window) + BYTE_CACHE_SLACK
    ring = cfg.max_word_size + BYTE_CACHE_SLACK

    word_lengths = hat.word_lengths(input_ids, attention_mask)
    layout = build_layout(word_lengths, attention_mask)
    W = layout.word_valid.shape[1]
    encoder_cache, decoder_cache, word_cache = ByteKVCache(capacity), ByteKVCache(capacity), WordKVCache()

    # Encoder over the prompt bytes
    enc_mask = additive_mask(causal_mask(layout.byte_valid, enc_window), dtype)  # (B, 1, T, T)
    byte_states = hat.encoder(input_ids, enc_mask, layout.byte_positions, past_key_values=encoder_cache)  # (B, T, E)

    # Connector and backbone over all words; the cache keeps the complete ones (the last word's slot is overwritten)
    word_positions = torch.arange(W, device=device).expand(B, W)  # (B, W)
    word_embeds = hat.encoder_connector(
        byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid, word_positions
    )  # (B, W, D)
    word_mask = additive_mask(causal_mask(layout.word_valid), dtype)  # (B, 1, W, W)
    word_states = hat.backbone(word_embeds, word_mask, word_positions, past_key_values=word_cache)  # (B, W, D)
    word_preds = hat.decoder_connector(word_states)  # (B, W, D)

    # Decoder over the prompt bytes
    dec_mask = enc_mask
    if dec_window != enc_window:
        dec_mask = additive_mask(causal_mask(layout.byte_valid, dec_window), dtype)
    out = hat.decoder(byte_states, word_preds, layout.byte_word, dec_mask, layout.byte_positions,
                      past_key_values=decoder_cache)  # (B, T, E)
    logits = model.lm_head(hat.layer_norm(out[:, -1]))  # (B, 256)

    # Slot bookkeeping of the byte ring, the encoder-state ring, each row's current word
    cols = torch.arange(T, device=device)
    keep = cols[-min(T, capacity):]
    positions = torch.zeros(B, capacity, dtype=torch.long, device=device)
    valid = torch.zeros(B, capacity, dtype=torch.bool, device=device)
    positions[:, keep % capacity] = layout.byte_positions[:, keep]
    valid[:, keep % capacity] = layout.byte_valid[:, keep]
    enc_ring = byte_states.new_zeros(B, ring, byte_states.shape[-1])
    keep = cols[-min(T, ring):]
    enc_ring[:, keep % ring] = byte_states[:, keep]

    n_words = [len(w) for w in word_lengths]
    last = torch.tensor([n - 1 for n in n_words], device=device)
    word_pred = word_preds[torch.arange(B, device=device), last]  # (B, D) prediction for each current word
    ids, mask = input_ids.cpu(), attention_mask.bool().cpu()
    words = [WordBoundaryDetector(cfg.special_byte_values, cfg.max_word_size, prefix=bytes(ids[b][mask[b]].tolist()))
             for b in range(B)]
    like = byte_states.new_zeros(1, 1, byte_states.shape[-1])
    enc_rope, dec_rope = hat.encoder.rotary_emb, hat.decoder.rotary_emb
    encoder_rotary = RotaryTable(enc_rope, like)
    same = torch.equal(enc_rope.inv_freq, dec_rope.inv_freq)
    same = same and enc_rope.attention_scaling == dec_rope.attention_scaling
    decoder_rotary = encoder_rotary if same else RotaryTable(dec_rope, like)
    state = DecodeState(
        length=[T] * B, pad=(attention_mask == 0).sum(1), padded=not bool(attention_mask.bool().all()),
        decoder_window=dec_window,
        slots=ByteSlots.from_prefill(positions, valid, enc_window, dtype),
        encoder_cache=encoder_cache, decoder_cache=decoder_cache, word_cache=word_cache,
        num_words=[n - 1 for n in n_words], enc_ring=enc_ring, word_pred=word_pred,
        conditioning=word_conditioning(model, word_pred), words=words, word_start=[T - w[-1] for w in word_lengths],
        pending=[[] for _ in range(B)], redo=[[] for _ in range(B)], waited=[0] * B,
        rotary=(encoder_rotary, decoder_rotary),
        stacks=(fused_stack(hat.encoder, hat.encoder.layers),
                fused_stack(hat.decoder, [block.llama_layer for block in hat.decoder.decoder_layers])),
    )
    return state, logits


def encode_step(model, state: DecodeState, rows: list[int], next_ids: list[int]) -> None:
    """Append byte `next_ids[i]` to row `rows[i]`: encoder step, then the row's word boundaries.

    A row whose byte completed words gets them in `state.pending` (it is parked until the backbone runs).
    """
    hat = model.model
    device = state.pad.device
    B, n = len(state.length), len(rows)
    all_rows = n == B
    rows_t = None if all_rows else torch.tensor(rows, device=device)
    capacity, ring = state.encoder_cache.capacity, state.enc_ring.shape[1]
    for r in rows:
        state.length[r] += 1
    cols = torch.tensor([state.length[r] - 1 for r in rows], device=device)  # (n,) column of each new byte
    pos = cols - (state.pad if all_rows else state.pad.index_select(0, rows_t))  # (n,)
    row_idx = torch.arange(B, device=device) if all_rows else rows_t
    state.slots.append(row_idx, cols, pos)

    # Every row runs (fixed shapes); rows not in `rows` get a dummy byte and write nothing
    n_keys = min(max(state.length), capacity)
    ids = torch.tensor(next_ids, device=device)
    if not all_rows:
        ids = torch.zeros(B, dtype=torch.long, device=device).index_copy(0, rows_t, ids)
        pos = torch.zeros(B, dtype=torch.long, device=device).index_copy(0, rows_t, pos)
    enc_mask = None if state.unmasked(state.slots.window) else state.slots.bias[:, None, None, :n_keys]  # (B, 1, 1, K)
    rotary = state.rotary[0](pos[:, None], max(state.length))  # cos, sin (B, 1, hd)
    state.encoder_cache.begin_step(rows_t, (cols % capacity)[:, None], None, n_keys)
    if state.stacks[0] is not None:
        byte_states = state.stacks[0](hat.encoder.embedding_layer(ids[:, None]), enc_mask, rotary, state.encoder_cache)
    else:
        byte_states = hat.encoder(ids[:, None], enc_mask, pos[:, None], past_key_values=state.encoder_cache,
                                  position_embeddings=rotary)  # (B, 1, E)
    new = byte_states[:, 0] if all_rows else byte_states[:, 0].index_select(0, rows_t)
    state.enc_ring[row_idx, cols % ring] = new

    # Word boundaries: the old current word [s0, col) may now be words w_0 .. w_m (w_m current)
    for r, byte in zip(rows, next_ids):
        start, redo = state.word_start[r], []
        for word in state.words[r].push(byte).completed:
            state.pending[r].append((start, len(word)))
            start += len(word)
            redo.append(start)  # first column of w_1 .. w_m: decoded under w_0's prediction, to be re-decoded
        state.word_start[r] = start
        state.redo[r] = redo


def backbone_step(model, state: DecodeState, rows: list[int]) -> list[torch.Tensor]:
    """Pool and run the pending words of `rows`, one backbone call per round (round k: each row's k-th word).

    Returns `preds`: `preds[j]` (B, D) is the prediction for each row's word w_j of its last byte (w_0: the old one).
    """
    hat = model.model
    device = state.pad.device
    B, ring = len(state.length), state.enc_ring.shape[1]
    preds = [state.word_pred.clone()]
    for k in range(max(len(state.pending[r]) for r in rows)):
        round_rows = [r for r in rows if len(state.pending[r]) > k]
        starts = [state.pending[r][k][0] for r in round_rows]
        lengths = [state.pending[r][k][1] for r in round_rows]
        n, L = len(round_rows), max(lengths)
        rows_t = torch.tensor(round_rows, device=device)
        ar = torch.arange(L, device=device)
        cols = torch.tensor(starts, device=device)[:, None] + ar  # (n, L) columns of each word's bytes
        byte_states = state.enc_ring[rows_t[:, None], cols % ring]  # (n, L, E)
        byte_positions = (cols - state.pad[rows_t, None]).clamp(min=0)  # (n, L)
        bytes_valid = ar[None, :] < torch.tensor(lengths, device=device)[:, None]  # (n, L)
        word_positions = torch.tensor([state.num_words[r] for r in round_rows], device=device)  # (n,)
        word_embeds = hat.encoder_connector(
            byte_states, byte_positions, ar.expand(n, 1, L), bytes_valid[:, None], word_positions[:, None]
        )  # (n, 1, D)

        n_keys = max(state.num_words[r] for r in round_rows) + 1
        state.word_cache.begin_step(None if round_rows == list(range(B)) else rows_t, word_positions, n_keys)
        key_pos = torch.arange(n_keys, device=device)
        word_mask = additive_mask((key_pos[None, :] <= word_positions[:, None])[:, None, None], word_embeds.dtype)
        word_states = hat.backbone(word_embeds, word_mask, word_positions[:, None],
                                   past_key_values=state.word_cache)  # (n, 1, D); mask (n, 1, 1, K)
        state.word_pred[rows_t] = word_states[:, 0]  # the prediction for each row's next word
        for cond, term in zip(state.conditioning, word_conditioning(model, word_states[:, 0])):
            if cond is not None:
                cond[rows_t] = term
        for r in round_rows:
            state.num_words[r] += 1
        preds.append(state.word_pred.clone())
    for r in rows:
        state.pending[r], state.waited[r] = [], 0
    return preds


def decode_step(model, state: DecodeState, rows: list[int], preds: list[torch.Tensor] | None) -> torch.Tensor:
    """Decoder step for `rows` (their newest byte, plus re-decoded bytes); returns their next logits (n, 256).

    `preds` comes from `backbone_step` if it ran for some of the rows in this step.
    """
    hat = model.model
    device = state.pad.device
    B, n = len(state.length), len(rows)
    all_rows = n == B
    rows_t = None if all_rows else torch.tensor(rows, device=device)
    dec_window = state.decoder_window
    capacity, ring = state.decoder_cache.capacity, state.enc_ring.shape[1]
    n_keys = min(max(state.length), capacity)
    cols = torch.tensor([state.length[r] - 1 for r in rows], device=device)  # (n,)
    # Bytes before the newest one to re-decode, and whether the newest byte sits in a completed word (a special
    # byte or a word at max_word_size is completed at once): both need each position's own word prediction.
    redo = [max(0, state.length[r] - 1 - state.redo[r][0]) if state.redo[r] else 0 for r in rows]
    own_words = any(redo) or any(state.redo[r] and state.redo[r][-1] >= state.length[r] for r in rows)
    K = max(redo)
    if K >= BYTE_CACHE_SLACK:
        raise RuntimeError(
            f"a word boundary moved {K} bytes back; the byte cache re-decodes at most {BYTE_CACHE_SLACK - 1}"
        )
    back = torch.arange(K, -1, -1, device=device)  # (Q,) K .. 0
    cols = cols[:, None] - back  # (n, Q)
    pad = state.pad if all_rows else state.pad.index_select(0, rows_t)
    pos = (cols - pad[:, None]).clamp(min=0)  # (n, Q)
    row_idx = torch.arange(B, device=device) if all_rows else rows_t
    dec_in = state.enc_ring[row_idx[:, None], cols % ring]  # (n, Q, E)
    if not all_rows:  # every row runs; the others get zeros and write nothing
        dec_in = dec_in.new_zeros(B, K + 1, dec_in.shape[-1]).index_copy(0, rows_t, dec_in)
        pos = pos.new_zeros(B, K + 1).index_copy(0, rows_t, pos)
    if K == 0 and dec_window == state.slots.window:  # every row's query is its newest byte (no re-decoding)
        dec_mask = None if state.unmasked(dec_window) else state.slots.bias[:, None, None, :n_keys]  # (B, 1, 1, K)
    else:
        dec_mask = state.slots.mask(pos, dec_window, n_keys, state.enc_ring.dtype)  # (B, 1, Q, K)
    if not own_words:
        write = None
        word_preds = byte_word = None
        conditioning = state.conditioning  # each row's current word
    else:
        write = None if K == 0 else (back[None, :] <= torch.tensor(redo, device=device)[:, None])[:, :, None, None]
        preds = preds or [state.word_pred]
        word_preds = torch.stack(preds, dim=1)  # (B, 1 + rounds, D)
        byte_word = torch.zeros(B, K + 1, dtype=torch.long, device=device)
        byte_word[torch.tensor(rows, device=device)] = torch.tensor(
            [[sum(x <= c for x in state.redo[r]) for c in range(state.length[r] - 1 - K, state.length[r])]
             for r in rows],
            device=device,
        )  # (B, Q): index of each position's word in word_preds
        conditioning = None
    state.decoder_cache.begin_step(rows_t, cols % capacity, write, n_keys)
    rotary = state.rotary[1](pos, max(state.length))
    if state.stacks[1] is not None:
        if conditioning is None:  # each position's own word (`HATDecoder.forward` without `word_conditioning`)
            conditioning = [gather_words(block.word_conditioning(word_preds), byte_word) if block.add_cross_attention
                            else None for block in hat.decoder.decoder_layers]
        out = state.stacks[1](dec_in, dec_mask, rotary, state.decoder_cache, adds=conditioning)  # (B, Q, E)
    else:
        out = hat.decoder(dec_in, word_preds, byte_word, dec_mask, pos, past_key_values=state.decoder_cache,
                          word_conditioning=conditioning, position_embeddings=rotary)
    for r in rows:
        state.redo[r] = []
    last = out[:, -1] if all_rows else out[:, -1].index_select(0, rows_t)
    return model.lm_head(hat.layer_norm(last))  # (n, 256)


def advance(
    model, state: DecodeState, rows: list[int], next_ids: list[int], word_sync: bool
) -> tuple[list[int], torch.Tensor]:
    """Append one byte to each of `rows`; return the rows that have next-byte logits now, and those logits.

    Rows whose byte ended a word park until the backbone runs: with `word_sync` once `WORD_SYNC_QUORUM` of the rows
    are parked, no row is running, or a row waited `WORD_SYNC_PATIENCE` steps; else at once (lockstep). All rows of
    the state are unfinished; `rows` may be empty (all ready rows just finished) while others are parked.
    """
    with torch.no_grad():
        if rows:
            encode_step(model, state, rows, next_ids)
        parked = [r for r in range(len(state.length)) if state.pending[r]]
        running = [r for r in rows if not state.pending[r]]
        preds = None
        if parked and (
            not word_sync or not running or len(parked) >= WORD_SYNC_QUORUM * len(state.length)
            or max(state.waited[r] for r in parked) >= WORD_SYNC_PATIENCE
        ):
            preds = backbone_step(model, state, parked)
            ready = sorted(set(running) | set(parked))
        else:
            ready = running
            for r in parked:
                state.waited[r] += 1
        return ready, decode_step(model, state, ready, preds)


@torch.no_grad()
def full_recompute_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reference: segment the whole sequences with the splitter and run the full forward; last logits (B, 256)."""
    return model(input_ids, attention_mask=attention_mask, logits_to_keep=1).logits[:, -1]
