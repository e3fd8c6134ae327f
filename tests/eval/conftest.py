import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from hat.eval.intrinsic import load_llama3_tokenizer

    tok = load_llama3_tokenizer()
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|end_of_text|>"
    return tok


@pytest.fixture
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=1024, bos_token_id=128000, eos_token_id=128001,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def full_task_manager():
    """lm-eval's whole task index (about 20 s to build) plus ours."""
    from lm_eval.tasks import TaskManager

    from hat.eval.harness import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR))
