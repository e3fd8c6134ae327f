"""recipes/merge_lora.py after an SFT LoRA run: the merged checkpoint is the model that was trained, as a plain HAT
checkpoint."""

from __future__ import annotations

import torch

from tests.helpers.recipes import assert_reloads, is_inert, run_recipe


def test_sft_lora_then_merge(tiny_hat, tmp_path):
    """LoRA on the backbone's attention and MLP, the HAT parts trained in full; the merge reproduces the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hat.recipes.merge_lora import merge

    out = tmp_path / "lora"
    trainer = run_recipe("sft", tiny_hat, out, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                         "--learning_rate", "1e-2", "--max_steps", "2")  # fmt: skip
    model = trainer.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".lora_A." in n and ".backbone.layers." in n for n in trainable)
    assert not any(".lora_" in n and ".backbone." not in n for n in trainable)  # adapters on the backbone only
    assert not any(".backbone." in n and ".lora_" not in n for n in trainable)  # base backbone frozen
    # Every parameter outside the backbone that trains in full fine-tuning trains here, as a PEFT copy
    plain = AutoModelForCausalLM.from_pretrained(tiny_hat)
    full = {n for n, p in plain.named_parameters() if p.requires_grad and ".backbone." not in n}
    copies = {n.removeprefix("base_model.model.").replace("modules_to_save.default.", "") for n in trainable if ".lora_" not in n}
    assert copies == full
    assert not any(is_inert(n) for n in trainable)
    initial = plain.state_dict()
    base = model.get_base_model()
    for name, param in base.named_parameters():  # the base weights (LoRA's and the originals of the copies) stay
        if ".lora_" in name or ".modules_to_save." in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(param, initial[key]), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in base.named_parameters() if ".lora_B." in n)

    merged = tmp_path / "merged"
    merge(str(out), str(merged))
    assert_reloads(merged)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_hat), out).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = torch.tensor([list("Hallo Welt, hello world.".encode())])
    with torch.no_grad():
        torch.testing.assert_close(merged_model(ids).logits, reloaded(ids).logits, rtol=1e-4, atol=1e-5)
        with reloaded.disable_adapter():
            plain = AutoModelForCausalLM.from_pretrained(tiny_hat).eval()
            torch.testing.assert_close(reloaded(ids).logits, plain(ids).logits)
