"""Where a converted model's bits go: the same trained decoder read with three different word states, and split by
the byte's place in its word, beside the teacher's own bits at the same bytes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_where_bits_go.py --runs attached=outputs/a detached=outputs/b

Each run is a `recipes/pretrain.py` output directory of a teacher-guided conversion of the embedded SmolLM2 (its
`teacher/` beside the weights, its `heldout_curve.json`). On the bundled held-out English and German text (windows
of 1024 bytes, as the held-out curve scores them) the decoder is conditioned on
- **closed loop**: the HAT's own backbone output (what the model is);
- **perfect encoder**: the backbone's output when it reads the teacher's token embeddings instead of the pooled
  words at every aligned word (the encoder loss at k = 0 driven to zero; unaligned words keep the pooled vector);
- **teacher's states**: the teacher's last-block state at each word (the held-out curve's "teacher-conditioned").
The gap closed loop -> perfect encoder is the encoder's; perfect encoder -> teacher's states is what the backbone's
reading of whole words (one position per word, not per token) costs; teacher's states -> the teacher's own bits
(its next-byte marginals, at the bytes where it has them) is the decoder's. Bits are split into a word's first byte
and the bytes after it. Also the encoder's relative L2 to the teacher's embeddings on held-out words.
Writes the `where-bits-go` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks._common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LANGS = {"en": "English", "de": "German"}
CONDITIONS = {"closed": "closed loop", "perfect_encoder": "perfect encoder", "teacher_states": "teacher's states"}


def load(run: Path):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hat import HATForCausalLM, HATTokenizer
    from hat.collator import HATDataCollator
    from hat.recipes.pretrain import PretrainConfig, teacher_guidance

    model = HATForCausalLM.from_pretrained(run, dtype=torch.float32).eval()
    tokenizer = HATTokenizer.from_pretrained(run)
    collator = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), model.config)
    args = PretrainConfig(output_dir=str(run), teacher=True, teacher_layers=0, report_to="none")
    teacher_collator, guidance = teacher_guidance(model, model.config, collator, args, str(run))
    return model, teacher_collator, guidance


class Tally(dict):
    def add(self, key: str, total: float, count: int) -> None:
        old = self.get(key, (0.0, 0))
        self[key] = (old[0] + total, old[1] + count)

    def mean(self, key: str) -> float:
        total, count = self[key]
        return total / max(count, 1)


@torch.no_grad()
def breakdown(model, collator, guidance, text: str, rows: int, window: int = 1024) -> dict[str, float]:
    """Bits per byte under each conditioning, all bytes / first bytes / the rest, the teacher's at its bytes."""
    from hat.eval.intrinsic import byte_windows
    from hat.recipes.distill import state_matching
    from hat.recipes.teacher_guidance import teacher_word_states

    hat, config = model.model, model.config
    embeddings = guidance.teacher.embed_tokens.weight
    windows = [w for w in byte_windows(text.encode("utf-8"), window) if len(w) > 1][:rows]
    tally = Tally()
    for i in range(0, len(windows), 4):
        batch = collator([{"input_ids": list(w)} for w in windows[i : i + 4]])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        layout = hat.layout(ids, mask, batch["word_lengths"])
        teacher_rows = guidance.teacher_rows(hat, batch, targets=True)
        last = guidance._padded(teacher_rows, "last", batch["teacher_input_ids"].shape[1])
        word_token = batch["word_token"]
        aligned = (word_token >= 0) & layout.word_valid
        byte_states = hat.encode(ids, layout.byte_mask(config.encoder_config.sliding_window, torch.float32),
                                 layout.byte_positions)
        words = hat.pool(byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                         layout.word_positions)
        token_embeds = embeddings[batch["teacher_input_ids"].gather(1, word_token.clamp(min=0))]  # (B, W, D)
        matched = aligned.clone()
        matched[:, 0] = False  # as the encoder loss: word 0 is the attention sink
        n = int(matched.sum())  # the encoder loss's own measure, both means over the same words
        tally.add("encoder_error", float(state_matching(words, token_embeds, matched)) * n, n)
        tally.add("encoder_size", float(state_matching(torch.zeros_like(token_embeds), token_embeds, matched)) * n, n)
        word_mask = layout.word_mask(torch.float32)
        states = {
            "closed": hat.run_backbone(words, word_mask, layout.word_positions),
            "perfect_encoder": hat.run_backbone(torch.where(aligned[..., None], token_embeds, words), word_mask,
                                                layout.word_positions),
            "teacher_states": teacher_word_states(last, word_token, aligned),
        }
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # position p predicts byte p + 1
        scored = targets != -100
        starts = layout.byte_word[:, 1:] != layout.byte_word[:, :-1]  # byte p + 1 begins a word
        parts = {"all": scored, "first": scored & starts, "rest": scored & ~starts}
        # the teacher's next-byte marginals where it has them
        b, p, marginals = guidance.byte_target_rows(teacher_rows)
        keep = scored[b, p]
        b, p, marginals = b[keep], p[keep], marginals[keep]
        teacher_nll = -marginals.gather(1, targets[b, p][:, None])[:, 0].clamp(min=1e-30).log()
        tally.add("teacher_at_marginals", float(teacher_nll.sum()), len(teacher_nll))
        first = starts[b, p]
        tally.add("teacher_first", float(teacher_nll[first].sum()), int(first.sum()))
        tally.add("teacher_rest", float(teacher_nll[~first].sum()), int((~first).sum()))
        decoder_mask = layout.byte_mask(config.decoder_config.sliding_window, torch.float32)
        for name, word_states in states.items():
            hidden = hat.decode(byte_states, hat.word_conditioning(hat.predict_words(word_states)), layout.byte_word,
                                decoder_mask, layout.byte_positions)
            log_probs = F.log_softmax(model.lm_head(hidden)[:, :-1].float(), -1)
            nll = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
            for part, where in parts.items():
                tally.add(f"{name}_{part}", float(nll[where].sum()), int(where.sum()))
            tally.add(f"{name}_at_marginals", float(nll[b, p].sum()), len(p))
    result = {key: tally.mean(key) / math.log(2) for key in tally if not key.startswith("encoder")}
    result["encoder_relative_l2"] = tally.mean("encoder_error") / tally.mean("encoder_size")
    result["marginal_coverage"] = tally["teacher_at_marginals"][1] / tally["closed_all"][1]
    return result


def run_summary(run: Path) -> dict:
    """The last point of the run's held-out curve (`heldout_curve.json`, written by `hat.recipes.heldout`)."""
    return json.loads((run / "heldout_curve.json").read_text())[-1]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    bars = {**CONDITIONS, "teacher": "the teacher itself"}
    width = 0.8 / len(bars)
    for ax, lang in zip(axes, LANGS):
        for i, (key, label) in enumerate(bars.items()):
            values = [r[lang]["teacher_at_marginals" if key == "teacher" else f"{key}_all"] for r in results.values()]
            ax.bar([x + i * width for x in range(len(results))], values, width, label=label)
        ax.set_xticks([x + width * (len(bars) - 1) / 2 for x in range(len(results))], list(results))
        ax.set_title(f"{LANGS[lang]} held-out")
        ax.set_ylabel("bits per byte")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(bars), fontsize=9)
    fig.suptitle("Where the bits go: the decoder read with its own, a perfect encoder's and the teacher's word states")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)


def section(results: dict, summaries: dict, rows: int, command: str) -> str:
    runs = [
        "| run | steps | training bytes | CPU min | English bpb | German bpb | English teacher-conditioned | German "
        "teacher-conditioned |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, point in summaries.items():
        runs.append(f"| {name} | {point['step']} | {point['train_bytes']:,} | {point['cpu_seconds'] / 60:.1f} | "
                    f"{point['heldout_en_bpb']:.3f} | {point['heldout_de_bpb']:.3f} | "
                    f"{point['heldout_en_oracle_bpb']:.3f} | {point['heldout_de_oracle_bpb']:.3f} |")
    lines = [
        "## Where the bits go: encoder, backbone reading, decoder",
        "",
        f"`{command}` on {machine()}.",
        f"The first {rows} windows of 1024 bytes of each held-out text, each run's own final weights. Bits per byte of "
        "the HAT's decoder conditioned on its own backbone output (closed loop), on the backbone's output when it "
        "reads the teacher's token embeddings at every aligned word (perfect encoder), and on the teacher's "
        "last-block states (teacher's states); `first` is a word's first byte, `rest` the bytes after it; the "
        "teacher's own bits are its next-byte marginals at the bytes where it has them (the last column gives the "
        "decoder's on the teacher's states at the same bytes). Encoder error: relative L2 of the pooled words to "
        "the teacher's embeddings on aligned held-out words.",
        "",
        "| run | language | closed loop (first / rest) | perfect encoder (first / rest) | teacher's states (first / rest) "
        "| teacher's own (first / rest) | decoder on teacher's states, same bytes | encoder error |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    for run, by_lang in results.items():
        for lang, r in by_lang.items():
            cells = [f"{r[f'{c}_all']:.3f} ({r[f'{c}_first']:.2f} / {r[f'{c}_rest']:.2f})" for c in CONDITIONS]
            lines.append(f"| {run} | {LANGS[lang]} | " + " | ".join(cells) +
                         f" | {r['teacher_at_marginals']:.3f} ({r['teacher_first']:.2f} / {r['teacher_rest']:.2f})"
                         f" | {r['teacher_states_at_marginals']:.3f} "
                         f"| {r['encoder_relative_l2']:.2f} |")
    lines += ["", "Each run's last point of its held-out curve (all of each text; CPU minutes of its training process):",
              "", *runs, "", "![bits per byte by conditioning](benchmarks/where_bits_go.png)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="name=DIR: a teacher-guided pretrain output")
    parser.add_argument("--rows", type=int, default=16, help="1024-byte windows per language")
    parser.add_argument("--no-write", action="store_true", help="print, do not rewrite BENCHMARKS.md")
    args = parser.parse_args()
    results, summaries = {}, {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        summaries[name] = run_summary(Path(path))
        model, collator, guidance = load(Path(path))
        results[name] = {}
        for lang in LANGS:
            text = (ROOT / "data" / "corpus" / lang / "heldout.txt").read_text(encoding="utf-8")
            results[name][lang] = breakdown(model, collator, guidance, text, args.rows)
            print(name, lang, json.dumps({k: round(v, 3) for k, v in results[name][lang].items()}), flush=True)
    command = "python benchmarks/bench_where_bits_go.py --runs " + " ".join(
        f"{spec.partition('=')[0]}=..." for spec in args.runs) + f" --rows {args.rows}"
    body = section(results, summaries, args.rows, command)
    print(body)
    if not args.no_write:
        plot(results, ROOT / "benchmarks" / "where_bits_go.png")
        write_section("where-bits-go", body)


if __name__ == "__main__":
    main()
