"""A small byte-level BPE tokenizer, as a tiny source Llama's (a converted checkpoint keeps it for its teacher)."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TEXT = (
    "The river that runs through the old town is quiet in the morning. Der Fluss, der durch die Altstadt fließt, "
    "ist morgens still. Straße über naïve café 😀 def get_user(self): return 3.14159, don't stop!\n"
) * 20


@lru_cache(maxsize=4)
def byte_level_bpe(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 / Llama 3 style: every byte is a token, merges on top), with `<|eot_id|>` as eos."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
