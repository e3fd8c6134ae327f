"""Teacher-guided stage 1 (ARCHITECTURE.md §7.2): the source Llama tells the new byte modules, at every word, what
the frozen backbone should receive and what should come next.

    collator = TeacherCollator(HATDataCollator(...), teacher_tokenizer, trie, special_ids)   # in the data pipeline
    guidance = TeacherGuidance(teacher, trie, args)                                          # in the trainer
    loss, metrics = guidance.loss(model, batch, step)

The loss has three terms, each with its weight in the recipe's YAML:
- **encoder**: the pooled word vectors, pushed through the first `teacher_layers` frozen blocks, are matched
  (L2 / sqrt(d), relative to the RMS of the teacher's states) to the teacher's state after those blocks at the
  token that ends the word (aligned words only; word 0, the backbone's attention sink, is left out). Only those
  blocks run backward for it.
- **byte cross-entropy**, with the decoder conditioned first on the teacher's own last-block state at each word
  ("oracle"), then, over `handoff_steps`, moved linearly onto the HAT's own backbone output. While the teacher's
  states condition the decoder, bytes whose word follows an unaligned one are masked out. With
  `detach_own_states` the HAT's own backbone output reaches the decoder without a gradient: no backward runs
  through the backbone, and the pooled words keep learning from the encoder loss alone.
- **distillation**: KL from the teacher's next-byte distributions (`hat.recipes.distill`) at every byte whose
  token the teacher predicted.

After `teacher_steps` the recipe trains on plain byte cross-entropy (the trainer's ordinary loss), where the
backbone can unfreeze at `backbone_lr_ratio` as without a teacher.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast

from hat.teacher import HATTeacher

from .alignment import align_batch
from .distill import SpellingTrie, byte_distillation, chunk_distillation, state_matching
from .teacher_cache import TeacherCache, TeacherRow, row_key

# Keys the collator adds; the model's own forward never sees them.
TEACHER_KEYS = ("teacher_input_ids", "teacher_attention_mask", "word_token", "distill_token", "distill_node")
DISTILL_LOSSES = ("byte_marginals", "first_byte", "chunk", "none")


def teacher_word_states(states: torch.Tensor, word_token: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
    """The teacher's state for each word: at the latest aligned token ending at or before the word's end.
    states (B, N, D), word_token (B, W) (-1: not aligned), aligned (B, W) -> (B, W, D)."""
    latest = torch.where(aligned, word_token, torch.full_like(word_token, -1)).cummax(1).values.clamp(min=0)
    return states[torch.arange(len(states), device=states.device)[:, None], latest]


class TeacherCollator:
    """Adds the teacher's tokens and their alignment with the HAT's words and bytes to a `HATDataCollator` batch.

    Args:
        collator (`HATDataCollator`): makes `input_ids`, `attention_mask`, `labels` and `word_lengths` (right padded).
        tokenizer: the source Llama's fast tokenizer (`teacher/` in the checkpoint).
        trie (`SpellingTrie`): the teacher's token spellings.
        special_ids (`dict[int, int]`): HAT special byte -> teacher token id (`alignment.teacher_special_ids`).
        spellings (`list[bytes]`): `alignment.token_spellings(tokenizer)`.
    """

    def __init__(self, collator, tokenizer, trie: SpellingTrie, special_ids: dict[int, int], spellings):
        self.collator, self.tokenizer, self.trie = collator, tokenizer, trie
        self.special_ids, self.spellings = special_ids, spellings

    def __call__(self, features):
        batch = self.collator(features)
        ids, mask, lengths = batch["input_ids"], batch["attention_mask"].bool(), batch["word_lengths"]
        if bool((mask[:, :-1] < mask[:, 1:]).any()):
            raise ValueError("TeacherCollator needs right-padded rows (the HAT collator's default)")
        rows = [bytes(ids[b, : int(mask[b].sum())].tolist()) for b in range(len(ids))]
        word_lengths = [[int(n) for n in row if n > 0] for row in lengths.tolist()]
        aligned = align_batch(rows, word_lengths, self.tokenizer, self.spellings, self.special_ids)
        # byte q (predicted at position q - 1) lies in token t at offset j: the teacher predicted t at position t - 1
        token = aligned.byte_token  # (B, T)
        offset = torch.arange(token.shape[1])[None] - aligned.byte_token_start  # (B, T)
        token_id = aligned.token_ids.gather(1, token.clamp(min=0))  # (B, T)
        node = torch.where(token >= 1, self.trie.node(token_id, offset), torch.full_like(token, -1))
        # shift: position p carries the target for byte p + 1
        batch["distill_token"] = F.pad((token - 1).where(node >= 0, torch.full_like(token, -1))[:, 1:], (0, 1), value=-1)
        batch["distill_node"] = F.pad(node[:, 1:], (0, 1), value=-1)
        batch["teacher_input_ids"], batch["teacher_attention_mask"] = aligned.token_ids, aligned.token_mask
        batch["word_token"] = aligned.word_token
        return batch


@dataclass
class GuidanceWeights:
    """The YAML's teacher-guidance fields (see `PretrainConfig`)."""

    teacher_layers: int = 4
    encoder_loss_weight: float = 1.0
    ce_loss_weight: float = 1.0
    distill_loss: str = "byte_marginals"
    distill_loss_weight: float = 1.0
    oracle_steps: int = 0
    handoff_steps: int = 0
    detach_own_states: bool = True

    def __post_init__(self):
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {DISTILL_LOSSES}, got {self.distill_loss!r}")
        for name in ("teacher_layers", "oracle_steps", "handoff_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class TeacherGuidance:
    """The teacher-guided loss of one batch (see the module docstring)."""

    def __init__(self, teacher: HATTeacher, trie: SpellingTrie, weights: GuidanceWeights,
                 cache: TeacherCache | None = None):
        self.teacher, self.trie, self.w = teacher, trie, weights
        self.cache = cache if cache is not None else TeacherCache(0)  # what the teacher said about rows seen before
        self.metrics: dict[str, float] = {}  # the terms of the last loss, for logging

    @property
    def byte_targets(self) -> bool:
        """Whether the distillation term reads the teacher's next-byte distributions (kept with each row)."""
        return self.w.distill_loss in ("byte_marginals", "first_byte") and bool(self.w.distill_loss_weight)

    def teacher_rows(self, hat, batch: dict, targets: bool) -> list[TeacherRow]:
        """The teacher's view of each row of `batch` (`TeacherRow`): from the cache where the row was seen before,
        else from one teacher pass over the rows that were not (and, with `targets`, their next-byte targets)."""
        lengths = batch["attention_mask"].sum(1).tolist()
        keys = [row_key(batch["input_ids"][b, :n]) for b, n in enumerate(lengths)]
        rows = [self.cache.get(key) for key in keys]
        rows = [row if row is not None and (row.byte_targets is not None or not targets) else None for row in rows]
        missing = [b for b, row in enumerate(rows) if row is None]
        if missing:
            if self.teacher.embed_tokens.weight.device != batch["input_ids"].device:
                self.teacher.to(batch["input_ids"].device)
            for b, row in zip(missing, self._compute_rows(hat, batch, missing, targets), strict=True):
                self.cache.put(keys[b], row)
                rows[b] = row
        device = batch["input_ids"].device
        return [row.to(device) for row in rows]

    def _compute_rows(self, hat, batch: dict, missing: list[int], targets: bool) -> list[TeacherRow]:
        ids, mask = batch["teacher_input_ids"][missing], batch["teacher_attention_mask"][missing]
        n = mask.sum(1).tolist()
        width = max(n)
        encoder = bool(self.w.encoder_loss_weight)
        out = self.teacher(hat, ids[:, :width], mask[:, :width], layer=self.w.teacher_layers if encoder else None,
                           return_logits=False)
        rows = [TeacherRow(last=out.last_hidden_state[i, : n[i]],
                           layer=out.layer_hidden_state[i, : n[i]] if encoder else None)
                for i in range(len(missing))]
        if targets:  # every byte whose token the teacher predicted: one head pass over the rows' distinct tokens
            token, node = batch["distill_token"][missing], batch["distill_node"][missing]  # (M, T)
            usable = (node >= 0) & (token >= 0)
            usable[:, -1] = False
            if self.w.distill_loss == "first_byte":
                usable &= node == 0
            i, p = usable.nonzero(as_tuple=True)
            needed, row_index = torch.unique(i * width + token[i, p], return_inverse=True)
            teacher_logits = self.teacher.next_token_logits(out.last_hidden_state.flatten(0, 1)[needed])  # (R, V)
            byte_targets = self.trie.byte_targets(teacher_logits, row_index, node[i, p])  # (P, 256)
            for r, row in enumerate(rows):
                row.target_positions, row.byte_targets = p[i == r], byte_targets[i == r]
        return rows

    @staticmethod
    def byte_target_rows(rows: list[TeacherRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows' next-byte targets in one list: row index (P,), position (P,), target distribution (P, 256)."""
        b = torch.cat([torch.full_like(row.target_positions, i) for i, row in enumerate(rows)])
        p = torch.cat([row.target_positions for row in rows])
        return b, p, torch.cat([row.byte_targets for row in rows])

    @staticmethod
    def _padded(rows: list[TeacherRow], field: str, length: int) -> torch.Tensor:
        """One field of the rows, right padded with zeros to `length` tokens: (B, length, D)."""
        return torch.stack([F.pad(t, (0, 0, 0, length - len(t))) for t in (getattr(row, field) for row in rows)])

    def own_fraction(self, step: int) -> float:
        """How much of the decoder's conditioning is the HAT's own backbone output (the rest: the teacher's)."""
        if step < self.w.oracle_steps:
            return 0.0
        if self.w.handoff_steps == 0:
            return 1.0
        return min(1.0, (step - self.w.oracle_steps + 1) / self.w.handoff_steps)

    def objective(self, step: int):
        """The loss of `step` as a `HATForCausalLM.forward` objective: `model(**batch, objective=...)`."""
        return functools.partial(self._objective, step=step)

    def _objective(self, model, step: int, **batch) -> CausalLMOutputWithPast:
        loss, self.metrics = self.loss(model, batch, step)
        return CausalLMOutputWithPast(loss=loss)

    def loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The teacher-guided loss of one batch (the collator's fields) at optimizer step `step`, and its terms."""
        hat = model.model
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        layout = hat.layout(ids, mask, batch["word_lengths"])
        dtype = hat.get_input_embeddings().weight.dtype
        word_mask = layout.word_mask(dtype)  # (B, 1, W, W)
        k = self.w.teacher_layers
        teacher_rows = self.teacher_rows(hat, batch, targets=self.byte_targets)
        n_tokens = batch["teacher_input_ids"].shape[1]
        last_states = self._padded(teacher_rows, "last", n_tokens)  # (B, N, D)
        word_token = batch["word_token"]  # (B, W) -1: not aligned
        aligned = (word_token >= 0) & layout.word_valid  # (B, W)
        rows = torch.arange(len(ids), device=ids.device)[:, None]

        # Encoder: bytes -> pooled word vectors
        windows = hat.config.encoder_config.sliding_window, hat.config.decoder_config.sliding_window
        byte_mask = layout.byte_mask(windows[0], dtype)
        byte_states = hat.encode(ids, byte_mask, layout.byte_positions)  # (B, T, E)
        word_embeds = hat.pool(byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                               layout.word_positions)  # (B, W, D)
        metrics, loss = {}, byte_states.new_zeros(())
        student = None  # the output of the first k blocks, once computed (the own backbone pass continues from it)

        # Encoder loss through the first k frozen blocks
        if self.w.encoder_loss_weight:
            matched = aligned.clone()
            matched[:, 0] = False  # word 0 is the backbone's attention sink: its states are huge and carry nothing
            student = hat.run_backbone(word_embeds, word_mask, layout.word_positions, num_layers=k) if k else word_embeds
            target = self._padded(teacher_rows, "layer", n_tokens)[rows, word_token.clamp(min=0)]  # (B, W, D)
            # relative to the teacher states' size, so that the term weighs the same at any width or depth k
            scale = state_matching(torch.zeros_like(target), target, matched).clamp(min=1e-6)
            enc = state_matching(student, target, matched) / scale
            loss = loss + self.w.encoder_loss_weight * enc
            metrics["encoder_loss"] = float(enc.detach())

        # Decoder conditioning: the teacher's state at the latest token ending at or before each word's end
        own = self.own_fraction(step)
        teacher_words = teacher_word_states(last_states, word_token, aligned).to(dtype)  # (B, W, D)
        if own > 0:
            # detach_own_states: the decoder's loss stops at the backbone output, so no backward runs through the
            # backbone and the pooled words learn from the encoder loss alone (§7.2)
            with torch.no_grad() if self.w.detach_own_states else contextlib.nullcontext():
                if student is None:
                    own_states = hat.run_backbone(word_embeds, word_mask, layout.word_positions)
                else:  # blocks k.. from where the encoder loss stopped: the first k blocks run once
                    own_states = hat.run_backbone(student, word_mask, layout.word_positions, first_layer=k)
            word_states = own * own_states + (1 - own) * teacher_words
        else:
            word_states = teacher_words
        decoder_mask = byte_mask if windows[1] == windows[0] else layout.byte_mask(windows[1], dtype)
        hidden = hat.decode(byte_states, hat.word_conditioning(hat.predict_words(word_states)), layout.byte_word,
                            decoder_mask, layout.byte_positions)  # (B, T, E)
        logits = model.lm_head(hidden)  # (B, T, 256)

        # Byte cross-entropy: position p predicts byte p + 1
        targets = labels[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, T-1)
        if own < 1:  # bytes conditioned on an unaligned word's (approximate) teacher state carry no loss
            conditioning_word = (layout.byte_word[:, :-1] - 1).clamp(min=0)
            trusted = aligned.gather(1, conditioning_word) | (layout.byte_word[:, :-1] == 0)
            targets = targets.masked_fill(~trusted, -100)
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        loss = loss + self.w.ce_loss_weight * ce
        metrics["byte_ce"] = float(ce.detach())

        # Distillation from the teacher's next-token distributions
        if self.w.distill_loss != "none" and self.w.distill_loss_weight:
            distill = self._distillation(logits, batch, layout, teacher_rows, last_states, targets)
            loss = loss + self.w.distill_loss_weight * distill
            metrics["distill_loss"] = float(distill.detach())
        metrics["own_fraction"] = own
        return loss, metrics

    @torch.no_grad()
    def oracle_nll(self, model, batch: dict) -> tuple[float, int]:
        """Summed byte NLL (nats) and the number of bytes scored, with the decoder conditioned on the teacher's state
        at every word (the latest token ending at or before the word's end): the teacher-conditioned score."""
        hat = model.model
        ids, mask = batch["input_ids"], batch["attention_mask"]
        layout = hat.layout(ids, mask, batch["word_lengths"])
        dtype = hat.get_input_embeddings().weight.dtype
        last_states = self._padded(self.teacher_rows(hat, batch, targets=False), "last", batch["teacher_input_ids"].shape[1])
        word_token = batch["word_token"]
        aligned = (word_token >= 0) & layout.word_valid
        byte_mask = layout.byte_mask(hat.config.encoder_config.sliding_window, dtype)
        byte_states = hat.encode(ids, byte_mask, layout.byte_positions)
        words = teacher_word_states(last_states, word_token, aligned).to(dtype)  # (B, W, D)
        hidden = hat.decode(byte_states, hat.word_conditioning(hat.predict_words(words)), layout.byte_word,
                            layout.byte_mask(hat.config.decoder_config.sliding_window, dtype), layout.byte_positions)
        logits = model.lm_head(hidden)[:, :-1].float()
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        return float(nll), int((targets != -100).sum())

    def _distillation(self, logits, batch, layout, teacher_rows, teacher_states, targets) -> torch.Tensor:
        if self.w.distill_loss == "chunk":  # the log-likelihood of each aligned word under teacher and student
            return self._chunk(logits, batch, layout, teacher_states, targets)
        # the teacher's next-byte distribution at every byte whose token it predicted (first_byte: its first byte),
        # kept with each row (never at the last position); those whose byte has no loss this step are left out
        b, p, byte_targets = self.byte_target_rows(teacher_rows)
        keep = targets[b, p] != -100
        return byte_distillation(logits[b[keep], p[keep]], byte_targets[keep])

    def _chunk(self, logits, batch, layout, teacher_states, targets) -> torch.Tensor:
        B = logits.shape[0]
        token_ids = batch["teacher_input_ids"]
        teacher_logits = self.teacher.next_token_logits(teacher_states[:, :-1])  # (B, N-1, V)
        token_lp = F.log_softmax(teacher_logits.float(), -1).gather(-1, token_ids[:, 1:, None])[..., 0]  # (B, N-1)
        cum = F.pad(token_lp.cumsum(1), (2, 0))  # cum[:, t + 1] = log p(tokens 1..t)
        word_token = batch["word_token"]
        prev = F.pad(word_token[:, :-1], (1, 0), value=-1)
        chunk_ok = (word_token >= 1) & (prev >= 0) & layout.word_valid  # both ends aligned, a teacher prediction
        teacher_chunk = cum.gather(1, word_token.clamp(min=0) + 1) - cum.gather(1, prev.clamp(min=0) + 1)
        log_probs = F.log_softmax(logits[:, :-1].float(), -1)
        byte_lp = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets != -100)  # (B, T-1)
        word_of_target = layout.byte_word[:, 1:]
        student_chunk = torch.zeros(B, word_token.shape[1], device=logits.device).scatter_add(1, word_of_target, byte_lp)
        scored = torch.zeros_like(student_chunk).scatter_add(1, word_of_target, (targets != -100).float())
        chunk_ok &= scored == layout.word_bytes_valid.sum(-1)
        return chunk_distillation(student_chunk, teacher_chunk, chunk_ok)
