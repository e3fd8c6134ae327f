"""`generate`'s arguments, checked and resolved (ARCHITECTURE.md §5): the prompt, the lengths as transformers resolves
them, the options HAT implements and those it refuses, with HF's helpers for config merging, processors and special
tokens."""

from __future__ import annotations

import numbers
import time
import warnings
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from .sampling import parse_stop_strings, row_wise

# `GenerationConfig` fields that select what HAT generate does not implement: the values that mean "off", and why.
_REFUSED: dict[str, tuple[tuple, str]] = {
    "num_beam_groups": ((None, 1), "diverse (group) beam search"),
    "diversity_penalty": ((None, 0.0), "diverse (group) beam search"),
    "constraints": ((None,), "constrained beam search"),
    "force_words_ids": ((None,), "constrained beam search"),
    "penalty_alpha": ((None,), "contrastive search"),
    "dola_layers": ((None,), "DoLa decoding"),
    "guidance_scale": ((None, 1, 1.0), "classifier-free guidance"),
    "watermarking_config": ((None,), "watermarking"),
    "token_healing": ((None, False), "token healing (byte prompts need none)"),
    "prompt_lookup_num_tokens": ((None,), "prompt lookup decoding"),
    "use_mtp": ((None, False), "speculative decoding"),
    "speculation_type": ((None,), "speculative decoding"),
    "continuous_batching_config": ((None,), "continuous batching"),
    "cache_implementation": ((None,), "transformers' caches: HAT keeps its own byte and word caches"),
    "cache_config": ((None,), "transformers' caches: HAT keeps its own byte and word caches"),
    "max_cache_len": ((None,), "transformers' caches: HAT keeps its own byte and word caches"),
    "prefill_chunk_size": ((None,), "chunked prefill"),
    "low_memory": ((None, False), "low-memory (sequential) beam search"),
    "output_attentions": ((None, False), "attention weights (the byte steps run fused attention)"),
}
# Columns of the output buffers beyond the prompt at the start; they double when full (memory follows the bytes
# generated, not `max_new_tokens`).
FIRST_CHUNK = 256
# Model inputs of HF's `generate` that HAT generate does not take.
_NO_CACHE_INPUTS = ("past_key_values", "cache", "return_legacy_cache", "cache_position", "position_ids")


@dataclass
class Setup:
    """`generate`'s arguments, validated: the prompt, the limits, how bytes are chosen and when rows stop."""

    input_ids: torch.Tensor  # (B, T0) on the model's device (each prompt num_return_sequences times, unless beams)
    attention_mask: torch.Tensor  # (B, T0), left padding
    config: GenerationConfig
    max_new: int  # bytes to generate at most per row (`config.max_length` - T0)
    processors: LogitsProcessorList
    criteria: StoppingCriteriaList
    eos_ids: set[int]
    pad_id: int
    stop_strings: list[bytes]
    use_cache: bool
    word_sync: bool
    streamer: object | None
    generator: torch.Generator | None
    deadline: float | None  # `time.monotonic()` after which every row stops (`max_time`)

    @property
    def want_scores(self) -> bool:
        return bool(self.config.return_dict_in_generate and self.config.output_scores)

    @property
    def want_logits(self) -> bool:
        return bool(self.config.return_dict_in_generate and self.config.output_logits)

    @property
    def want_hidden_states(self) -> bool:
        return bool(self.config.return_dict_in_generate and self.config.output_hidden_states)

    @property
    def num_beams(self) -> int:
        return self.config.num_beams or 1

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def prepare(model, inputs, generation_config, logits_processor, stopping_criteria, prefix_allowed_tokens_fn,
            streamer, generator, word_sync, kwargs: dict) -> Setup:
    """Check `generate`'s arguments and resolve them with HF's helpers (config merging, lengths, processors, special
    tokens).

    Raises:
        ValueError: a bad prompt, length, special byte or option combination, an unknown or unimplemented option.
    """
    input_ids, attention_mask = _prompt(model, inputs, kwargs)
    has_default_max_length, has_default_min_length = (
        kwargs.get(name) is None and (generation_config is None or getattr(generation_config, name) is None)
        and getattr(model.generation_config, name) is None
        for name in ("max_length", "min_length")
    )
    config = _generation_config(model, generation_config, kwargs)
    beams = config.num_beams or 1
    T0 = input_ids.shape[1]
    # transformers' rules: max_new_tokens wins over max_length (with a warning), and without either 20 new bytes
    model._prepare_generated_length(config, has_default_max_length, has_default_min_length, "input_ids", T0, input_ids)
    model._validate_generated_length(config, T0, has_default_max_length)
    _warn_long_prompt(model.config, int(attention_mask.sum(1).max()))

    if beams > 1:
        if streamer is not None:
            raise ValueError("a streamer cannot follow beam search (num_beams > 1): the best beam is known at the end")
        if word_sync:
            raise ValueError("word_sync applies to sampling and greedy decoding; beams always advance together")
        if generator is not None and config.do_sample:
            raise ValueError("beam sampling (num_beams > 1, do_sample=True) draws from torch's global generator; "
                             "seed it with torch.manual_seed instead of passing `generator`")
        if config.num_return_sequences and config.num_return_sequences > beams:
            raise ValueError(f"num_return_sequences ({config.num_return_sequences}) must be <= num_beams ({beams})")
        word_sync = False
    elif config.num_return_sequences and config.num_return_sequences > 1:
        if not config.do_sample:
            raise ValueError("num_return_sequences > 1 needs do_sample=True or num_beams > 1 (greedy decoding gives "
                             "equal copies)")
        input_ids = input_ids.repeat_interleave(config.num_return_sequences, 0)
        attention_mask = attention_mask.repeat_interleave(config.num_return_sequences, 0)
    B = input_ids.shape[0]

    model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device=input_ids.device, batch_size=B)
    eos = config._eos_token_tensor  # (n_eos,) or None
    pad = config._pad_token_tensor
    for name, ids in (("eos_token_id", eos), ("pad_token_id", pad)):
        if ids is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
            raise ValueError(f"{name} must be byte values 0-255, got {ids.tolist()}")
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
        input_ids=input_ids, attention_mask=attention_mask, config=config, max_new=config.max_length - T0,
        processors=processors, criteria=criteria, eos_ids=set(eos.tolist()) if eos is not None else set(),
        pad_id=int(pad) if pad is not None else 0, stop_strings=parse_stop_strings(config.stop_strings),
        use_cache=use_cache, word_sync=word_sync, streamer=streamer, generator=generator,
        deadline=None if config.max_time is None else time.monotonic() + config.max_time,
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
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a tensor of byte values, got {type(input_ids).__name__}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, bytes), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise ValueError(f"input_ids has no rows (shape {tuple(input_ids.shape)}): generate needs at least one prompt")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer byte values 0-255, got dtype {input_ids.dtype}")
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
    """HF's merge of the model's generation config, `generation_config` and the remaining keyword arguments, with
    every option checked: implemented, or refused naming it."""
    kwargs.pop("tokenizer", None)  # HF takes it for token-level stop strings; ours are byte-level
    kwargs.pop("token_type_ids", None)
    kwargs.pop("synced_gpus", None)
    for name in _NO_CACHE_INPUTS:
        if name in kwargs:
            raise ValueError(
                f"HAT generate does not take `{name}`: it builds its caches (byte rings, a word cache) from the "
                "prompt on every call and returns none; pass the whole sequence as input_ids"
            )
    if kwargs.pop("assistant_model", None) is not None:
        raise ValueError("HAT generate does not implement assisted decoding (assistant_model)")
    for name in ("max_new_tokens", "max_length", "min_new_tokens", "min_length"):
        if name in kwargs:
            kwargs[name] = _length(name, kwargs[name])
    config, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    model_kwargs.pop("output_hidden_states", None)  # kept on the config (`Setup.want_hidden_states`)
    model_kwargs.pop("output_attentions", None)  # refused below
    if model_kwargs:
        raise ValueError(f"generate got unknown arguments {sorted(model_kwargs)}")
    for name in ("max_new_tokens", "max_length"):  # also when they come from `generation_config`
        setattr(config, name, _length(name, getattr(config, name)))
    for name, (off, what) in _REFUSED.items():
        value = getattr(config, name, None)
        if not any(value is v or (not isinstance(value, bool) and v is not None and value == v) for v in off):
            raise ValueError(f"HAT generate does not implement {what}: {name}={value!r}")
    if isinstance(config.eos_token_id, (list, tuple)) and not config.eos_token_id:
        raise ValueError("eos_token_id=[] names no byte; pass eos_token_id=None to generate without an end byte")
    if config.num_beams is not None and (isinstance(config.num_beams, bool) or not isinstance(config.num_beams, int)
                                         or config.num_beams < 1):
        raise ValueError(f"num_beams must be an int >= 1, got {config.num_beams!r}")
    if config.max_time is not None and not (isinstance(config.max_time, (int, float)) and config.max_time >= 0):
        raise ValueError(f"max_time must be a number of seconds >= 0, got {config.max_time!r}")
    return config


def _length(name: str, value):
    """A length argument as an int (None stays None): ints only, >= 1 for the maxima, >= 0 for the minima."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int (a number of bytes), got {value!r}")
    low = 1 if name.startswith("max") else 0
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _warn_long_prompt(config, prompt_bytes: int) -> None:
    """Warn when the prompt is longer than the byte stacks' `max_position_embeddings` (ARCHITECTURE.md §5)."""
    limit = min(config.encoder_config.max_position_embeddings, config.decoder_config.max_position_embeddings)
    if prompt_bytes > limit:
        warnings.warn(
            f"the prompt has {prompt_bytes} bytes, more than the byte stacks' max_position_embeddings ({limit}); "
            "the model was not trained on positions this large (its byte attention stays within the sliding window, "
            "so outputs are defined, but may be worse)",
            UserWarning, stacklevel=4,
        )

