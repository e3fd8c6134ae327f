"""Evals on CPU with tiny models: the lm-eval adapter, bits per byte, compression, noise, offline tasks, report."""

import json
import math
import unicodedata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from hat.eval.harness import TASKS_DIR, HATLM, decode_generated, left_truncate
from hat.eval.intrinsic import (
    byte_windows,
    compression,
    hat_bits_per_byte,
    load_llama3_tokenizer,
    read_text,
    token_bits_per_byte,
    token_byte_lengths,
)
from hat.eval.noise import NOISE_KINDS, all_caps, char_noise, perturb
from hat.eval.robustness import load_mc, mc_accuracy

REPO = Path(__file__).resolve().parents[1]
UNICODE_TEXT = "Straße über die Brücke: café (e\u0301) 👨‍👩‍👧 und 漢字, naïve Äpfel größer als 3.14."


@pytest.fixture
def repo_cwd(monkeypatch):
    """Local task YAMLs name their data relative to the repository root, as documented."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def llama3_tokenizer():
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


def local_task_manager(*extra):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)], include_defaults=False)


def byte_logprobs(model, data: bytes) -> torch.Tensor:
    """(T - 1,) log p(byte t + 1 | bytes <= t) of one row, straight from the logits."""
    ids = torch.tensor([list(data)])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0].float(), -1)  # (T, 256)
    return logp[:-1].gather(-1, ids[0, 1:, None])[:, 0]


def score_bytes(model, data: bytes, n: int) -> tuple[float, bool]:
    """Sum of the log-probs of the last `n` bytes of `data`, and whether each is the argmax, from one forward."""
    ids = torch.tensor([list(data)])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0, :-1].float(), -1)[-n:]  # (n, 256): positions predicting them
    target = ids[0, -n:]
    return float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())


# ----------------------------------------------------------------------------------------------- lm-eval adapter
def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model("hat") is HATLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's lazy registry still resolves its own models


def test_toy_task_through_lm_eval_matches_logits(tiny_model, repo_cwd):
    """hat_mc_en (local JSON, no Hub) through lm_eval: every request's score is the sum of byte log-probs."""
    import lm_eval

    lm = HATLM(pretrained=tiny_model, batch_size=3, device="cpu")
    res = lm_eval.simple_evaluate(model=lm, tasks=["hat_mc_en"], task_manager=local_task_manager(), limit=3, log_samples=True)
    samples = res["samples"]["hat_mc_en"]
    assert len(samples) == 3 and 0.0 <= res["results"]["hat_mc_en"]["acc,none"] <= 1.0
    for sample in samples:
        for (context, continuation), [(logprob, is_greedy)] in zip(sample["arguments"], sample["resps"]):
            expected, greedy = score_bytes(tiny_model, (context + continuation).encode(), len(continuation.encode()))
            assert logprob == pytest.approx(expected, abs=1e-4) and is_greedy == greedy
    acc = sum(s["acc"] for s in samples) / len(samples)
    assert res["results"]["hat_mc_en"]["acc,none"] == pytest.approx(acc)


def test_loglikelihood_joins_context_and_continuation(tiny_model):
    """The continuation is scored inside the joined text (a boundary mid-word continues the word); "" -> byte 192."""
    from lm_eval.api.instance import Instance

    lm = HATLM(pretrained=tiny_model, batch_size=2, device="cpu")
    reqs = [("Die Hauptstadt ist Ber", "lin."), ("", "Straße"), ("Größe: ", "über")]
    out = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)])
    full = byte_logprobs(tiny_model, "Die Hauptstadt ist Berlin.".encode())
    assert out[0][0] == pytest.approx(float(full[-len(b"lin.") :].sum()), abs=1e-4)
    from_eot = byte_logprobs(tiny_model, bytes([192]) + "Straße".encode())
    assert out[1][0] == pytest.approx(float(from_eot.sum()), abs=1e-4)
    # lm-eval moves the context's trailing space into the continuation: " über" is scored
    moved = byte_logprobs(tiny_model, "Größe: über".encode())
    assert out[2][0] == pytest.approx(float(moved[-len(" über".encode()) :].sum()), abs=1e-4)

    # too long: the row keeps its last max_length + 1 bytes, minus a character cut at the left edge
    short = HATLM(pretrained=tiny_model, batch_size=2, device="cpu", max_length=7)
    [(logprob, _)] = short.loglikelihood([Instance("loglikelihood", {}, ("Ein sehr langer Kontext über Größe", " und"), 0)])
    row = "Ein sehr langer Kontext über Größe und".encode()[-8:]
    assert 0x80 <= row[0] < 0xC0  # the cut falls inside "ö"
    assert logprob == pytest.approx(score_bytes(tiny_model, row[1:], len(b" und"))[0], abs=1e-4)


def test_loglikelihood_rolling_scores_every_byte_once(tiny_model):
    from lm_eval import utils as lm_utils
    from lm_eval.api.instance import Instance

    text = "Ein längerer Text, der in mehrere Fenster fällt, damit jedes Byte genau einmal zählt."
    lm = HATLM(pretrained=tiny_model, batch_size=2, device="cpu", max_length=24)
    [total] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    expected, scored = 0.0, 0
    assert lm.rolling_context == 6  # max_length // 4: windows overlap
    windows = lm_utils.get_rolling_token_windows(list(text.encode()), 192, 24, lm.rolling_context)
    for ctx, cont in map(lm_utils.make_disjoint_window, windows):
        expected += float(byte_logprobs(tiny_model, bytes(ctx + cont))[-len(cont) :].sum())
        scored += len(cont)
    assert scored == len(text.encode())
    assert total == pytest.approx(expected, abs=1e-3)
    short = HATLM(pretrained=tiny_model, batch_size=2, device="cpu")  # one window: all bytes after byte 192
    [whole] = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert whole == pytest.approx(float(byte_logprobs(tiny_model, bytes([192]) + text.encode()).sum()), abs=1e-3)


def test_generate_until_matches_greedy_loop(tiny_model):
    """Batched generate_until (left padding, model.generate) == a plain greedy loop over full forwards."""
    from lm_eval.api.instance import Instance

    def greedy(prompt: str, n: int) -> list[int]:
        ids = list(prompt.encode())
        for _ in range(n):
            with torch.no_grad():
                ids.append(int(tiny_model(torch.tensor([ids])).logits[0, -1].argmax()))
        return ids[len(prompt.encode()) :]

    prompts = ["Frage: Wie heißt du?\nAntwort:", "Q: 2+2?\nA:"]
    lm = HATLM(pretrained=tiny_model, batch_size=2, device="cpu")
    refs = [greedy(p, 10) for p in prompts]
    stop = bytes(refs[0][3:5]).decode("utf-8", errors="ignore") or "\n"  # a stop string that occurs in row 0
    kwargs = {"until": [stop], "max_gen_toks": 10, "do_sample": False, "temperature": 0.0}
    out = lm.generate_until([Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)])
    assert out == [decode_generated(r, [stop], lm.special_byte_values) for r in refs]


def test_decode_generated_cuts_at_stop_special_and_partial_char():
    data = list("Antwort: 42\nFrage".encode())
    assert decode_generated(data, ["\n"], frozenset({192})) == "Antwort: 42"
    assert decode_generated(list("ab".encode()) + [192] + list(b"cd"), [], frozenset({192})) == "ab"
    assert decode_generated(list("größ".encode())[:-1], [], frozenset({192})) == "grö"  # "ß" cut in half
    assert decode_generated(list("Straße".encode()), ["ße"], frozenset()) == "Stra"  # stop strings match bytes
    assert left_truncate(list("xxß".encode()), 3) == list("xß".encode())
    assert left_truncate(list("aß".encode()), 2) == list("ß".encode())
    assert left_truncate(list("ßx".encode()), 2) == list(b"x")  # never starts inside a character


# ----------------------------------------------------------------------------------------------- bits per byte
def test_hat_bits_per_byte_equals_loss(tiny_model):
    text = "Bits pro Byte: größer ist schlechter."
    ids = torch.tensor([list(text.encode())])
    with torch.no_grad():
        loss = tiny_model(ids, labels=ids).loss
    result = hat_bits_per_byte(tiny_model, text, window=4096, progress=False)
    assert result.bits_per_byte == pytest.approx(float(loss) / math.log(2), rel=1e-5)
    assert result.scored_bytes == len(text.encode()) - 1 and result.windows == 1

    # several windows: the first byte of each is context only
    data = text.encode()
    windows = byte_windows(data, 12)
    assert b"".join(windows) == data and all(not 0x80 <= w[0] < 0xC0 for w in windows)
    nll = sum(-float(byte_logprobs(tiny_model, w).sum()) for w in windows)
    result = hat_bits_per_byte(tiny_model, text, window=12, batch_size=2, progress=False)
    assert result.scored_bytes == len(data) - len(windows)
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / (len(data) - len(windows)), rel=1e-5)


def test_token_bits_per_byte_by_hand(tiny_llama, llama3_tokenizer):
    text = "Bits per byte of a token model: größer, schöner, 👨‍👩‍👧."
    ids, byte_lengths = token_byte_lengths(llama3_tokenizer, text)
    assert sum(byte_lengths) == len(text.encode())
    row = torch.tensor([[llama3_tokenizer.bos_token_id, *ids]])
    with torch.no_grad():
        logits = tiny_llama(row).logits[0]
    nll = F.cross_entropy(logits[1:-1], row[0, 2:], reduction="sum")  # tokens 1.. of the window, after BOS
    result = token_bits_per_byte(tiny_llama, llama3_tokenizer, text, window=512, progress=False)
    assert result.scored == len(ids) - 1 and result.scored_bytes == len(text.encode()) - byte_lengths[0]
    assert result.bits_per_byte == pytest.approx(float(nll) / math.log(2) / result.scored_bytes, rel=1e-5)


def test_compression_counts_match_splitter_and_tokenizer(llama3_tokenizer):
    from hat.splitter import split_words

    c = compression(UNICODE_TEXT, {"llama3_tokens": llama3_tokenizer}, max_word_size=100)
    n_bytes = len(UNICODE_TEXT.encode())
    words = len(split_words(UNICODE_TEXT, max_word_size=100))
    tokens = len(llama3_tokenizer(UNICODE_TEXT, add_special_tokens=False)["input_ids"])
    assert c["bytes"] == n_bytes
    assert c["hat_words"] == {"positions": words, "bytes_per_position": n_bytes / words}
    assert c["llama3_tokens"] == {"positions": tokens, "bytes_per_position": n_bytes / tokens}
    assert c["words_per_token"]["llama3_tokens"] == pytest.approx(words / tokens)
    # a known sentence, counted by hand: "Hello," " world!" | Hello , world !
    known = compression("Hello, world!", {"llama3_tokens": llama3_tokenizer})
    assert known["hat_words"]["positions"] == 2 and known["llama3_tokens"]["positions"] == 4


# ----------------------------------------------------------------------------------------------- noise
def test_noise_is_seeded_and_reproducible():
    text = "The quick brown fox jumps over the lazy dog, und der Igel läuft über die Straße. " * 4
    for kind in NOISE_KINDS:
        a, b = char_noise(text, kind, 0.2, seed=7), char_noise(text, kind, 0.2, seed=7)
        assert a == b and a != text
        assert char_noise(text, kind, 0.2, seed=8) != a
        assert char_noise(text, kind, 0.0, seed=7) == text
    assert char_noise(text, "drop", 1.0) == "".join(c for c in text if not c.isalpha())
    swapped = char_noise("abcdef", "swap", 1.0)
    assert sorted(swapped) == sorted("abcdef") and swapped != "abcdef"
    assert perturb(text, "clean") == text
    with pytest.raises(ValueError, match="noise kind"):
        char_noise(text, "shuffle", 0.1)
    with pytest.raises(ValueError, match="rate"):
        char_noise(text, "drop", 1.5)


def test_caps_and_noise_keep_valid_utf8():
    assert all_caps("Straße") == "STRASSE"
    assert all_caps("ß") == "SS"
    for kind in ("caps", *NOISE_KINDS):
        for seed in range(5):
            out = perturb(UNICODE_TEXT, kind, 0.3, seed)
            assert out.encode("utf-8").decode("utf-8") == out  # no lone surrogates, round-trips
            assert "👨" in out or kind != "caps"  # emoji are not letters: untouched
            assert all(unicodedata.category(c) != "Cs" for c in out)


def test_mc_accuracy_scores_like_lm_eval(tiny_model):
    items = load_mc(TASKS_DIR / "hat_mc" / "hat_mc_de.jsonl")[:2]
    lm = HATLM(pretrained=tiny_model, batch_size=4, device="cpu")
    expected = 0
    for item in items:
        ctx = f"Q: {item['question']}\nA:"
        scores = [score_bytes(tiny_model, f"{ctx} {c}".encode(), len(f" {c}".encode()))[0] for c in item["choices"]]
        expected += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
    assert mc_accuracy(lm, items) == pytest.approx(expected / len(items))


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_clearly(tmp_path):
    from hat.eval.report import check_tasks, main as report_main

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_text(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mc(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_mc(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="unknown lm-eval task.*hat_mc_xx.*did you mean"):
        check_tasks(["hat_mc_en", "hat_mc_xx"], local_task_manager())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HATLM(pretrained=str(tmp_path / "nowhere"))
    # the report checks its inputs before loading any model
    with pytest.raises(ValueError, match="empty"):
        report_main(["--hat", str(tmp_path), "--llama", str(tmp_path), "--texts", str(empty)])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        report_main(["--hat", str(tmp_path), "--llama", str(tmp_path), "--texts", str(tmp_path / "missing.txt")])


# ----------------------------------------------------------------------------------------------- offline tasks
def test_offline_export_roundtrip(tiny_model, tmp_path, repo_cwd):
    """`hat.eval.offline` writes data + overrides; the `_local` group scores exactly like the original."""
    import lm_eval
    import yaml

    from hat.eval.offline import export

    [path] = export(["hat_mc"], tmp_path / "offline", local_task_manager())
    spec = yaml.safe_load(path.read_text())
    assert spec["group"] == "hat_mc_local" and [e["task"] for e in spec["task"]] == ["hat_mc_en", "hat_mc_de"]
    assert all(e["dataset_path"] == "json" and Path(e["dataset_kwargs"]["data_files"]["test"]).is_file() for e in spec["task"])

    lm = HATLM(pretrained=tiny_model, batch_size=4, device="cpu")
    kw = dict(model=lm, limit=3, log_samples=True)
    original = lm_eval.simple_evaluate(tasks=["hat_mc_de"], task_manager=local_task_manager(), **kw)
    offline = lm_eval.simple_evaluate(tasks=["hat_mc_local"], task_manager=local_task_manager(tmp_path / "offline" / "tasks"), **kw)
    scores = lambda r: [resp[0][0] for s in r["samples"]["hat_mc_de"] for resp in s["resps"]]  # noqa: E731
    assert scores(offline) == pytest.approx(scores(original), abs=1e-4)  # batches differ: float noise only


@pytest.fixture(scope="module")
def full_task_manager():
    """lm-eval's whole task index (about 20 s to build) plus ours."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR))


def test_suites_name_existing_upstream_tasks(full_task_manager):
    import yaml

    for suite in ("hat_en", "hat_de"):
        members = yaml.safe_load((TASKS_DIR / "suites" / f"{suite}.yaml").read_text())["task"]
        assert len(members) == 8
        missing = [t for t in members if t not in full_task_manager.all_tasks]
        assert not missing, f"{suite}: {missing} are not lm-eval 0.4.13 tasks"


def test_shipped_samples_override_upstream_tasks(tiny_model, repo_cwd, full_task_manager):
    """arc_challenge / arc_de under their upstream names and prompts, read from the local sample files."""
    import lm_eval

    lm = HATLM(pretrained=tiny_model, batch_size=4, device="cpu")
    res = lm_eval.simple_evaluate(model=lm, tasks=["hat_samples_local"], task_manager=full_task_manager, log_samples=True)
    assert res["results"]["arc_challenge"]["sample_len"] == 4 and res["results"]["arc_de"]["sample_len"] == 4
    first = res["samples"]["arc_challenge"][0]["arguments"][0]
    assert first[0] == "Question: Which tool is best for measuring the mass of a rock?\nAnswer:" and first[1] == " a ruler"
    assert res["samples"]["arc_de"][0]["arguments"][1][1] == " mit einer Waage"


# ----------------------------------------------------------------------------------------------- report
def test_report_end_to_end(tiny_model, tiny_llama, llama3_tokenizer, tmp_path):
    from hat.tokenizer import build_tokenizer

    from hat.eval.report import main as report_main

    tiny_model.save_pretrained(tmp_path / "hat")
    build_tokenizer().save_pretrained(tmp_path / "hat")
    tiny_llama.save_pretrained(tmp_path / "llama")
    llama3_tokenizer.save_pretrained(tmp_path / "llama")
    for lang, text in (("en", "The quick brown fox jumps over the lazy dog. " * 2), ("de", "Der Igel läuft über die Straße. " * 2)):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "heldout.txt").write_text(text, encoding="utf-8")
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(open(TASKS_DIR / "hat_mc" / "hat_mc_en.jsonl", encoding="utf-8").read().splitlines()[:2]) + "\n")
    out = tmp_path / "report"
    report_main([
        "--hat", str(tmp_path / "hat"), "--llama", str(tmp_path / "llama"), "--texts", str(tmp_path / "en" / "heldout.txt"),
        str(tmp_path / "de" / "heldout.txt"), "--out", str(out), "--mc", str(mc), "--perturbations", "caps", "swap",
        "--hat_window", "48", "--llama_window", "16", "--device", "cpu",
    ])
    report = json.loads((out / "report.json").read_text())
    assert set(report["texts"]) == {"en/heldout", "de/heldout"}
    en = report["texts"]["en/heldout"]
    assert en["compression"]["llama_tokens"] == en["compression"]["llama3_tokens"]
    assert set(en["robustness"]) == {"caps", "swap"} and set(report["mc"]["mc"]) == {"items", "clean", "caps", "swap"}
    assert all(math.isfinite(v) for v in en["bits_per_byte"].values())
    md = (out / "report.md").read_text()
    assert "| en/heldout |" in md and "## Compression" in md and "## Robustness" in md
    for png in ("bits_per_byte.png", "compression.png", "robustness.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
