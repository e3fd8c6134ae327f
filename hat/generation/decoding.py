"""Cached HAT decoding, one step at a time: what `generate` runs for each byte.

`prefill` runs the left-padded prompt and fills every cache; `advance` appends one byte to some rows (`encode_step`),
runs the backbone for the rows whose byte completed a word (`backbone_step`) and returns the next-byte logits of the
rows that have them (`decode_step`). All of it works on an explicit `DecodeState`, one row per sequence, and runs
the model through its step methods (`HATModel.encode`, `pool`, `run_backbone`, `word_conditioning`, `decode`): the
prefill is `HATModel.forward` itself, filling the caches.

Caches (`caches`, batch-first, one row per sequence): a sliding-window ring `ByteKVCache` each for the encoder
and the decoder, a `WordKVCache` for the backbone that any subset of rows can advance, and `encoder_states`, the
encoder states of each row's last `max_word_size + slack` bytes, which the pooling reads when a word ends and the
decoder re-reads when it re-decodes positions. Per step the byte stacks reuse one incrementally kept window mask
(`ByteSlots.bias`, or none while every row may see every slot) and a RoPE table each, and run their layers as
`fused.FusedStack`s: the same math as transformers' `LlamaDecoderLayer` in a third of the tensor ops, which is
what a width-128 layer's cost is made of (layers the stack cannot fuse run as themselves).

Word boundaries (ARCHITECTURE.md §5): each row has a `hat.splitter.WordBoundaryDetector`, which re-splits the row's current word
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
rows draw their random numbers in a different order. `generate` decides when rows go in lockstep.
"""


from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..model.layout import additive_mask
from ..splitter import WordBoundaryDetector
from .caches import ByteKVCache, ByteSlots, ModelCaches, RotaryTable, WordKVCache
from .fused import FusedStack, fused_stack
from .hidden_states import decoder_hidden_states, recording_decoder_layers

# Ring slots beyond the sliding window: a step may re-decode up to this many trailing positions minus one.
BYTE_CACHE_SLACK = 16
# A parked row waits at most this many steps for the other rows before the backbone runs for the parked ones.
WORD_SYNC_PATIENCE = 8
# ... or as soon as this fraction of the unfinished rows is parked.
WORD_SYNC_QUORUM = 0.75


# ----------------------------------------------------------------------------------------------------------
# Decoding state
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One sequence's bytes and words. Columns count bytes including left padding."""

    length: int  # columns so far (prompt + generated)
    words: WordBoundaryDetector  # finds the word ends, one byte at a time
    word_start: int  # column of the current word's first byte (one past the end if it is empty)
    num_words: int  # complete words (= its backbone cache length)
    # completed words (start column, length) awaiting the backbone
    pending: list[tuple[int, int]] = field(default_factory=list)
    # first columns of the words after the first one its last byte completed (decoded under the first one's
    # prediction: to be re-decoded)
    redo: list[int] = field(default_factory=list)
    waited: int = 0  # steps it has waited while parked

    def copy(self) -> Row:
        """An independent copy (beam search continues one row as several)."""
        return Row(self.length, copy.copy(self.words), self.word_start, self.num_words, list(self.pending),
                   list(self.redo), self.waited)


@dataclass
class ByteStack:
    """How a byte stack (encoder or decoder) steps: its layers fused (None: the modules run), its RoPE table and
    its sliding window."""

    layers: FusedStack | None
    rotary: RotaryTable
    window: int


@dataclass
class DecodeState:
    """Everything cached decoding needs, one row per sequence: per-row bookkeeping (`rows`), the caches, and the
    tensors kept per row (B rows)."""

    rows: list[Row]
    caches: ModelCaches  # KV caches of the encoder, the backbone and the decoder
    slots: ByteSlots  # position and validity of each byte-cache slot (shared by encoder and decoder)
    encoder_states: torch.Tensor  # (B, R, E) encoder output of column c at slot c % R
    word_pred: torch.Tensor  # (B, D) backbone prediction for each row's current word
    conditioning: list[torch.Tensor | None]  # per decoder block the term (B, 1, E) of each row's current word
    pad: torch.Tensor  # (B,) left padding of each row, in columns
    padded: bool  # whether any row has left padding
    encoder: ByteStack
    decoder: ByteStack
    # `output_hidden_states`: the decoder's states per layer (`hidden_states.decoder_hidden_states`) of the rows
    # whose logits the last step returned, each (n, Q, E) (the prefill: (B, T, E); a step: (n, 1, E)); else None
    hidden: tuple[torch.Tensor, ...] | None = None

    def max_length(self) -> int:
        return max(row.length for row in self.rows)

    def unmasked(self, window: int) -> bool:
        """Whether each row's newest byte may attend to every cached slot (no padding, equal lengths, all in the
        window): its step then needs no attention mask."""
        first = self.rows[0].length
        return not self.padded and first <= window and all(row.length == first for row in self.rows)

    def select_rows(self, rows: list[int]) -> None:
        """Keep only `rows`, in this order (finished rows leave the batch); a row listed twice is copied (beams)."""
        if rows == list(range(len(self.rows))):
            return
        idx = torch.tensor(rows, device=self.pad.device)
        seen: set[int] = set()
        kept = []
        for r in rows:
            kept.append(self.rows[r].copy() if r in seen else self.rows[r])
            seen.add(r)
        self.rows = kept
        self.caches.select_rows(idx)
        self.slots = self.slots.select_rows(idx)
        self.encoder_states = self.encoder_states.index_select(0, idx)
        self.word_pred = self.word_pred.index_select(0, idx)
        self.conditioning = [c if c is None else c.index_select(0, idx) for c in self.conditioning]
        self.pad = self.pad.index_select(0, idx)
        self.padded = bool(self.pad.any())


# ----------------------------------------------------------------------------------------------------------
# Steps: prefill, encoder step, backbone step, decoder step
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden_states: bool = False,
            max_columns: int | None = None) -> tuple[DecodeState, torch.Tensor]:
    """Run the (left padded) prompt through the model's `forward`, filling every cache; next-byte logits (B, 256).

    `hidden_states`: keep the decoder's states per layer in `state.hidden`, now and after every step (the decoder's
    layers then run as modules, not fused, so that they can be recorded). `max_columns`: the most columns (prompt
    and generated bytes) the rows can reach; the byte rings hold `min(window, max_columns)` slots (plus slack), so a
    window far beyond the text (`sliding_window=10**12`, attention over everything) costs what the text costs.
    """
    hat, cfg = model.base_model, model.config
    B, T = input_ids.shape
    device = input_ids.device
    enc_window, dec_window = hat.byte_windows  # keys per byte, as `forward` counts them
    reach = max(enc_window, dec_window) if max_columns is None else min(max(enc_window, dec_window), max_columns)
    capacity = reach + BYTE_CACHE_SLACK
    ring = cfg.max_word_size + BYTE_CACHE_SLACK

    caches = ModelCaches(encoder=ByteKVCache(capacity), backbone=WordKVCache(), decoder=ByteKVCache(capacity))
    with recording_decoder_layers(hat) if hidden_states else nullcontext() as recorded:
        out = hat(input_ids, attention_mask=attention_mask, past_key_values=caches)
    logits = model.get_output_embeddings()(out.last_hidden_state[:, -1])  # (B, 256)

    # Slot bookkeeping of the byte ring, and the ring of encoder states
    pad = (attention_mask == 0).sum(1)  # (B,)
    cols = torch.arange(T, device=device)
    keep = cols[-min(T, capacity):]
    positions = torch.zeros(B, capacity, dtype=torch.long, device=device)
    valid = torch.zeros(B, capacity, dtype=torch.bool, device=device)
    positions[:, keep % capacity] = (keep - pad[:, None]).clamp(min=0)
    valid[:, keep % capacity] = attention_mask.bool()[:, keep]
    byte_states = out.encoder_hidden_state  # (B, T, E)
    encoder_states = byte_states.new_zeros(B, ring, byte_states.shape[-1])
    keep = cols[-min(T, ring):]
    encoder_states[:, keep % ring] = byte_states[:, keep]

    # Each row's words: the last one is current; its prediction conditions the bytes to come
    word_lengths = [[n for n in lengths if n] for lengths in out.word_lengths.tolist()]
    last = torch.tensor([len(lengths) - 1 for lengths in word_lengths], device=device)
    word_pred = hat.predict_words(out.word_hidden_states)[torch.arange(B, device=device), last]  # (B, D)
    ids, mask = input_ids.cpu(), attention_mask.bool().cpu()
    rows = [
        Row(length=T, words=WordBoundaryDetector(cfg.special_byte_values, cfg.max_word_size,
                                                 prefix=bytes(ids[b][mask[b]].tolist())),
            word_start=T - lengths[-1], num_words=len(lengths) - 1)
        for b, lengths in enumerate(word_lengths)
    ]
    encoder_layers, decoder_layers = hat.byte_layers()
    state = DecodeState(
        rows=rows, caches=caches, slots=ByteSlots.from_prefill(positions, valid, enc_window, byte_states.dtype),
        encoder_states=encoder_states, word_pred=word_pred, conditioning=hat.word_conditioning(word_pred[:, None]),
        pad=pad, padded=bool(pad.any()),
        encoder=ByteStack(fused_stack(encoder_layers),
                          RotaryTable(lambda p: hat.byte_position_embeddings(p)[0], device), enc_window),
        decoder=ByteStack(None if hidden_states else fused_stack(decoder_layers),
                          RotaryTable(lambda p: hat.byte_position_embeddings(p)[1], device), dec_window),
        hidden=decoder_hidden_states(byte_states, recorded, out.last_hidden_state) if hidden_states else None,
    )
    return state, logits


def encode_step(model, state: DecodeState, rows: list[int], next_ids: list[int]) -> None:
    """Append byte `next_ids[i]` to row `rows[i]`: encoder step, then the row's word boundaries.

    A row whose byte completed words gets them in its `pending` (it is parked until the backbone runs).
    """
    device = state.pad.device
    B, n = len(state.rows), len(rows)
    all_rows = n == B
    rows_t = None if all_rows else torch.tensor(rows, device=device)
    capacity, ring = state.caches.encoder.capacity, state.encoder_states.shape[1]
    for r in rows:
        state.rows[r].length += 1
    cols = torch.tensor([state.rows[r].length - 1 for r in rows], device=device)  # (n,) column of each new byte
    pos = cols - (state.pad if all_rows else state.pad.index_select(0, rows_t))  # (n,)
    row_idx = torch.arange(B, device=device) if all_rows else rows_t
    state.slots.append(row_idx, cols, pos)

    # Every row runs (fixed shapes); rows not in `rows` get a dummy byte and write nothing
    max_length = state.max_length()
    n_keys = min(max_length, capacity)
    ids = torch.tensor(next_ids, device=device)
    if not all_rows:
        ids = torch.zeros(B, dtype=torch.long, device=device).index_copy(0, rows_t, ids)
        pos = torch.zeros(B, dtype=torch.long, device=device).index_copy(0, rows_t, pos)
    enc_mask = None if state.unmasked(state.slots.window) else state.slots.bias[:, None, None, :n_keys]  # (B, 1, 1, K)
    rotary = state.encoder.rotary(pos[:, None], max_length)  # cos, sin (B, 1, hd)
    state.caches.encoder.begin_step(rows_t, (cols % capacity)[:, None], None, n_keys)
    byte_states = model.base_model.encode(ids[:, None], enc_mask, pos[:, None], state.caches.encoder,
                                          position_embeddings=rotary, layer_stack=state.encoder.layers)  # (B, 1, E)
    new = byte_states[:, 0] if all_rows else byte_states[:, 0].index_select(0, rows_t)
    state.encoder_states[row_idx, cols % ring] = new

    # Word boundaries: the old current word [s0, col) may now be words w_0 .. w_m (w_m current)
    for r, byte in zip(rows, next_ids):
        row = state.rows[r]
        start, redo = row.word_start, []
        for word in row.words.push(byte).completed:
            row.pending.append((start, len(word)))
            start += len(word)
            redo.append(start)  # first column of w_1 .. w_m: decoded under w_0's prediction, to be re-decoded
        row.word_start, row.redo = start, redo


def backbone_step(model, state: DecodeState, rows: list[int]) -> list[torch.Tensor]:
    """Pool and run the pending words of `rows`, one backbone call per round (round k: each row's k-th word).

    Returns `preds`: `preds[j]` (B, D) is the prediction for each row's word w_j of its last byte (w_0: the old one).
    """
    hat = model.base_model
    device = state.pad.device
    B, ring = len(state.rows), state.encoder_states.shape[1]
    preds = [state.word_pred.clone()]
    for k in range(max(len(state.rows[r].pending) for r in rows)):
        round_rows = [r for r in rows if len(state.rows[r].pending) > k]
        starts = [state.rows[r].pending[k][0] for r in round_rows]
        lengths = [state.rows[r].pending[k][1] for r in round_rows]
        n, L = len(round_rows), max(lengths)
        rows_t = torch.tensor(round_rows, device=device)
        ar = torch.arange(L, device=device)
        cols = torch.tensor(starts, device=device)[:, None] + ar  # (n, L) columns of each word's bytes
        byte_states = state.encoder_states[rows_t[:, None], cols % ring]  # (n, L, E)
        byte_positions = (cols - state.pad[rows_t, None]).clamp(min=0)  # (n, L)
        bytes_valid = ar[None, :] < torch.tensor(lengths, device=device)[:, None]  # (n, L)
        word_positions = torch.tensor([state.rows[r].num_words for r in round_rows], device=device)  # (n,)
        word_embeds = hat.pool(
            byte_states, byte_positions, ar.expand(n, 1, L), bytes_valid[:, None], word_positions[:, None]
        )  # (n, 1, D)

        n_keys = max(state.rows[r].num_words for r in round_rows) + 1
        state.caches.backbone.begin_step(None if round_rows == list(range(B)) else rows_t, word_positions, n_keys)
        key_pos = torch.arange(n_keys, device=device)
        word_mask = additive_mask((key_pos[None, :] <= word_positions[:, None])[:, None, None], word_embeds.dtype)
        word_states = hat.run_backbone(word_embeds, word_mask, word_positions[:, None],
                                       state.caches.backbone)  # (n, 1, D); mask (n, 1, 1, K)
        state.word_pred[rows_t] = word_states[:, 0]  # the prediction for each row's next word
        for cond, term in zip(state.conditioning, hat.word_conditioning(word_states[:, :1])):
            if cond is not None:
                cond[rows_t] = term
        for r in round_rows:
            state.rows[r].num_words += 1
        preds.append(state.word_pred.clone())
    for r in rows:
        state.rows[r].pending, state.rows[r].waited = [], 0
    return preds


def decode_step(model, state: DecodeState, rows: list[int], preds: list[torch.Tensor] | None) -> torch.Tensor:
    """Decoder step for `rows` (their newest byte, plus re-decoded bytes); returns their next logits (n, 256).

    `preds` comes from `backbone_step` if it ran for some of the rows in this step.
    """
    hat = model.base_model
    device = state.pad.device
    B, n = len(state.rows), len(rows)
    all_rows = n == B
    rows_t = None if all_rows else torch.tensor(rows, device=device)
    dec_window = state.decoder.window
    capacity, ring = state.caches.decoder.capacity, state.encoder_states.shape[1]
    max_length = state.max_length()
    n_keys = min(max_length, capacity)
    lengths = [state.rows[r].length for r in rows]
    redos = [state.rows[r].redo for r in rows]
    cols = torch.tensor([length - 1 for length in lengths], device=device)  # (n,)
    # Bytes before the newest one to re-decode, and whether the newest byte sits in a completed word (a special
    # byte or a word at max_word_size is completed at once): both need each position's own word prediction.
    redo = [max(0, length - 1 - r[0]) if r else 0 for length, r in zip(lengths, redos)]
    own_words = any(redo) or any(r and r[-1] >= length for length, r in zip(lengths, redos))
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
    dec_in = state.encoder_states[row_idx[:, None], cols % ring]  # (n, Q, E)
    if not all_rows:  # every row runs; the others get zeros and write nothing
        dec_in = dec_in.new_zeros(B, K + 1, dec_in.shape[-1]).index_copy(0, rows_t, dec_in)
        pos = pos.new_zeros(B, K + 1).index_copy(0, rows_t, pos)
    if K == 0 and dec_window == state.slots.window:  # every row's query is its newest byte (no re-decoding)
        dec_mask = None if state.unmasked(dec_window) else state.slots.bias[:, None, None, :n_keys]  # (B, 1, 1, K)
    else:
        dec_mask = state.slots.mask(pos, dec_window, n_keys, state.encoder_states.dtype)  # (B, 1, Q, K)
    if not own_words:  # each row's current word
        write, conditioning, byte_word = None, state.conditioning, None
    else:  # each position's own word
        write = None if K == 0 else (back[None, :] <= torch.tensor(redo, device=device)[:, None])[:, :, None, None]
        word_preds = torch.stack(preds or [state.word_pred], dim=1)  # (B, 1 + rounds, D)
        conditioning = hat.word_conditioning(word_preds)  # per block (B, 1 + rounds, E)
        byte_word = torch.zeros(B, K + 1, dtype=torch.long, device=device)
        byte_word[torch.tensor(rows, device=device)] = torch.tensor(
            [[sum(x <= c for x in r) for c in range(length - 1 - K, length)] for length, r in zip(lengths, redos)],
            device=device,
        )  # (B, Q): index of each position's word in word_preds
    state.caches.decoder.begin_step(rows_t, cols % capacity, write, n_keys)
    rotary = state.decoder.rotary(pos, max_length)
    with recording_decoder_layers(hat) if state.hidden is not None else nullcontext() as recorded:
        out = hat.decode(dec_in, conditioning, byte_word, dec_mask, pos, state.caches.decoder,
                         position_embeddings=rotary, layer_stack=state.decoder.layers)  # (B, Q, E)
    for r in rows:
        state.rows[r].redo = []
    if state.hidden is not None:  # each row's newest position, per layer (n, 1, E)
        state.hidden = tuple(h[:, -1:] if all_rows else h[:, -1:].index_select(0, rows_t)
                             for h in decoder_hidden_states(dec_in, recorded, out))
    last = out[:, -1] if all_rows else out[:, -1].index_select(0, rows_t)
    return model.get_output_embeddings()(last)  # (n, 256)


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
        parked = [r for r, row in enumerate(state.rows) if row.pending]
        running = [r for r in rows if not state.rows[r].pending]
        preds = None
        if parked and (
            not word_sync or not running or len(parked) >= WORD_SYNC_QUORUM * len(state.rows)
            or max(state.rows[r].waited for r in parked) >= WORD_SYNC_PATIENCE
        ):
            preds = backbone_step(model, state, parked)
            ready = sorted(set(running) | set(parked))
        else:
            ready = running
            for r in parked:
                state.rows[r].waited += 1
        return ready, decode_step(model, state, ready, preds)


@torch.no_grad()
def full_recompute_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden_states: bool = False
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The reference: segment the whole sequences with the splitter and run the full forward; the last logits
    (B, 256), and with `hidden_states` the decoder's states per layer, each (B, T, E)."""
    out = model(input_ids, attention_mask=attention_mask, logits_to_keep=1, output_hidden_states=hidden_states)
    return out.logits[:, -1], out.hidden_states
