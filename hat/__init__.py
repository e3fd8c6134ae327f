"""HAT: a byte-level hierarchical autoregressive transformer built around Llama 3.1 blocks.

    from hat import HATConfig, HATForCausalLM, HATTokenizer, split_words
    model = HATForCausalLM.from_pretrained("path/to/hat")   # also: AutoModelForCausalLM once `hat` is imported
    tokenizer = HATTokenizer.from_pretrained("path/to/hat")
    # without this package: AutoModelForCausalLM / AutoModel / AutoTokenizer .from_pretrained(path,
    # trust_remote_code=True) run the code every checkpoint carries (hat.remote_code)
    split_words("Hello, world!", max_word_size=100)          # [b'Hello,', b' world!']
"""

from .config import HATConfig
from .causal_lm import HATForCausalLM
from .model.modeling import HATModel
from .splitter import split_words
from .tokenizer import HATTokenizer

__all__ = ["HATConfig", "HATForCausalLM", "HATModel", "HATTokenizer", "split_words"]
