"""Batched byte-level generation for HAT, with byte-level and word-level KV caches.

    from hat import HATForCausalLM
    from transformers import AutoTokenizer

    model = HATForCausalLM.from_pretrained("path/to/hat")
    tokenizer = AutoTokenizer.from_pretrained("path/to/hat")
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**batch, max_new_tokens=200, do_sample=True, temperature=0.7, top_p=0.9)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

`HATForCausalLM.generate` is `generate` below: an own decoding loop that takes HF `generate`'s arguments
(`GenerationConfig` fields as keyword arguments, `logits_processor`, `stopping_criteria`, `streamer`,
`return_dict_in_generate`, `output_scores` / `output_logits` / `output_hidden_states`, `num_return_sequences`,
`max_time`, beam search with `num_beams`, `length_penalty`, `early_stopping`) and reuses HF's pieces:
`_prepare_generation_config` (model config + global defaults + kwargs), `_prepare_generated_length` (the length
defaults), `_get_logits_processor` (temperature, top-k, top-p, min-p, repetition penalty, min_new_tokens, ...),
`StoppingCriteriaList`, HF's beam search steps (`beam`), and the streamer protocol (`put(prompt)`, `put(next_ids)`,
`end()`). `max_new_tokens` counts bytes; `stop_strings` match bytes. Options HAT does not implement are refused with a
`ValueError` naming them (`arguments`).

Memory grows with the bytes generated, not with `max_new_tokens`: the output buffer grows in chunks (doubling), so
`max_new_tokens=10**12` with an early end costs what the bytes cost.

Why an own loop and not GenerationMixin's with a custom `Cache`: HF's loop runs one `forward` per token for the
whole batch, with one cache and shared `cache_position`s. A HAT step is not one forward: encoder and decoder advance
one byte per row, the connector and the backbone run only for rows whose word just ended (a row may complete two
words at once, or none), a multi-byte first character of a new word makes the decoder re-run a few positions, and
for throughput the rows should not even move in lockstep (`decoding`). Squeezing this into `forward` would hide a
second loop, the word segmentation and three caches behind `prepare_inputs_for_generation`, with HF slicing `input_ids` by
`cache_position` around it. Here each part is a small function over an explicit `decoding.DecodeState`.

The decoding steps themselves (prefill, encoder step, backbone step, decoder step, word boundaries, caches and how
rows that finished a word wait for each other, "word sync") are `decoding`. Lockstep (every row waits for every
backbone call) is used where HF semantics need the whole batch at every step: a streamer with several rows, user
`logits_processor` / `stopping_criteria` (unless `word_sync=True` says they treat rows one by one), and processors
with per-batch state (repetition penalty).

`use_cache=False` runs the reference instead: at every step the whole sequence is segmented and `model(...)` runs
on it; the last position's logits are used. Tests check that both give the same bytes.

Streaming: streamers get byte ids. HF's `TextStreamer` / `TextIteratorStreamer` decode their whole pending cache and
emit text only up to the last space, newline or CJK character, all complete characters, so an unfinished UTF-8
character (decoded as U+FFFD while pending) is never emitted before its last byte arrives; a truly invalid byte is
emitted as U+FFFD once a complete character follows it. Only `end()` flushes a character cut off by
`max_new_tokens`, as U+FFFD, which is also what `tokenizer.decode` of the output gives.
"""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .arguments import FIRST_CHUNK, Setup, prepare
from .beam import beam_search
from .decoding import DecodeState, advance, full_recompute_logits, prefill
from .sampling import groups_by_length, select_next, stop_string_hits



@torch.no_grad()
def generate(
    model,
    inputs: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    prefix_allowed_tokens_fn: Callable | None = None,
    streamer=None,
    generator: torch.Generator | None = None,
    word_sync: bool | None = None,
    **kwargs,
) -> torch.LongTensor | GenerateDecoderOnlyOutput:
    r"""Generate bytes, batched and cached; the arguments are those of HF's `generate` (see the module docstring).

    Args:
        inputs (`torch.LongTensor` of shape `(B, T)`, *optional*): prompt bytes (or pass `input_ids=`), left padded.
        generation_config (`GenerationConfig`, *optional*): defaults to `model.generation_config`; keyword arguments
            override its fields (`max_new_tokens` counts bytes, `do_sample`, `temperature`, `top_k`, `top_p`,
            `num_beams`, `eos_token_id`, `stop_strings`, `use_cache`, `return_dict_in_generate`, `output_scores`, ...).
            Without `max_new_tokens` or `max_length`, 20 new bytes, with transformers' warning.
        logits_processor (`LogitsProcessorList`, *optional*): extra processors, applied as in HF's `generate`.
        stopping_criteria (`StoppingCriteriaList`, *optional*): extra criteria, called with `(input_ids, scores)`.
        streamer (`BaseStreamer`, *optional*): gets `put(prompt_ids)`, then `put(next_ids)` per step, then `end()`.
        generator (`torch.Generator`, *optional*): the random source for sampling (default: torch's global one).
        word_sync (`bool`, *optional*): let rows that completed a word wait for each other so that the backbone runs
            for many rows at once (`decoding`). Default: on for several rows unless a streamer, a custom
            processor / stopping criterion or a processor with per-batch state needs lockstep. `True` with custom
            processors or criteria: they must treat rows one by one (they get groups of rows of equal length).
        attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes, 0 for left padding.

    Returns:
        `torch.LongTensor` `(B, T + n)`, prompt and generated bytes, rows that finished early padded with
        `pad_token_id`; with `return_dict_in_generate=True` a `GenerateDecoderOnlyOutput` (`scores`, `logits`,
        `hidden_states` per step as asked: `hidden_states[i]` holds the decoder's states per layer, ARCHITECTURE.md
        §3.9, of the prompt for step 0, `(B, T, E)`, and of the newest byte after it, `(B, 1, E)`), or with
        `num_beams > 1` a `GenerateBeamDecoderOnlyOutput` (`beam.beam_search`).

    Raises:
        ValueError: right padding, an empty prompt row or batch, ids outside 0-255, lengths that are not positive
            ints, unknown or unimplemented options (each named).
    """
    setup = prepare(model, inputs, generation_config, logits_processor, stopping_criteria, prefix_allowed_tokens_fn,
                    streamer, generator, word_sync, kwargs)
    if setup.num_beams > 1:
        return beam_search(model, setup)
    if setup.streamer is not None:
        setup.streamer.put(setup.input_ids.cpu())
    progress = Progress.start(setup)
    if setup.use_cache:
        state, logits = prefill(model, setup.input_ids, setup.attention_mask, setup.want_hidden_states,
                               setup.input_ids.shape[1] + setup.max_new)
        hidden = state.hidden
    else:
        state = None
        logits, hidden = full_recompute_logits(model, setup.input_ids, setup.attention_mask, setup.want_hidden_states)
    sample = sample_word_sync if setup.word_sync else sample_lockstep
    ready = list(range(progress.batch_size))  # state rows that have next-byte logits (`logits`, in this order)
    while ready:
        next_ids, hits = sample(setup, progress, ready, logits, hidden)
        finished = progress.finish(setup, ready, next_ids, hits)
        if len(finished) == len(progress.active) or setup.timed_out():
            break
        step_rows, step_ids = leave(progress, state, ready, next_ids, finished)
        ready, logits, hidden = next_logits(model, setup, progress, state, step_rows, step_ids)
    if setup.streamer is not None:
        setup.streamer.end()
    return progress.output(setup)


# ----------------------------------------------------------------------------------------------------------
# The sequences so far
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The sequences being generated (prompt + bytes so far) and which rows still run. Batch rows keep their index;
    `active[r]` is the batch row of state row r (the unfinished rows, in order)."""

    sequences: torch.Tensor  # (B, C), `pad_id` after each row's last byte; C grows (`reserve`) up to T0 + max_new
    prompt_mask: torch.Tensor  # (B, T0), left padding
    limit: int  # T0 + max_new: the most columns there can be
    pad_id: int
    active: list[int]
    n_gen: list[int]  # bytes generated per batch row
    tails: list[bytearray]  # the last generated bytes per batch row, for stop strings
    tail_keep: int  # bytes of each tail that stop strings need
    # per step, as asked: "scores", "logits" (B, V); "hidden_states" a tuple of (B, t, E)
    steps: dict[str, list] = field(default_factory=dict)

    @classmethod
    def start(cls, setup: Setup) -> Progress:
        B, T0 = setup.input_ids.shape
        sequences = torch.full((B, T0 + min(setup.max_new, FIRST_CHUNK)), setup.pad_id, dtype=torch.long,
                               device=setup.input_ids.device)
        sequences[:, :T0] = setup.input_ids
        wanted = {"scores": setup.want_scores, "logits": setup.want_logits,
                  "hidden_states": setup.want_hidden_states}
        return cls(sequences, setup.attention_mask, T0 + setup.max_new, setup.pad_id, list(range(B)), [0] * B,
                   [bytearray() for _ in range(B)], max(map(len, setup.stop_strings), default=0),
                   {name: [] for name, want in wanted.items() if want})

    @property
    def batch_size(self) -> int:
        return self.sequences.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_mask.shape[1]

    def reserve(self, columns: int) -> None:
        """Make room for `columns` columns: double the buffer (at most to `limit`) when it is full."""
        C = self.sequences.shape[1]
        if columns > C:
            grown = self.sequences.new_full((self.batch_size, min(self.limit, max(columns, 2 * C))), self.pad_id)
            grown[:, :C] = self.sequences
            self.sequences = grown

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, T): the prompt's mask, then ones."""
        return torch.cat([self.prompt_mask, self.prompt_mask.new_ones(self.batch_size, T - self.prompt_length)], 1)

    def record(self, step: int, rows: torch.Tensor | None, **values) -> None:
        """Keep step `step`'s outputs as HF returns them: each (B, ...) per step; `rows` (n,): the batch rows of the
        n rows of each value (the others stay zero), None: the values are the whole batch's."""
        for name, value in values.items():
            if name not in self.steps or value is None:
                continue
            out = self.steps[name]
            while len(out) <= step:
                out.append(None)
            if isinstance(value, tuple):
                old = out[step] or (None,) * len(value)
                out[step] = tuple(self._put(o, rows, v) for o, v in zip(old, value))
            else:
                out[step] = self._put(out[step], rows, value)

    def _put(self, slot: torch.Tensor | None, rows: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        if rows is None and slot is None:
            return value
        if slot is None:
            slot = value.new_zeros(self.batch_size, *value.shape[1:])
        slot[rows if rows is not None else slice(None)] = value
        return slot

    def finish(self, setup: Setup, ready: list[int], next_ids: list[int], hits: list[bool]) -> set[int]:
        """Count the bytes just chosen for state rows `ready`; the state rows that finish with them (eos, the byte
        limit, a stopping criterion, a stop string)."""
        finished = set()
        for r, byte, hit in zip(ready, next_ids, hits):
            b = self.active[r]
            self.n_gen[b] += 1
            done = byte in setup.eos_ids or self.n_gen[b] >= setup.max_new or hit
            if setup.stop_strings:
                tail = self.tails[b]
                tail.append(byte)
                if len(tail) > 2 * self.tail_keep:
                    del tail[: -self.tail_keep]
                done = done or stop_string_hits([tail], setup.stop_strings)[0]
            if done:
                finished.add(r)
        return finished

    def output(self, setup: Setup) -> torch.LongTensor | GenerateDecoderOnlyOutput:
        sequences = self.sequences[:, : self.prompt_length + max(self.n_gen)]
        if not setup.config.return_dict_in_generate:
            return sequences
        steps = {name: tuple(values) for name, values in self.steps.items()}
        return GenerateDecoderOnlyOutput(sequences=sequences, scores=steps.get("scores"), logits=steps.get("logits"),
                                         hidden_states=steps.get("hidden_states"))


# ----------------------------------------------------------------------------------------------------------
# One step: choose a byte for each ready row, drop the finished rows, compute the next logits
# ----------------------------------------------------------------------------------------------------------
def sample_lockstep(setup: Setup, progress: Progress, ready: list[int], logits: torch.Tensor,
                    hidden: tuple[torch.Tensor, ...] | None):
    """One byte for every unfinished row, with HF's view of the whole batch: finished rows get zero logits, then
    `pad_id`. Returns the bytes of `ready` (every unfinished row, in order) and their stopping-criteria hits.
    `hidden`: the decoder's states of `ready` (`output_hidden_states`), recorded."""
    batch_rows = [progress.active[r] for r in ready]
    B, device = progress.batch_size, logits.device
    whole = len(batch_rows) == B  # every row is unfinished (they are in order)
    rows_t = torch.tensor(batch_rows, device=device)
    full = logits.float()
    if not whole:
        full = full.new_zeros(B, full.shape[-1]).index_copy(0, rows_t, full)  # (B, 256)
    step = progress.n_gen[batch_rows[0]]
    T = progress.prompt_length + step
    progress.reserve(T + 1)
    scores = setup.processors(progress.sequences[:, :T], full) if len(setup.processors) else full
    chosen = select_next(scores, setup.config.do_sample, setup.generator)  # (B,)
    progress.record(step, None, scores=scores, logits=full)
    progress.record(step, None if whole else rows_t, hidden_states=hidden)
    if not whole:
        chosen = chosen.index_select(0, rows_t)
    step_ids = chosen if whole else torch.full((B,), setup.pad_id, device=device).index_copy(0, rows_t, chosen)
    progress.sequences[:, T] = step_ids
    if setup.streamer is not None:
        setup.streamer.put(step_ids.cpu())
    hits = [False] * len(ready)
    if len(setup.criteria):
        hit = setup.criteria(progress.sequences[:, : T + 1], scores)
        hits = (hit if whole else hit.index_select(0, rows_t)).tolist()
    return chosen.tolist(), hits


def sample_word_sync(setup: Setup, progress: Progress, ready: list[int], logits: torch.Tensor,
                     hidden: tuple[torch.Tensor, ...] | None):
    """One byte for each ready row, rows of equal length sampled together (the processors being row-wise). Returns
    the bytes of `ready` and their stopping-criteria hits; records `hidden` (the decoder's states of `ready`)."""
    batch_rows = [progress.active[r] for r in ready]
    next_ids, hits = [0] * len(ready), [False] * len(ready)
    T0, device = progress.prompt_length, logits.device
    for n, members in groups_by_length([progress.n_gen[b] for b in batch_rows]).items():
        idx = torch.tensor(members, device=device)
        rows_t = torch.tensor([batch_rows[i] for i in members], device=device)
        progress.reserve(T0 + n + 1)
        group_logits = logits.index_select(0, idx).float()
        scores = setup.processors(progress.sequences[rows_t, : T0 + n], group_logits) if len(setup.processors) \
            else group_logits
        chosen = select_next(scores, setup.config.do_sample, setup.generator)
        progress.sequences[rows_t, T0 + n] = chosen
        for i, c in zip(members, chosen.tolist()):
            next_ids[i] = c
        if len(setup.criteria):
            for i, h in zip(members, setup.criteria(progress.sequences[rows_t, : T0 + n + 1], scores).tolist()):
                hits[i] = h
        # per step of the batch, as in lockstep
        progress.record(n, rows_t, scores=scores, logits=group_logits,
                        hidden_states=None if hidden is None else tuple(h.index_select(0, idx) for h in hidden))
    return next_ids, hits


def leave(progress: Progress, state: DecodeState | None, ready: list[int], next_ids: list[int],
          finished: set[int]) -> tuple[list[int], list[int]]:
    """Finished rows leave the batch (and its caches); the state rows that go on, renumbered, and their bytes."""
    keep = [r for r in range(len(progress.active)) if r not in finished]
    step_rows = [r for r in ready if r not in finished]
    step_ids = [byte for r, byte in zip(ready, next_ids) if r not in finished]
    if len(keep) < len(progress.active):
        new_index = {r: i for i, r in enumerate(keep)}
        progress.active = [progress.active[r] for r in keep]
        step_rows = [new_index[r] for r in step_rows]
        if state is not None:
            state.select_rows(keep)
    return step_rows, step_ids


def next_logits(model, setup: Setup, progress: Progress, state: DecodeState | None, step_rows: list[int],
                step_ids: list[int]) -> tuple[list[int], torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Append the chosen bytes; the state rows that have next-byte logits now, those logits (n, 256), and with
    `output_hidden_states` the decoder's states of their newest byte, per layer (n, 1, E)."""
    if state is not None:
        ready, logits = advance(model, state, step_rows, step_ids, setup.word_sync)
        return ready, logits, state.hidden
    rows_t = torch.tensor(progress.active, device=progress.sequences.device)
    T = progress.prompt_length + progress.n_gen[progress.active[0]]
    ids = progress.sequences[:, :T].index_select(0, rows_t)
    mask = progress.attention_mask(T).index_select(0, rows_t)
    logits, hidden = full_recompute_logits(model, ids, mask, setup.want_hidden_states)
    return list(range(len(progress.active))), logits, None if hidden is None else tuple(h[:, -1:] for h in hidden)
