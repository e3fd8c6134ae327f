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
`return_dict_in_generate`, `output_scores` / `output_logits`, `num_return_sequences`) and reuses HF's pieces:
`_prepare_generation_config` (model config + global defaults + kwargs), `_get_logits_processor` (temperature, top-k,
top-p, min-p, repetition penalty, min_new_tokens, ...), `StoppingCriteriaList`, and the streamer protocol
(`put(prompt)`, `put(next_ids)`, `end()`). `max_new_tokens` counts bytes; `stop_strings` match bytes.

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

from .decoding import DecodeState, advance, full_recompute_logits, prefill
from .sampling import groups_by_length, parse_stop_strings, row_wise, select_next, stop_string_hits

# Options of HF's `generate` that byte-level sampling does not implement, with their "off" values.
_UNSUPPORTED = {
    "num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "guidance_scale": None, "assistant_model": None,
    "prompt_lookup_num_tokens": None, "constraints": None, "force_words_ids": None, "watermarking_config": None,
}


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
            `eos_token_id`, `stop_strings`, `use_cache`, `return_dict_in_generate`, `output_scores`, ...).
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
        `pad_token_id` (or a `GenerateDecoderOnlyOutput` with `return_dict_in_generate=True`).

    Raises:
        ValueError: right padding, an empty prompt row, ids outside 0-255, unknown or unsupported arguments.
    """
    setup = prepare(model, inputs, generation_config, logits_processor, stopping_criteria, prefix_allowed_tokens_fn,
                    streamer, generator, word_sync, kwargs)
    if setup.streamer is not None:
        setup.streamer.put(setup.input_ids.cpu())
    progress = Progress.start(setup)
    if setup.use_cache:
        state, logits = prefill(model, setup.input_ids, setup.attention_mask)
    else:
        state, logits = None, full_recompute_logits(model, setup.input_ids, setup.attention_mask)
    sample = sample_word_sync if setup.word_sync else sample_lockstep
    ready = list(range(progress.batch_size))  # state rows that have next-byte logits (`logits`, in this order)
    while ready:
        next_ids, hits = sample(setup, progress, ready, logits)
        finished = progress.finish(setup, ready, next_ids, hits)
        if len(finished) == len(progress.active):
            break
        step_rows, step_ids = leave(progress, state, ready, next_ids, finished)
        ready, logits = next_logits(model, setup, progress, state, step_rows, step_ids)
    if setup.streamer is not None:
        setup.streamer.end()
    return progress.output(setup)


# ----------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """`generate`'s arguments, validated: the prompt, the limits, how bytes are chosen and when rows stop."""

    input_ids: torch.Tensor  # (B, T0) on the model's device (each prompt `num_return_sequences` times)
    attention_mask: torch.Tensor  # (B, T0), left padding
    config: GenerationConfig
    max_new: int  # bytes to generate at most per row
    processors: LogitsProcessorList
    criteria: StoppingCriteriaList
    eos_ids: set[int]
    pad_id: int
    stop_strings: list[bytes]
    use_cache: bool
    word_sync: bool
    streamer: object | None
    generator: torch.Generator | None

    @property
    def want_scores(self) -> bool:
        return bool(self.config.return_dict_in_generate and self.config.output_scores)

    @property
    def want_logits(self) -> bool:
        return bool(self.config.return_dict_in_generate and self.config.output_logits)


def prepare(model, inputs, generation_config, logits_processor, stopping_criteria, prefix_allowed_tokens_fn,
            streamer, generator, word_sync, kwargs: dict) -> Setup:
    """Check `generate`'s arguments and resolve them with HF's helpers (config merging, processors, special tokens)."""
    input_ids, attention_mask = _prompt(model, inputs, kwargs)
    config = _generation_config(model, generation_config, kwargs)
    if config.num_return_sequences and config.num_return_sequences > 1:
        if not config.do_sample:
            raise ValueError("num_return_sequences > 1 needs do_sample=True (greedy decoding gives equal copies)")
        input_ids = input_ids.repeat_interleave(config.num_return_sequences, 0)
        attention_mask = attention_mask.repeat_interleave(config.num_return_sequences, 0)
    B, T0 = input_ids.shape
    max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - T0
    if max_new < 1:
        raise ValueError(
            f"nothing to generate: max_new_tokens={config.max_new_tokens}, max_length={config.max_length}, prompt "
            f"length {T0}; set max_new_tokens >= 1 (bytes)"
        )

    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device=input_ids.device, batch_size=B)
    eos = config._eos_token_tensor  # (n_eos,) or None
    pad = config._pad_token_tensor
    processors = model._get_logits_processor(
        generation_config=config, input_ids_seq_length=T0, encoder_input_ids=input_ids,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, logits_processor=logits_processor,
        device=input_ids.device, model_kwargs={"attention_mask": attention_mask},
    )
    criteria = stopping_criteria if stopping_criteria is not None else StoppingCriteriaList()
    use_cache = config.use_cache is not False
    # Word sync needs the cache, and processors / criteria that treat rows one by one (they then get groups of rows
    # of equal length); by default it is on where that holds for sure.
    if word_sync and (not use_cache or (streamer is not None and B > 1)):
        raise ValueError("word_sync=True needs use_cache=True and, with a streamer, a single row")
    if word_sync is None:
        word_sync = (B > 1 and use_cache and streamer is None and not criteria and prefix_allowed_tokens_fn is None
                     and not logits_processor and row_wise(processors))
    return Setup(
        input_ids=input_ids, attention_mask=attention_mask, config=config, max_new=max_new, processors=processors,
        criteria=criteria, eos_ids=set(eos.tolist()) if eos is not None else set(),
        pad_id=int(pad) if pad is not None else 0, stop_strings=parse_stop_strings(config.stop_strings),
        use_cache=use_cache, word_sync=word_sync, streamer=streamer, generator=generator,
    )


def _prompt(model, inputs, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt (`inputs` or `input_ids=`) and its attention mask from `kwargs`, on the model's device, checked."""
    input_ids = kwargs.pop("input_ids", None)
    if inputs is not None and input_ids is not None:
        raise ValueError("pass the prompt as `inputs` or `input_ids`, not both")
    input_ids = inputs if inputs is not None else input_ids
    attention_mask = kwargs.pop("attention_mask", None)
    if input_ids is None:
        raise ValueError("generate needs a prompt: `input_ids` of shape (batch, bytes)")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    input_ids = input_ids.to(model.device)
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > 255):
        raise ValueError(f"input_ids must be byte values 0-255, got [{int(input_ids.min())}, {int(input_ids.max())}]")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(model.device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    mask = attention_mask.bool().cpu()
    if not mask.any(1).all():
        raise ValueError(f"rows {mask.any(1).logical_not().nonzero().flatten().tolist()} of the prompt are empty")
    if (mask[:, 1:].long() - mask[:, :-1].long()).lt(0).any():
        raise ValueError("generate needs left padding: use tokenizer(..., padding=True, padding_side='left')")
    return input_ids, attention_mask


def _generation_config(model, generation_config, kwargs: dict) -> GenerationConfig:
    """HF's merge of the model's generation config, `generation_config` and the remaining keyword arguments."""
    kwargs.pop("tokenizer", None)  # HF takes it for token-level stop strings; ours are byte-level
    kwargs.pop("token_type_ids", None)
    kwargs.pop("synced_gpus", None)
    for name, default in _UNSUPPORTED.items():
        if kwargs.get(name, default) not in (default, None):
            raise ValueError(f"HAT generate does not support {name}={kwargs[name]!r}")
    kwargs.pop("assistant_model", None)
    config, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    for key in ("output_attentions", "output_hidden_states"):
        model_kwargs.pop(key, None)
    if model_kwargs:
        raise ValueError(f"generate got unknown arguments {sorted(model_kwargs)}")
    for name, default in _UNSUPPORTED.items():
        if getattr(config, name, default) not in (default, None):
            raise ValueError(f"HAT generate does not support {name}={getattr(config, name)!r}")
    return config


# ----------------------------------------------------------------------------------------------------------
# The sequences so far
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The sequences being generated (prompt + bytes so far) and which rows still run. Batch rows keep their index;
    `active[r]` is the batch row of state row r (the unfinished rows, in order)."""

    sequences: torch.Tensor  # (B, T0 + max_new), `pad_id` after each row's last byte
    attention_mask: torch.Tensor  # (B, T0 + max_new)
    prompt_length: int
    active: list[int]
    n_gen: list[int]  # bytes generated per batch row
    tails: list[bytearray]  # generated bytes per batch row, for stop strings
    scores: list[torch.Tensor] = field(default_factory=list)  # per step (B, V), with `output_scores`
    logits: list[torch.Tensor] = field(default_factory=list)  # per step (B, V), with `output_logits`

    @classmethod
    def start(cls, setup: Setup) -> Progress:
        B, T0 = setup.input_ids.shape
        sequences = torch.full((B, T0 + setup.max_new), setup.pad_id, dtype=torch.long, device=setup.input_ids.device)
        sequences[:, :T0] = setup.input_ids
        mask = torch.ones(B, T0 + setup.max_new, dtype=setup.attention_mask.dtype, device=setup.input_ids.device)
        mask[:, :T0] = setup.attention_mask
        return cls(sequences, mask, T0, list(range(B)), [0] * B, [bytearray() for _ in range(B)])

    @property
    def batch_size(self) -> int:
        return self.sequences.shape[0]

    def record(self, setup: Setup, step: int, rows: torch.Tensor | None, scores: torch.Tensor, logits: torch.Tensor):
        """Keep step `step`'s scores and logits for the output as HF does: (B, V) per step; `rows` (n,): only those
        rows' (the others stay zero), None: the whole batch's."""
        for out, values, wanted in ((self.scores, scores, setup.want_scores), (self.logits, logits, setup.want_logits)):
            if not wanted:
                continue
            if rows is None and len(out) == step:
                out.append(values)
                continue
            while len(out) <= step:
                out.append(values.new_zeros(self.batch_size, values.shape[-1]))
            out[step][rows if rows is not None else slice(None)] = values

    def finish(self, setup: Setup, ready: list[int], next_ids: list[int], hits: list[bool]) -> set[int]:
        """Count the bytes just chosen for state rows `ready`; the state rows that finish with them (eos, the byte
        limit, a stopping criterion, a stop string)."""
        finished = set()
        for r, byte, hit in zip(ready, next_ids, hits):
            b = self.active[r]
            self.n_gen[b] += 1
            done = byte in setup.eos_ids or self.n_gen[b] >= setup.max_new or hit
            if setup.stop_strings:
                self.tails[b].append(byte)
                done = done or stop_string_hits([self.tails[b]], setup.stop_strings)[0]
            if done:
                finished.add(r)
        return finished

    def output(self, setup: Setup) -> torch.LongTensor | GenerateDecoderOnlyOutput:
        sequences = self.sequences[:, : self.prompt_length + max(self.n_gen)]
        if not setup.config.return_dict_in_generate:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(self.scores) if setup.want_scores else None,
            logits=tuple(self.logits) if setup.want_logits else None,
        )


# ----------------------------------------------------------------------------------------------------------
# One step: choose a byte for each ready row, drop the finished rows, compute the next logits
# ----------------------------------------------------------------------------------------------------------
def sample_lockstep(setup: Setup, progress: Progress, ready: list[int], logits: torch.Tensor):
    """One byte for every unfinished row, with HF's view of the whole batch: finished rows get zero logits, then
    `pad_id`. Returns the bytes of `ready` (every unfinished row, in order) and their stopping-criteria hits."""
    batch_rows = [progress.active[r] for r in ready]
    B, device = progress.batch_size, logits.device
    whole = len(batch_rows) == B  # every row is unfinished (they are in order)
    rows_t = torch.tensor(batch_rows, device=device)
    full = logits.float()
    if not whole:
        full = full.new_zeros(B, full.shape[-1]).index_copy(0, rows_t, full)  # (B, 256)
    step = progress.n_gen[batch_rows[0]]
    T = progress.prompt_length + step
    scores = setup.processors(progress.sequences[:, :T], full) if len(setup.processors) else full
    chosen = select_next(scores, setup.config.do_sample, setup.generator)  # (B,)
    progress.record(setup, step, None, scores, full)
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


def sample_word_sync(setup: Setup, progress: Progress, ready: list[int], logits: torch.Tensor):
    """One byte for each ready row, rows of equal length sampled together (the processors being row-wise). Returns
    the bytes of `ready` and their stopping-criteria hits."""
    batch_rows = [progress.active[r] for r in ready]
    next_ids, hits = [0] * len(ready), [False] * len(ready)
    T0, device = progress.prompt_length, logits.device
    for n, members in groups_by_length([progress.n_gen[b] for b in batch_rows]).items():
        idx = torch.tensor(members, device=device)
        rows_t = torch.tensor([batch_rows[i] for i in members], device=device)
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
        progress.record(setup, n, rows_t, scores, group_logits)  # per step of the batch, as in lockstep
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
                step_ids: list[int]) -> tuple[list[int], torch.Tensor]:
    """Append the chosen bytes; the state rows that have next-byte logits now, and those logits (n, 256)."""
    if state is not None:
        return advance(model, state, step_rows, step_ids, setup.word_sync)
    rows_t = torch.tensor(progress.active, device=progress.sequences.device)
    T = progress.prompt_length + progress.n_gen[progress.active[0]]
    ids = progress.sequences[:, :T].index_select(0, rows_t)
    mask = progress.attention_mask[:, :T].index_select(0, rows_t)
    return list(range(len(progress.active))), full_recompute_logits(model, ids, mask)
