"""HAT: a byte-level hierarchical autoregressive transformer built around Llama 3.1 blocks.

    from hat import HATConfig, HATForCausalLM
    model = HATForCausalLM.from_pretrained("path/to/hat")   # also: AutoModelForCausalLM once `hat` is imported
"""

from .config import HATConfig
from .causal_lm import HATForCausalLM
from .model.modeling import HATModel

__all__ = ["HATConfig", "HATForCausalLM", "HATModel"]
