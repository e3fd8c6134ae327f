"""`HATForCausalLM`: byte encoder -> word pooling -> Llama 3.1 backbone -> word-to-byte decoder.

    input_ids (B, T) bytes
      -> encoder: byte embedding + sliding-window Llama layers over bytes          byte_states (B, T, E)
      -> encoder connector: a learned query per word cross-attends to its bytes    word_embeds (B, W, D)
      -> backbone: Llama 3.1 blocks over words (no embedding / final norm / head)  word_states (B, W, D)
      -> decoder connector: shift right by one word, learned first-word vector     word_preds  (B, W, D)
      -> decoder: per layer, add word_preds[word of byte] (cross-attention with one key), then a
         sliding-window Llama layer over bytes; final RMSNorm                      byte_states (B, T, E)
      -> lm_head                                                                   byte_logits (B, T, 256)

Word boundaries come from the splitter (`hat.splitter.word_lengths_from_bytes`) when the caller does not pass
`word_lengths`, so TRL's trainers, which pass only `input_ids` / `attention_mask`, train the model as it is.

In memory the byte-level stack lives in `HATModel` (`model.model`) so that `model.model(...).last_hidden_state`
times `model.lm_head.weight` are the logits (TRL's fused LM head relies on it). On disk the keys are the
release's (`encoder.*`, `backbone.layers.N.*`, `decoder.decoder_layers.N.*`, `lm_head.weight`, ...): a
registered `WeightRenaming` adds the `model.` prefix on load and removes it on save.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .config import MODEL_TYPE, HATConfig
from .generation import generate as generate_bytes
from .generation.hidden_states import decoder_hidden_states, recording_decoder_layers
from .model.modeling import HATModel, HATPreTrainedModel
from .model.parts import disk_name, memory_name, weight_renaming


class HATForCausalLM(HATPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {}

    def __init__(self, config: HATConfig):
        super().__init__(config)
        self.model = HATModel(config)
        self.lm_head = nn.Linear(config.decoder_config.hidden_size, config.decoder_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.encoder.embedding_layer

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.encoder.embedding_layer = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        r"""`PreTrainedModel.from_pretrained`, strict about the checkpoint's tensors: one that the model has and the
        checkpoint lacks (it would be randomly initialised) or one that the checkpoint has and the model does not (it
        would be dropped: e.g. a config with fewer layers than the weights) is an error naming the tensors.

        Args:
            strict (`bool`, *optional*, defaults to `True`): `False` loads a partial checkpoint deliberately, as
                transformers does (missing tensors initialised, unexpected ones ignored, both in its load report).
                Tensors of the wrong shape are refused either way unless `ignore_mismatched_sizes=True`.

        Raises:
            ValueError: with `strict`, tensors missing from the checkpoint or unexpected in it (on-disk names).
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                              **kwargs)
        if strict:
            _check_loaded(info, pretrained_model_name_or_path)
        return (model, info) if want_info else model

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, also for the release's key names as they are on disk: `Trainer` reads a
        checkpoint's safetensors with those names when it resumes a run without DeepSpeed."""
        state_dict = {memory_name(key): value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        word_lengths: Sequence[Sequence[int]] | torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | None = None,
        position_ids: torch.LongTensor | None = None,
        objective: Callable[..., CausalLMOutputWithPast] | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): byte values.
            attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes.
            labels (`torch.LongTensor` of shape `(B, T)`, *optional*): next-byte targets, shifted inside as in every
                HF causal LM; -100 (and padding) is ignored.
            word_lengths (`list[list[int]]` or `torch.LongTensor` of shape `(B, W)`, *optional*): bytes per word of
                each row (a tensor right-padded with 0, as the data collator gives it); split when omitted.
            logits_to_keep (`int`, *optional*): only compute the last `logits_to_keep` positions' logits (0: all).
            output_hidden_states (`bool`, *optional*): return `hidden_states`, the decoder's byte states per layer:
                `decoder_config.num_hidden_layers + 1` tensors `(B, T, E)`, the decoder's input (the encoder's byte
                states), each decoder layer's output, the last one after the final norm (`lm_head` of it is
                `logits`); ARCHITECTURE.md §3.9. Default `config.output_hidden_states`; otherwise `hidden_states` is
                None.
            position_ids (`torch.LongTensor` of shape `(B, T)`, *optional*): packed documents where they restart at 0,
                as TRL's padding-free batches give them, also `cu_seq_lens_q` / `seq_idx` (`HATModel.forward`);
                each document is then scored as if alone.
            objective (`Callable`, *optional*): a training objective that composes the step methods itself, called
                as `objective(self, input_ids=..., attention_mask=..., labels=..., word_lengths=..., **kwargs)`
                instead of the forward below (teacher-guided stage 1, ARCHITECTURE.md §7.2). It runs inside this
                call so that the wrappers around the model (DDP, DeepSpeed) see a forward, as they must to reduce
                gradients.

        Raises:
            ValueError: `output_attentions=True` (attention weights are not returned).
        """
        if objective is not None:
            return objective(self, input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                             word_lengths=word_lengths, **kwargs)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        if kwargs.get("output_attentions"):
            raise ValueError("HATForCausalLM does not return attention weights (output_attentions=True)")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        packing = {key: kwargs[key] for key in ("cu_seq_lens_q", "seq_idx") if kwargs.get(key) is not None}
        hidden_states = None
        with recording_decoder_layers(self.model) if output_hidden_states else nullcontext() as recorded:
            outputs = self.model(input_ids, attention_mask=attention_mask, word_lengths=word_lengths,
                                 position_ids=position_ids, **packing)
        if output_hidden_states:
            hidden_states = decoder_hidden_states(outputs.encoder_hidden_state, recorded, outputs.last_hidden_state)
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # (B, T, 256)

        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, -100)
            loss = self.loss_function(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden_states)

    @torch.no_grad()
    def generate(
        self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
        prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None, **kwargs,
    ):
        """HF's `generate` arguments, byte by byte: batched, with byte- and word-level KV caches (`hat.generation`)."""
        return generate_bytes(
            self, inputs, generation_config, logits_processor, stopping_criteria,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, streamer=streamer, assistant_model=assistant_model,
            **kwargs,
        )


def _check_loaded(info: dict, source) -> None:
    """Raise if transformers' loading info has missing or unexpected tensors (named as on disk)."""

    def listed(keys) -> str:
        names = sorted(disk_name(k) for k in keys)
        return f"{names[:8]}{f' ... ({len(names)} in all)' if len(names) > 8 else ''}"

    problems = []
    if info["missing_keys"]:
        problems.append(f"lacks {len(info['missing_keys'])} tensor(s) of the model, which would be randomly "
                        f"initialised: {listed(info['missing_keys'])}")
    if info["unexpected_keys"]:
        problems.append(f"has {len(info['unexpected_keys'])} tensor(s) the model does not, which would be dropped: "
                        f"{listed(info['unexpected_keys'])}")
    if problems:
        raise ValueError(
            f"{source}: the checkpoint {'; and '.join(problems)}. Is its config.json the one these weights were saved "
            "with? Pass strict=False to from_pretrained to load a partial checkpoint deliberately."
        )


# ----------------------------------------------------------------------------------------------------------
# Registration: Auto classes and the on-disk key names of the release.
# ----------------------------------------------------------------------------------------------------------
def _register() -> None:
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )
    AutoConfig.register(MODEL_TYPE, HATConfig, exist_ok=True)
    AutoModel.register(HATConfig, HATModel, exist_ok=True)
    AutoModelForCausalLM.register(HATConfig, HATForCausalLM, exist_ok=True)
    if get_checkpoint_conversion_mapping("HATForCausalLM") is None:
        register_checkpoint_conversion_mapping("HATForCausalLM", weight_renaming())


_register()
