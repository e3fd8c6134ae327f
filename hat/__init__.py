"""HAT: a byte-level hierarchical autoregressive transformer built around Llama 3.1 blocks.

    from hat import HATConfig, HATForCausalLM
    model = HATForCausalLM.from_pretrained("path/to/hat")   # also: AutoModelForCausalLM once `hat` is imported
"""

from .config import HATConfig
from .modeling import HATForCausalLM, HATModel

__all__ = ["HATConfig", "HATForCausalLM", "HATModel"]
