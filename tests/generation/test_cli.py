"""hat.generation.cli: `hat-generate`, one-shot and interactive, with and without a saved tokenizer."""

import io
import sys

import pytest
import torch

from .helpers import encode


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model, tokenizer):
    path = tmp_path_factory.mktemp("hat_cli")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(args: list[str], stdin: str = "", monkeypatch=None, capsys=None) -> str:
    from hat.generation.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(args) == 0
    return capsys.readouterr().out


def test_cli_one_shot_streams_the_chat_answer(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--prompt", "Hallo, wie geht's?", "--max-new-tokens", "12", "--seed", "0"],
                      monkeypatch=monkeypatch, capsys=capsys)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hallo, wie geht's?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    assert printed == tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"


def test_cli_raw_completion_greedy(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--prompt", "Straße", "--no-chat", "--temperature", "0",
                       "--max-new-tokens", "10"], monkeypatch=monkeypatch, capsys=capsys)
    ids, _ = encode(["Straße"])
    out = model.generate(input_ids=ids, max_new_tokens=10)
    assert printed == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) + "\n"


def test_cli_interactive_chat_from_stdin(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--max-new-tokens", "6", "--temperature", "0"],
                      stdin="Hallo!\n\n/reset\nNoch eine Frage\n", monkeypatch=monkeypatch, capsys=capsys)
    expected = ""
    for question in ("Hallo!", "Noch eine Frage"):  # /reset: the second turn starts a fresh conversation
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**prompt, max_new_tokens=6)
        expected += tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"
    assert printed == expected


def test_cli_without_saved_tokenizer_uses_the_byte_tokenizer(tmp_path, model, tokenizer, monkeypatch, capsys):
    model.save_pretrained(tmp_path)
    printed = run_cli([str(tmp_path), "--prompt", "Öl", "--no-chat", "--temperature", "0", "--max-new-tokens", "5"],
                      monkeypatch=monkeypatch, capsys=capsys)
    ids, _ = encode(["Öl"])
    out = model.generate(input_ids=ids, max_new_tokens=5)
    assert printed == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) + "\n"


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "nowhere", "nowhere: not a directory"),
    (lambda tmp: tmp, "no config.json (not a saved model)"),
])
def test_cli_names_a_model_dir_that_is_not_a_model(tmp_path, capsys, make, message):
    from hat.generation.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(make(tmp_path)), "--prompt", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line or "Repo id" in line for line in err)


def test_cli_chat_line_of_private_use_characters(saved_model, model, tokenizer, monkeypatch, capsys):
    """A line of all of U+F0000..U+FFFFD (262,136 bytes) encodes (no free private-use marker left in that plane);
    it is longer than the tiny model's 4,096 byte positions, so that turn gets one line and the chat goes on."""
    from hat.generation.cli import main

    line = "".join(map(chr, range(0xF0000, 0xFFFFE)))
    monkeypatch.setattr(sys, "stdin", io.StringIO(line + "\nHallo!\n"))
    assert main([str(saved_model), "--max-new-tokens", "3", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        "hat-generate: the prompt is 262243 bytes, more than the model's 4096 (max_position_embeddings); shorten it "
        "(in a chat, /reset starts over)")  # after transformers' weight-loading bar
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hallo!"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)  # the long turn was dropped
    out = model.generate(**prompt, max_new_tokens=3)
    assert captured.out == tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"


def test_cli_one_shot_prompt_over_the_limit_is_one_line(saved_model, monkeypatch, capsys):
    from hat.generation.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main([str(saved_model), "--prompt", "x" * 5000, "--no-chat", "--max-new-tokens", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        "hat-generate: the prompt is 5000 bytes, more than the model's 4096 (max_position_embeddings); shorten it "
        "(in a chat, /reset starts over)")
