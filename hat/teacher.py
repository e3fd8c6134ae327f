"""The source Llama, kept beside a converted HAT: its token embedding, final norm, LM head and tokenizer
(ARCHITECTURE.md §6.3). With the HAT's own backbone (the Llama's blocks, unchanged) they *are* the source model,
at the cost of one embedding table and one head, not a second copy of the blocks:

    teacher = HATTeacher.from_pretrained("outputs/smollm2-135m-hat/teacher")
    logits = teacher(model, token_ids, attention_mask).logits            # == the source Llama's logits
    out = teacher(model, token_ids, attention_mask, layer=4)             # + the states after the first 4 blocks

Teacher-guided stage-1 training (`hat.recipes.pretrain`, §7.2) runs it to know what the backbone should receive
and what should come next; the eval report uses it to score the source model without loading it again.

On disk (`convert-llama` writes it unless `--no-teacher`), a folder `teacher/` inside the HAT checkpoint:

    teacher/config.json           {"format": "hat-teacher", "version": 1, "source": ..., "vocab_size": V,
                                   "hidden_size": D, "rms_norm_eps": ..., "tie_word_embeddings": ...}
    teacher/model.safetensors     embed_tokens.weight (V, D), norm.weight (D,), lm_head.weight (V, D) unless tied
                                  (or shards and model.safetensors.index.json, split as --max-shard-size says)
    teacher/tokenizer.json, ...   the source's tokenizer (`save_pretrained`)

The HAT's own loaders ignore the folder; a released TFree-HAT checkpoint has none (it has no source to keep).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import ModelOutput
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .model.layout import additive_mask, causal_mask

TEACHER_DIR = "teacher"
FORMAT = "hat-teacher"
VERSION = 1


def teacher_config(vocab_size: int, hidden_size: int, rms_norm_eps: float, tie_word_embeddings: bool,
                   source: str = "") -> dict:
    """The contents of `teacher/config.json`."""
    return {"format": FORMAT, "version": VERSION, "source": source, "vocab_size": vocab_size,
            "hidden_size": hidden_size, "rms_norm_eps": rms_norm_eps, "tie_word_embeddings": tie_word_embeddings}


@dataclass
class TeacherOutput(ModelOutput):
    """Output of [`HATTeacher`].

    Args:
        logits (`torch.Tensor` of shape `(B, N, V)`): next-token logits (None unless asked for).
        last_hidden_state (`torch.Tensor` of shape `(B, N, D)`): the last block's output, before the final norm.
        layer_hidden_state (`torch.Tensor` of shape `(B, N, D)`): the output of the first `layer` blocks.
    """

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    layer_hidden_state: torch.Tensor | None = None


class HATTeacher(nn.Module):
    """The source Llama's token embedding, final norm and LM head; the blocks are the HAT's backbone.

    Args:
        vocab_size (`int`), hidden_size (`int`), rms_norm_eps (`float`), tie_word_embeddings (`bool`): the source's.
        source (`str`): where the weights came from (for the model card and error messages).
    """

    def __init__(self, vocab_size: int, hidden_size: int, rms_norm_eps: float, tie_word_embeddings: bool,
                 source: str = ""):
        super().__init__()
        self.source = source
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.norm = LlamaRMSNorm(hidden_size, eps=rms_norm_eps)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.tie_word_embeddings = tie_word_embeddings
        if tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.requires_grad_(False)

    # ------------------------------------------------------------------------------------------- files
    def config_dict(self) -> dict:
        return teacher_config(self.embed_tokens.num_embeddings, self.embed_tokens.embedding_dim,
                              self.norm.variance_epsilon, self.tie_word_embeddings, self.source)

    @classmethod
    def from_llama(cls, llama, source: str = "") -> HATTeacher:
        """The teacher parts of a `LlamaForCausalLM` (copies of its tensors, same dtype)."""
        cfg = llama.config
        teacher = cls(cfg.vocab_size, cfg.hidden_size, cfg.rms_norm_eps, bool(cfg.tie_word_embeddings), source)
        teacher.load_tensors({"embed_tokens.weight": llama.model.embed_tokens.weight,
                              "norm.weight": llama.model.norm.weight, "lm_head.weight": llama.lm_head.weight})
        return teacher.to(llama.model.embed_tokens.weight.dtype)

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy `embed_tokens.weight`, `norm.weight` and (untied) `lm_head.weight` in, checking every shape.

        Raises:
            ValueError: a tensor is missing, unexpected or of the wrong shape.
        """
        expected = {"embed_tokens.weight": self.embed_tokens.weight, "norm.weight": self.norm.weight}
        if not self.tie_word_embeddings:
            expected["lm_head.weight"] = self.lm_head.weight
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ValueError(f"teacher tensors missing: {missing}")
        for name, param in expected.items():
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise ValueError(f"teacher tensor {name}: shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}")
            param.data = tensors[name].detach().clone().to(param.device)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def save_pretrained(self, path: str | os.PathLike, tokenizer=None) -> None:
        """Write `config.json`, `model.safetensors` and the tokenizer's files into `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"embed_tokens.weight": self.embed_tokens.weight, "norm.weight": self.norm.weight}
        if not self.tie_word_embeddings:
            tensors["lm_head.weight"] = self.lm_head.weight
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / "model.safetensors"),
                  metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype | None = None) -> HATTeacher:
        """Load a `teacher/` folder (or a HAT checkpoint that holds one).

        Raises:
            FileNotFoundError: no teacher files there (convert again without `--no-teacher`).
            ValueError: not a teacher folder of a version this code reads, or tensors that do not fit.
        """
        path = Path(path)
        if not (path / "config.json").is_file() or (path / TEACHER_DIR / "config.json").is_file():
            path = path / TEACHER_DIR
        index = path / "model.safetensors.index.json"
        if not (path / "config.json").is_file() or not ((path / "model.safetensors").is_file() or index.is_file()):
            raise FileNotFoundError(
                f"{path}: no teacher files (config.json + model.safetensors); `convert-llama` writes them beside "
                "the HAT checkpoint unless it is run with --no-teacher"
            )
        config = json.loads((path / "config.json").read_text())
        if config.get("format") != FORMAT or config.get("version") != VERSION:
            raise ValueError(f"{path / 'config.json'}: not a {FORMAT} v{VERSION} config "
                             f"(format {config.get('format')!r}, version {config.get('version')!r})")
        teacher = cls(config["vocab_size"], config["hidden_size"], config["rms_norm_eps"],
                      config["tie_word_embeddings"], config.get("source", ""))
        if index.is_file():  # sharded (convert-llama --max-shard-size smaller than the teacher's tensors)
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors = {k: v for f in files for k, v in load_file(str(path / f)).items()}
        else:
            tensors = load_file(str(path / "model.safetensors"))
        teacher.load_tensors(tensors)
        return teacher.to(dtype) if dtype is not None else teacher.to(next(iter(tensors.values())).dtype)

    # ------------------------------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(
        self, model, token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, layer: int | None = None,
        return_logits: bool = True,
    ) -> TeacherOutput:
        """The source Llama's forward over tokens, with `model`'s backbone as its blocks.

        Args:
            model (`HATForCausalLM` or `HATModel`): the HAT whose backbone is the source's blocks.
            token_ids (`torch.LongTensor` of shape `(B, N)`): the source's token ids, right padded.
            attention_mask (`torch.Tensor` of shape `(B, N)`, *optional*): 1 for real tokens.
            layer (`int`, *optional*): also return the output of the first `layer` blocks (0: the embeddings).
            return_logits (`bool`): compute the next-token logits (B, N, V).
        """
        hat = getattr(model, "model", model)
        if attention_mask is None:
            attention_mask = torch.ones_like(token_ids)
        B, N = token_ids.shape
        embeds = self.embed_tokens(token_ids)  # (B, N, D)
        mask = additive_mask(causal_mask(attention_mask.bool()), embeds.dtype)  # (B, 1, N, N)
        positions = torch.arange(N, device=token_ids.device).expand(B, N)
        n_layers = hat.config.backbone_config.num_hidden_layers
        if layer is not None and not 0 <= layer <= n_layers:
            raise ValueError(f"layer must be in [0, {n_layers}] (the backbone's blocks), got {layer}")
        at_layer = None
        if layer is None:
            states = hat.run_backbone(embeds, mask, positions)
        else:
            at_layer = hat.run_backbone(embeds, mask, positions, num_layers=layer)  # (B, N, D)
            states = hat.run_backbone(at_layer, mask, positions, first_layer=layer)
        logits = self.lm_head(self.norm(states)) if return_logits else None
        return TeacherOutput(logits=logits, last_hidden_state=states, layer_hidden_state=at_layer)

    def next_token_logits(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., D), the last block's output -> next-token logits (..., V)."""
        return self.lm_head(self.norm(states))

    def source_model(self, model) -> SourceModel:
        """The source Llama as a module with a causal LM's `forward(input_ids, attention_mask).logits`, for code that
        scores token models (`hat.eval.intrinsic.token_bits_per_byte`)."""
        return SourceModel(self, model)


class SourceModel(nn.Module):
    """[`HATTeacher`] + a HAT's backbone, called like the source `LlamaForCausalLM` (token ids in, logits out)."""

    def __init__(self, teacher: HATTeacher, model):
        super().__init__()
        self.teacher = teacher
        self.__dict__["hat"] = model  # not a submodule: `parameters()` are the teacher's, the HAT stays its own

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> TeacherOutput:
        return self.teacher(self.hat, input_ids, attention_mask)
