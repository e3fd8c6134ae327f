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
for throughput the rows should not even move in lockstep (`hat.decoding`). Squeezing this into `forward` would hide a second
loop, the word segmentation and three caches behind `prepare_inputs_for_generation`, with HF slicing `input_ids` by
`cache_position` around it. Here each part is a small function over an explicit `hat.decoding.DecodeState`.

The decoding steps themselves (prefill, encoder step, backbone step, decoder step, word boundaries, caches and how
rows that finished a word wait for each other, "word sync") are `hat.decoding`. Lockstep (every row waits for every
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

from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation import logits_process as lp
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .decoding import advance, full_recompute_logits, prefill

# Options of HF's `generate` that byte-level sampling does not implement, with their "off" values.
_UNSUPPORTED = {
    "num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "guidance_scale": None, "assistant_model": None,
    "prompt_lookup_num_tokens": None, "constraints": None, "force_words_ids": None, "watermarking_config": None,
}
# Processors that treat rows independently and keep no per-batch state: rows may be sampled in any grouping.
_ROW_WISE_PROCESSORS = tuple(
    getattr(lp, name) for name in (
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper",
        "EpsilonLogitsWarper", "EtaLogitsWarper", "TopHLogitsWarper", "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor", "SuppressTokensLogitsProcessor", "InfNanRemoveLogitsProcessor",
        "LogitNormalization", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
        "SequenceBiasLogitsProcessor",
    ) if hasattr(lp, name)
)


# ----------------------------------------------------------------------------------------------------------
# Sampling and stopping
# ----------------------------------------------------------------------------------------------------------
def select_next(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """scores (B, V) after the processors -> next ids (B,): argmax, or a draw from softmax(scores)."""
    if not do_sample:
        return scores.argmax(-1)
    probs = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def stop_string_hits(tails: list[bytearray], stop_strings: list[bytes]) -> list[bool]:
    """Whether each row's generated bytes end with one of `stop_strings` (byte-level, so any UTF-8 works)."""
    return [any(tail.endswith(s) for s in stop_strings) for tail in tails]


def _stop_strings(value) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        value = [value]
    out = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in value]
    if any(not s for s in out):
        raise ValueError(f"stop_strings must be non-empty, got {value!r}")
    return out


# ----------------------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------------------
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
            for many rows at once (`hat.decoding`). Default: on for several rows unless a streamer, a custom
            processor / stopping criterion or a processor with per-batch state needs lockstep. `True` with custom
            processors or criteria: they must treat rows one by one (they get groups of rows of equal length).
        attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes, 0 for left padding.

    Returns:
        `torch.LongTensor` `(B, T + n)`, prompt and generated bytes, rows that finished early padded with
        `pad_token_id` (or a `GenerateDecoderOnlyOutput` with `return_dict_in_generate=True`).

    Raises:
        ValueError: right padding, an empty prompt row, ids outside 0-255, unknown or unsupported arguments.
    """
    input_ids = kwargs.pop("input_ids", None)
    if inputs is not None and input_ids is not None:
        raise ValueError("pass the prompt as `inputs` or `input_ids`, not both")
    input_ids = inputs if inputs is not None else input_ids
    attention_mask = kwargs.pop("attention_mask", None)
    kwargs.pop("tokenizer", None)  # HF takes it for token-level stop strings; ours are byte-level
    kwargs.pop("token_type_ids", None)
    kwargs.pop("synced_gpus", None)
    for name, default in _UNSUPPORTED.items():
        if kwargs.get(name, default) not in (default, None):
            raise ValueError(f"HAT generate does not support {name}={kwargs[name]!r}")
    kwargs.pop("assistant_model", None)

    generation_config, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    for key in ("output_attentions", "output_hidden_states"):
        model_kwargs.pop(key, None)
    if model_kwargs:
        raise ValueError(f"generate got unknown arguments {sorted(model_kwargs)}")
    for name, default in _UNSUPPORTED.items():
        if getattr(generation_config, name, default) not in (default, None):
            raise ValueError(f"HAT generate does not support {name}={getattr(generation_config, name)!r}")

    # Inputs
    if input_ids is None:
        raise ValueError("generate needs a prompt: `input_ids` of shape (batch, bytes)")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    device = model.device
    input_ids = input_ids.to(device)
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > 255):
        raise ValueError(f"input_ids must be byte values 0-255, got [{int(input_ids.min())}, {int(input_ids.max())}]")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    mask_cpu = attention_mask.bool().cpu()
    if not mask_cpu.any(1).all():
        raise ValueError(f"rows {mask_cpu.any(1).logical_not().nonzero().flatten().tolist()} of the prompt are empty")
    if (mask_cpu[:, 1:].long() - mask_cpu[:, :-1].long()).lt(0).any():
        raise ValueError("generate needs left padding: use tokenizer(..., padding=True, padding_side='left')")
    if generation_config.num_return_sequences and generation_config.num_return_sequences > 1:
        if not generation_config.do_sample:
            raise ValueError("num_return_sequences > 1 needs do_sample=True (greedy decoding gives equal copies)")
        input_ids = input_ids.repeat_interleave(generation_config.num_return_sequences, 0)
        attention_mask = attention_mask.repeat_interleave(generation_config.num_return_sequences, 0)
    B, T0 = input_ids.shape

    # Limits, special tokens, processors, stopping
    if generation_config.max_new_tokens is not None:
        max_new = generation_config.max_new_tokens
    else:
        max_new = generation_config.max_length - T0
    if max_new < 1:
        raise ValueError(
            f"nothing to generate: max_new_tokens={generation_config.max_new_tokens}, max_length="
            f"{generation_config.max_length}, prompt length {T0}; set max_new_tokens >= 1 (bytes)"
        )
    model._prepare_special_tokens(generation_config, kwargs_has_attention_mask=True, device=device, batch_size=B)
    eos = generation_config._eos_token_tensor  # (n_eos,) or None
    eos_ids = set(eos.tolist()) if eos is not None else set()
    pad_id = generation_config._pad_token_tensor
    pad_id = int(pad_id) if pad_id is not None else 0
    processors = model._get_logits_processor(
        generation_config=generation_config, input_ids_seq_length=T0, encoder_input_ids=input_ids,
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, logits_processor=logits_processor, device=device,
        model_kwargs={"attention_mask": attention_mask},
    )
    stops = _stop_strings(generation_config.stop_strings)
    criteria = stopping_criteria if stopping_criteria is not None else StoppingCriteriaList()
    use_cache = generation_config.use_cache is not False
    want_scores = generation_config.return_dict_in_generate and generation_config.output_scores
    want_logits = generation_config.return_dict_in_generate and generation_config.output_logits
    # Word sync needs the cache, and processors / criteria that treat rows one by one (they then get groups of rows
    # of equal length); by default it is on where that holds for sure.
    if word_sync and (not use_cache or (streamer is not None and B > 1)):
        raise ValueError("word_sync=True needs use_cache=True and, with a streamer, a single row")
    if word_sync is None:
        word_sync = (
            B > 1 and use_cache and streamer is None and not criteria and prefix_allowed_tokens_fn is None
            and not logits_processor and all(isinstance(p, _ROW_WISE_PROCESSORS) for p in processors)
        )

    # Prefill
    if streamer is not None:
        streamer.put(input_ids.cpu())
    buffer = torch.full((B, T0 + max_new), pad_id, dtype=torch.long, device=device)  # prompt + generated bytes
    buffer[:, :T0] = input_ids
    mask_buffer = torch.ones(B, T0 + max_new, dtype=attention_mask.dtype, device=device)
    mask_buffer[:, :T0] = attention_mask
    if use_cache:
        state, logits = prefill(model, input_ids, attention_mask)
    else:
        state, logits = None, full_recompute_logits(model, input_ids, attention_mask)
    active = list(range(B))  # batch row of each state row (unfinished rows)
    ready = list(range(B))  # state rows that have next-byte logits (`logits`, in this order)
    n_gen = [0] * B  # bytes generated per batch row
    tails = [bytearray() for _ in range(B)]  # generated bytes per batch row, for stop strings
    scores_out, logits_out = [], []

    while ready:
        # Sample one byte for each ready row. Lockstep: every unfinished row, and HF's view of the whole batch
        # (finished rows get zero logits, then pad). Word sync: rows grouped by length, the processors being row-wise.
        batch_rows = [active[r] for r in ready]
        if not word_sync:
            whole = len(batch_rows) == B  # every row is unfinished (they are in order)
            rows_t = torch.tensor(batch_rows, device=device)
            full = logits.float()
            if not whole:
                full = full.new_zeros(B, full.shape[-1]).index_copy(0, rows_t, full)  # (B, 256)
            T = T0 + n_gen[batch_rows[0]]
            scores = processors(buffer[:, :T], full) if len(processors) else full
            chosen = select_next(scores, generation_config.do_sample, generator)  # (B,)
            if want_scores:
                scores_out.append(scores)
            if want_logits:
                logits_out.append(full)
            if not whole:
                chosen = chosen.index_select(0, rows_t)
            step_ids = chosen if whole else torch.full((B,), pad_id, device=device).index_copy(0, rows_t, chosen)
            buffer[:, T] = step_ids
            next_list = chosen.tolist()
            if streamer is not None:
                streamer.put(step_ids.cpu())
            if len(criteria):
                hits = criteria(buffer[:, : T + 1], scores)
                hits = (hits if whole else hits.index_select(0, rows_t)).tolist()
        else:
            next_list, hits = [0] * len(ready), [False] * len(ready)
            groups: dict[int, list[int]] = {}
            for i, b in enumerate(batch_rows):
                groups.setdefault(n_gen[b], []).append(i)
            for n, members in groups.items():
                idx = torch.tensor(members, device=device)
                rows_t = torch.tensor([batch_rows[i] for i in members], device=device)
                scores = logits.index_select(0, idx).float()
                scores = processors(buffer[rows_t, : T0 + n], scores) if len(processors) else scores
                chosen = select_next(scores, generation_config.do_sample, generator)
                buffer[rows_t, T0 + n] = chosen
                for i, c in zip(members, chosen.tolist()):
                    next_list[i] = c
                if len(criteria):
                    for i, h in zip(members, criteria(buffer[rows_t, : T0 + n + 1], scores).tolist()):
                        hits[i] = h
                for out, values in ((scores_out, scores if want_scores else None),
                                    (logits_out, logits.index_select(0, idx).float() if want_logits else None)):
                    if values is not None:  # per step of the batch, as in lockstep (rows not there: zeros)
                        while len(out) <= n:
                            out.append(values.new_zeros(B, values.shape[-1]))
                        out[n][rows_t] = values

        # Which rows finish with this byte
        finished = []
        for i, (b, byte) in enumerate(zip(batch_rows, next_list)):
            n_gen[b] += 1
            done = byte in eos_ids or n_gen[b] >= max_new or (len(criteria) > 0 and bool(hits[i]))
            if stops:
                tails[b].append(byte)
                done = done or stop_string_hits([tails[b]], stops)[0]
            finished.append(done)
        done_rows = {ready[i] for i, f in enumerate(finished) if f}
        keep = [r for r in range(len(active)) if r not in done_rows]
        if not keep:
            break
        step_rows = [ready[i] for i, f in enumerate(finished) if not f]
        step_ids = [next_list[i] for i, f in enumerate(finished) if not f]
        if len(keep) < len(active):  # finished rows leave the batch (and its caches)
            new_index = {r: i for i, r in enumerate(keep)}
            active = [active[r] for r in keep]
            step_rows = [new_index[r] for r in step_rows]
            if state is not None:
                state.select_rows(keep)

        # Next logits
        if use_cache:
            ready, logits = advance(model, state, step_rows, step_ids, word_sync)
        else:
            ready = list(range(len(active)))
            rows_t = torch.tensor(active, device=device)
            T = T0 + n_gen[active[0]]
            logits = full_recompute_logits(
                model, buffer[:, :T].index_select(0, rows_t), mask_buffer[:, :T].index_select(0, rows_t)
            )

    if streamer is not None:
        streamer.end()
    sequences = buffer[:, : T0 + max(n_gen)]
    if generation_config.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(scores_out) if want_scores else None,
            logits=tuple(logits_out) if want_logits else None,
        )
    return sequences
