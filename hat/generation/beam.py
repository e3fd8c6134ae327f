"""Beam search over bytes (ARCHITECTURE.md §5): `num_beams`, `length_penalty`, `early_stopping`,
`num_return_sequences <= num_beams`, greedy or sampled, with the caches.

The search is transformers' own (its vectorised `_beam_search` of 5.x): each step the `num_beams` running beams of a
prompt offer their `K = max(2, 1 + n_eos) * num_beams` best continuations; those that end (eos, the byte limit, a stop
string or criterion) become finished hypotheses scored `sum log p / generated_bytes ** length_penalty`, the best
`num_beams` others run on, and the search ends as `early_stopping` says. The step functions are transformers'
(`_get_top_k_continuations`, `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
`_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`), so scores, ties and stopping are HF's; what
is HAT's is where the logits come from:

- cached: the prompt is prefilled once per prompt, its state rows duplicated for the beams; after each step every
  state row (the byte rings, the word cache, the encoder states, each row's word boundaries) is replaced by the row
  of the beam it continues (`DecodeState.select_rows`), then the beams advance one byte each, in lockstep;
- `use_cache=False`: every step runs the full forward on every beam (the reference the tests compare with).

Buffers grow with the bytes generated (doubling), never with `max_new_tokens` up front.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.generation.utils import GenerateBeamDecoderOnlyOutput

from .arguments import FIRST_CHUNK, Setup
from .decoding import advance, full_recompute_logits, prefill


@torch.no_grad()
def beam_search(model, setup: Setup) -> torch.LongTensor | GenerateBeamDecoderOnlyOutput:
    """Beam search for each prompt of `setup` (B prompts, `num_beams` beams each).

    Returns:
        `torch.LongTensor` `(B * num_return_sequences, T0 + n)`, the best hypotheses of each prompt, best first,
        padded with `pad_token_id`; or with `return_dict_in_generate=True` a `GenerateBeamDecoderOnlyOutput`:
        `sequences_scores` (with `output_scores`), `scores` (per step the processed log-probabilities
        `(B * num_beams, 256)`), `logits`, `hidden_states` as asked, and `beam_indices`
        `(B * num_return_sequences, n)` (the beam row each byte was chosen from, -1 after a hypothesis' end), which
        `model.compute_transition_scores` reads.
    """
    cfg = setup.config
    nb, (B, T0) = setup.num_beams, setup.input_ids.shape
    N, device = B * nb, setup.input_ids.device
    n_eos = len(setup.eos_ids)
    K = max(2, 1 + n_eos) * nb
    top_num_beam_mask = torch.arange(K, device=device) < nb
    mask = setup.attention_mask.repeat_interleave(nb, 0)  # (N, T0)

    # HF's search state, (B, beams, ...): running beams and the finished hypotheses (best first)
    cap = T0 + min(setup.max_new, FIRST_CHUNK)
    running_sequences = torch.full((B, nb, cap), setup.pad_id, dtype=torch.long, device=device)
    running_sequences[:, :, :T0] = setup.input_ids[:, None]
    sequences = running_sequences.clone()
    running_beam_scores = torch.zeros(B, nb, device=device)
    running_beam_scores[:, 1:] = -1e9  # only the first beam's continuations count at the first step
    beam_scores = torch.full((B, nb), -1e9, device=device)
    is_sent_finished = torch.zeros(B, nb, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    running_beam_indices = torch.full((B, nb, cap - T0), -1, dtype=torch.int32, device=device)
    beam_indices = running_beam_indices.clone()
    steps: dict[str, list] = {name: [] for name, want in (("scores", setup.want_scores), ("logits", setup.want_logits),
                                                          ("hidden_states", setup.want_hidden_states)) if want}

    expand = torch.arange(B, device=device).repeat_interleave(nb)  # (N,) the prompt of each beam
    if setup.use_cache:
        state, logits = prefill(model, setup.input_ids, setup.attention_mask, setup.want_hidden_states,
                               setup.input_ids.shape[1] + setup.max_new)
        state.select_rows(expand.tolist())
        logits, hidden = logits[expand], None if state.hidden is None else tuple(h[expand] for h in state.hidden)
    else:
        state = None
        logits, hidden = full_recompute_logits(model, setup.input_ids[expand], mask, setup.want_hidden_states)

    cur_len = T0
    while True:
        logits = logits.float()
        log_probs = F.log_softmax(logits, dim=-1)  # (N, 256)
        if len(setup.processors):
            log_probs = setup.processors(running_sequences.view(N, -1)[:, :cur_len], log_probs)
        for name, value in (("scores", log_probs), ("logits", logits), ("hidden_states", hidden)):
            if name in steps:
                steps[name].append(value)
        accumulated = (log_probs.view(B, nb, -1) + running_beam_scores[:, :, None]).view(B, -1)  # (B, nb * 256)

        if cur_len + 1 > running_sequences.shape[-1]:  # grow the buffers (doubling)
            extra = min(T0 + setup.max_new, 2 * running_sequences.shape[-1]) - running_sequences.shape[-1]
            running_sequences, sequences = (F.pad(t, (0, extra), value=setup.pad_id) for t in (running_sequences,
                                                                                                sequences))
            running_beam_indices, beam_indices = (F.pad(t, (0, extra), value=-1) for t in (running_beam_indices,
                                                                                            beam_indices))
        topk_log_probs, topk_sequences, topk_beam_indices = model._get_top_k_continuations(
            accumulated_log_probs=accumulated, running_sequences=running_sequences,
            running_beam_indices=running_beam_indices, cur_len=cur_len, decoder_prompt_len=T0,
            do_sample=cfg.do_sample, beams_to_keep=K, num_beams=nb, batch_size=B,
        )  # (B, K), (B, K, C), (B, K, C - T0)
        hits = _candidates_end(setup, topk_sequences, cur_len, T0, steps.get("scores"))  # (B, K)
        running_sequences, running_beam_scores, running_beam_indices = model._get_running_beams_for_next_iteration(
            topk_log_probs=topk_log_probs, topk_running_sequences=topk_sequences,
            topk_running_beam_indices=topk_beam_indices, next_token_hits_stopping_criteria=hits, num_beams=nb,
        )
        sequences, beam_scores, beam_indices, is_sent_finished = model._update_finished_beams(
            sequences=sequences, topk_running_sequences=topk_sequences, beam_scores=beam_scores,
            topk_log_probs=topk_log_probs, beam_indices=beam_indices, topk_running_beam_indices=topk_beam_indices,
            is_early_stop_heuristic_unsatisfied=improvable, is_sent_finished=is_sent_finished,
            next_token_hits_stopping_criteria=hits, top_num_beam_mask=top_num_beam_mask, num_beams=nb,
            cur_len=cur_len, decoder_prompt_len=T0, length_penalty=cfg.length_penalty,
            early_stopping=cfg.early_stopping,
        )
        parents = running_beam_indices[:, :, cur_len - T0].flatten()  # (N,) the beam row each new beam continues
        next_ids = running_sequences[:, :, cur_len].flatten()  # (N,)
        cur_len += 1
        improvable = model._check_early_stop_heuristic(
            is_early_stop_heuristic_unsatisfied=improvable, running_beam_scores=running_beam_scores,
            beam_scores=beam_scores, is_sent_finished=is_sent_finished, cur_len=cur_len, max_length=cfg.max_length,
            decoder_prompt_len=T0, early_stopping=cfg.early_stopping, length_penalty=cfg.length_penalty,
        )
        if not model._beam_search_has_unfinished_sequences(improvable, is_sent_finished, hits, cfg.early_stopping):
            break

        # The next logits: each beam continues its parent's row with its byte
        if state is not None:
            state.select_rows(parents.tolist())
            ready, logits = advance(model, state, list(range(N)), next_ids.tolist(), word_sync=False)
            hidden = state.hidden
        else:
            ids = running_sequences.view(N, -1)[:, :cur_len]
            step_mask = torch.cat([mask, mask.new_ones(N, cur_len - T0)], dim=1)
            logits, hidden = full_recompute_logits(model, ids, step_mask, setup.want_hidden_states)
            hidden = None if hidden is None else tuple(h[:, -1:] for h in hidden)

    # The best `num_return_sequences` hypotheses of each prompt, cut to the longest one
    n_return = cfg.num_return_sequences or 1
    sequences = sequences[:, :n_return].flatten(0, 1)
    beam_scores = beam_scores[:, :n_return].flatten()
    beam_indices = beam_indices[:, :n_return].flatten(0, 1)
    n_generated = int((beam_indices >= 0).sum(1).max())
    sequences, beam_indices = sequences[:, : T0 + n_generated], beam_indices[:, :n_generated]
    if not cfg.return_dict_in_generate:
        return sequences
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences, sequences_scores=beam_scores if cfg.output_scores else None,
        scores=_steps(steps, "scores"), logits=_steps(steps, "logits"), beam_indices=beam_indices,
        hidden_states=_steps(steps, "hidden_states"),
    )


def _candidates_end(setup: Setup, topk_sequences: torch.Tensor, cur_len: int, T0: int,
                    scores: list | None) -> torch.Tensor:
    """topk_sequences (B, K, C), each candidate's bytes with its new one at `cur_len` -> (B, K) whether it ends
    there: eos, the byte limit, `max_time`, a stop string in its generated bytes, a stopping criterion."""
    B, K, _ = topk_sequences.shape
    new = topk_sequences[:, :, cur_len]  # (B, K)
    if cur_len + 1 - T0 >= setup.max_new or setup.timed_out():
        return torch.ones(B, K, dtype=torch.bool, device=new.device)
    hits = torch.zeros(B, K, dtype=torch.bool, device=new.device)
    for eos in setup.eos_ids:
        hits |= new == eos
    if setup.stop_strings:
        keep = max(map(len, setup.stop_strings))
        tails = topk_sequences[:, :, max(T0, cur_len + 1 - keep) : cur_len + 1].flatten(0, 1).tolist()
        hits |= torch.tensor([any(bytes(t).endswith(s) for s in setup.stop_strings) for t in tails],
                             device=new.device).view(B, K)
    if len(setup.criteria):  # as HF calls them: the candidates' sequences, and the scores so far (or None)
        hits |= setup.criteria(topk_sequences[:, :, : cur_len + 1].flatten(0, 1),
                               None if scores is None else tuple(scores)).view(B, K).to(hits.device)
    return hits


def _steps(steps: dict[str, list], name: str) -> tuple | None:
    return tuple(steps[name]) if name in steps else None
