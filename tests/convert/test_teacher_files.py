"""convert/teacher.py: the teacher files beside a converted HAT (the source's embedding, norm, head and tokenizer)."""

from __future__ import annotations

import torch
from llama_fixtures import llama_dir, run_failing, src, tiny_llama, tiny_llama_config  # noqa: F401 (fixtures)
from transformers import AutoTokenizer, LlamaForCausalLM

from hat import HATForCausalLM
from hat.convert.cli import main
from hat.teacher import HATTeacher
from tests.helpers.source_tokenizer import byte_level_bpe


def test_teacher_files_make_the_source_model_again(llama_dir, tiny_llama, tmp_path):  # noqa: F811
    out = tmp_path / "hat"
    assert main(["--input", str(llama_dir), "--output", str(out), "--max-shard-size", "100KB"]) == 0
    hat = HATForCausalLM.from_pretrained(out).eval()
    teacher = HATTeacher.from_pretrained(out)
    assert teacher.source == str(llama_dir) and not teacher.tie_word_embeddings
    assert torch.equal(teacher.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)
    assert torch.equal(teacher.lm_head.weight, tiny_llama.lm_head.weight)
    assert torch.equal(teacher.norm.weight, tiny_llama.model.norm.weight)
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(teacher(hat, ids).logits, tiny_llama(ids).logits, rtol=1e-5, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(out / "teacher")
    text = "Der Fluss über 😀 don't"
    assert tokenizer(text)["input_ids"] == byte_level_bpe()(text)["input_ids"]
    assert "teacher/" in (out / "README.md").read_text()


def test_tied_source_and_sharded_teacher(tmp_path):
    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)).eval()
    llama.save_pretrained(tmp_path / "src")
    byte_level_bpe().save_pretrained(tmp_path / "src")
    out = tmp_path / "hat"
    assert main(["--input", str(tmp_path / "src"), "--output", str(out), "--max-shard-size", "100KB"]) == 0
    files = sorted(p.name for p in (out / "teacher").glob("model*.safetensors*"))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json"]  # embedding alone (131 KB), then the norm; no head (tied)
    teacher = HATTeacher.from_pretrained(out)
    assert teacher.tie_word_embeddings and teacher.lm_head.weight is teacher.embed_tokens.weight
    ids = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        hat = HATForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(teacher(hat, ids).logits, llama(ids).logits, rtol=1e-5, atol=1e-5)


def test_no_teacher_and_a_source_without_tokenizer(src, tmp_path, capsys):  # noqa: F811
    assert main(["--input", str(src), "--output", str(tmp_path / "plain"), "--no-teacher"]) == 0
    assert not (tmp_path / "plain" / "teacher").exists()
    assert "no teacher files" in capsys.readouterr().out
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (src / name).unlink()
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys,
                "no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, tokenizer_config.json) for the "
                "teacher files; add the source's tokenizer or pass --no-teacher")
    assert not (tmp_path / "out").exists()


def test_source_without_its_embedding_is_refused(src, tmp_path, capsys):  # noqa: F811
    """A checkpoint whose embedding table is missing: the teacher needs it, and so does the initialisation (the new
    word embeddings are scaled to the source's)."""
    import json

    from safetensors.torch import load_file, save_file

    index = json.loads((src / "model.safetensors.index.json").read_text())
    shard = src / index["weight_map"].pop("model.embed_tokens.weight")
    tensors = load_file(str(shard))
    del tensors["model.embed_tokens.weight"]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys,
                "the teacher files need ['model.embed_tokens.weight'], which the source does not have "
                "(pass --no-teacher to convert without them)")
    run_failing(["--input", str(src), "--output", str(tmp_path / "out"), "--no-teacher"], capsys,
                "no model.embed_tokens.weight: the new word embeddings are scaled to the source's token embeddings")
    assert not (tmp_path / "out").exists()
