"""HAT next to the Llama it came from, in one report: bits per byte, compression, robustness, benchmarks.

    python -m hat.eval.report --hat outputs/smollm2-135m-hat --llama "$(python -c 'from hat.convert.gguf_io import default_source; print(default_source())')" \
        --texts data/corpus/en/heldout.txt data/corpus/de/heldout.txt --out outputs/report
    python -m hat.eval.report --hat DIR --llama DIR_OR_GGUF --texts ... --tasks hat_en,hat_de --limit 200   # + lm-eval

Writes `report.md` (tables), `report.json` (everything, for machines) and PNG plots (`bits_per_byte.png`,
`compression.png`, `robustness.png`, `benchmarks.png` when `--tasks` is given) into `--out`.
For each text file (named `<parent dir>/<stem>`, e.g. `en/heldout`):
- bits per byte of HAT and of the Llama (`hat.eval.intrinsic`, disjoint windows, first unit of each window unscored);
- compression, UTF-8 bytes per backbone position: HAT words vs the Llama's tokens and the Llama 3 tokenizer's;
- robustness: bits per byte under ALL CAPS and seeded character noise, as relative change from clean.
For each multiple-choice set (`--mc`, default the local `eval/tasks/hat_mc/hat_mc_{en,de}.jsonl`): accuracy clean
and perturbed, through the same lm-eval `LM` objects as the benchmarks (`HATLM`, lm-eval's `HFLM`).
With `--tasks`: lm-eval tasks (`hat_en`, `hat_de`, offline overrides via `--include_path`), one main metric each.
Everything runs offline; only `--tasks` with upstream tasks needs the Hub's datasets (or their local copies).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
from pathlib import Path

from .harness import TASKS_DIR, HATLM, task_data_errors
from .intrinsic import compression, hat_bits_per_byte, load_llama3_tokenizer, read_text, token_bits_per_byte
from .loading import load_hat, load_llama
from .robustness import DEFAULT_KINDS, bpb_robustness, load_mc, mc_robustness

DEFAULT_MC = [TASKS_DIR / "hat_mc" / "hat_mc_en.jsonl", TASKS_DIR / "hat_mc" / "hat_mc_de.jsonl"]
LABELS = {"hat": "HAT", "llama": "Llama"}
# Main metric per task, first found wins (lm-eval keys are "metric,filter").
METRIC_PREFERENCE = ("acc_norm,none", "acc,none", "exact_match,flexible-extract", "exact_match,strict-match", "exact_match,none")


# ----------------------------------------------------------------------------------------------- lm-eval
def llama_lm(model, tokenizer, batch_size: int, max_length: int | None = None):
    """lm-eval's own `HFLM` around an already loaded model: the Llama side is scored by upstream code."""
    from lm_eval.models.huggingface import HFLM

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


def task_manager(include_path: list[str] | None = None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *(include_path or [])])


def check_tasks(names: list[str], manager) -> None:
    """Raise a `ValueError` naming each unknown task, with the closest known names."""
    known = set(manager.all_tasks)
    bad = [n for n in names if n not in known]
    if bad:
        hints = "; ".join(f"{n!r} (did you mean {difflib.get_close_matches(n, known, 3) or 'nothing close'})" for n in bad)
        raise ValueError(f"unknown lm-eval task(s): {hints}. List them with `python -m hat.eval.harness ls tasks`.")


def main_metric(task_result: dict) -> tuple[str, float] | None:
    for key in METRIC_PREFERENCE:
        if isinstance(task_result.get(key), (int, float)):
            return key, float(task_result[key])
    return None


def run_benchmarks(lms: dict, tasks: list[str], manager, limit: int | float | None, num_fewshot: int | None) -> dict:
    """`{task: {"metric": key, model_name: value}}` over the leaf tasks of `tasks`, for each `LM` in `lms`."""
    import lm_eval

    out: dict[str, dict] = {}
    for name, lm in lms.items():
        with task_data_errors():
            res = lm_eval.simple_evaluate(
                model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot, log_samples=False
            )
        for task, task_result in res["results"].items():
            metric = main_metric(task_result)
            if metric is not None:
                out.setdefault(task, {"metric": metric[0]})[name] = metric[1]
    return out


# ----------------------------------------------------------------------------------------------- the report
def text_name(path: str | os.PathLike) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def build_report(args: argparse.Namespace) -> dict:
    """Compute every number of the report (see the module docstring)."""
    # Check every input before the (slow) model loads
    texts = {text_name(p): read_text(p)[: args.max_chars] if args.max_chars else read_text(p) for p in args.texts}
    mc_sets = {Path(p).stem: load_mc(p) for p in (args.mc if args.mc is not None else DEFAULT_MC)}
    tasks = [t for t in (args.tasks or "").split(",") if t]
    manager = None
    if tasks:
        manager = task_manager(args.include_path)
        check_tasks(tasks, manager)

    hat = load_hat(args.hat, args.device, args.dtype, check_finite=args.check_finite)
    llama, llama_tok = load_llama(args.llama, args.device, args.dtype)
    tokenizers = {"llama_tokens": llama_tok, "llama3_tokens": load_llama3_tokenizer()}
    kinds = tuple(args.perturbations)

    report = {
        "hat": {"path": str(args.hat), "parameters": sum(p.numel() for p in hat.parameters())},
        "llama": {"path": str(args.llama), "parameters": sum(p.numel() for p in llama.parameters())},
        "settings": {
            "hat_window_bytes": args.hat_window, "llama_window_tokens": args.llama_window, "noise_rate": args.noise_rate,
            "seed": args.seed, "perturbations": list(kinds), "max_chars": args.max_chars, "tasks": tasks,
            "limit": args.limit,
        },
        "texts": {},
        "mc": {},
        "benchmarks": {},
    }
    def hat_bpb(text: str) -> float:
        return hat_bits_per_byte(hat, text, args.hat_window, args.batch_size).bits_per_byte

    def llama_bpb(text: str) -> float:
        return token_bits_per_byte(llama, llama_tok, text, args.llama_window, args.batch_size).bits_per_byte

    for name, text in texts.items():
        print(f"== {name}: {len(text.encode('utf-8'))} bytes")
        hat_rob = bpb_robustness(hat_bpb, text, kinds, args.noise_rate, args.seed)
        llama_rob = bpb_robustness(llama_bpb, text, kinds, args.noise_rate, args.seed)
        report["texts"][name] = {
            "bytes": len(text.encode("utf-8")),
            "bits_per_byte": {"hat": hat_rob["clean"]["bits_per_byte"], "llama": llama_rob["clean"]["bits_per_byte"]},
            "compression": compression(text, tokenizers, hat.config.max_word_size),
            "robustness": {kind: {"hat": hat_rob[kind], "llama": llama_rob[kind]} for kind in kinds},
        }

    hat_lm = HATLM(pretrained=hat, batch_size=args.batch_size, device=str(hat.device))
    lms = {"hat": hat_lm, "llama": llama_lm(llama, llama_tok, args.batch_size)}
    for name, items in mc_sets.items():
        print(f"== multiple choice {name}: {len(items)} items")
        per_model = {m: mc_robustness(lm, items, kinds, args.noise_rate, args.seed) for m, lm in lms.items()}
        report["mc"][name] = {
            "items": len(items),
            **{kind: {m: per_model[m][kind] for m in lms} for kind in ("clean", *kinds)},
        }
    if tasks:
        report["benchmarks"] = run_benchmarks(lms, tasks, manager, args.limit, args.num_fewshot)
    return report


# ----------------------------------------------------------------------------------------------- writing
def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:+.1f}%"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# HAT vs source Llama",
        "",
        f"HAT: `{report['hat']['path']}` ({report['hat']['parameters']:,} parameters); "
        f"Llama: `{report['llama']['path']}` ({report['llama']['parameters']:,} parameters).",
        f"Windows: HAT {s['hat_window_bytes']} bytes, Llama {s['llama_window_tokens']} tokens; noise rate "
        f"{s['noise_rate']}, seed {s['seed']}.",
        "",
        "## Bits per byte (lower is better)",
        "",
        "| text | bytes | HAT | Llama | HAT / Llama |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in report["texts"].items():
        b = t["bits_per_byte"]
        lines.append(f"| {name} | {t['bytes']:,} | {_f(b['hat'])} | {_f(b['llama'])} | {_f(b['hat'] / b['llama'], 2)} |")
    lines += [
        "",
        "## Compression: UTF-8 bytes per backbone position (higher is better)",
        "",
        "| text | HAT words | source Llama tokens | Llama 3 tokens | words / source token |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in report["texts"].items():
        c = t["compression"]
        lines.append(
            f"| {name} | {_f(c['hat_words']['bytes_per_position'], 2)} | {_f(c['llama_tokens']['bytes_per_position'], 2)} | "
            f"{_f(c['llama3_tokens']['bytes_per_position'], 2)} | {_f(c['words_per_token']['llama_tokens'], 2)} |"
        )
    lines += [
        "",
        "## Robustness: relative change of bits per byte under perturbation (lower is better)",
        "",
        "| text | perturbation | HAT bpb | HAT change | Llama bpb | Llama change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, t in report["texts"].items():
        for kind, r in t["robustness"].items():
            lines.append(
                f"| {name} | {kind} | {_f(r['hat']['bits_per_byte'])} | {_pct(r['hat']['rel_change'])} | "
                f"{_f(r['llama']['bits_per_byte'])} | {_pct(r['llama']['rel_change'])} |"
            )
    if report["mc"]:
        lines += [
            "",
            "## Robustness: multiple-choice accuracy under perturbation (higher is better)",
            "",
            "| set | items | perturbation | HAT acc | HAT change | Llama acc | Llama change |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for name, m in report["mc"].items():
            for kind, r in m.items():
                if kind == "items":
                    continue
                lines.append(
                    f"| {name} | {m['items']} | {kind} | {_f(r['hat']['acc'])} | {_pct(r['hat']['rel_change'])} | "
                    f"{_f(r['llama']['acc'])} | {_pct(r['llama']['rel_change'])} |"
                )
    if report["benchmarks"]:
        lines += ["", "## Benchmarks (lm-eval)", "", "| task | metric | HAT | Llama |", "|---|---|---:|---:|"]
        for task, r in sorted(report["benchmarks"].items()):
            lines.append(f"| {task} | {r['metric']} | {_f(r.get('hat'))} | {_f(r.get('llama'))} |")
    lines += ["", "Plots: bits_per_byte.png, compression.png, robustness.png" + (", benchmarks.png" if report["benchmarks"] else "") + "."]
    return "\n".join(lines) + "\n"


def _bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str) -> None:
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()


def plots(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(report["texts"])

    def save(fig, filename: str) -> None:
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        written.append(out / filename)

    fig, ax = plt.subplots(figsize=(6, 4))
    _bars(ax, names, {LABELS[m]: [report["texts"][n]["bits_per_byte"][m] for n in names] for m in LABELS},
          "bits per byte", "Bits per byte (lower is better)")
    save(fig, "bits_per_byte.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    series = {
        label: [report["texts"][n]["compression"][key]["bytes_per_position"] for n in names]
        for label, key in (("HAT words", "hat_words"), ("source Llama tokens", "llama_tokens"), ("Llama 3 tokens", "llama3_tokens"))
    }
    _bars(ax, names, series, "bytes per backbone position", "Compression (higher is better)")
    save(fig, "compression.png")

    panels = [(n, "bits per byte", report["texts"][n]["robustness"]) for n in names]
    panels += [(n, "accuracy", {k: v for k, v in m.items() if k not in ("items", "clean")}) for n, m in report["mc"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (name, what, rob) in zip(axes[0], panels):
        kinds = list(rob)
        _bars(ax, kinds, {LABELS[m]: [100 * rob[k][m]["rel_change"] for k in kinds] for m in LABELS},
              f"change of {what} (%)", f"{name}: {what}")
    save(fig, "robustness.png")

    if report["benchmarks"]:
        tasks = sorted(report["benchmarks"])
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks)), 4))
        _bars(ax, tasks, {LABELS[m]: [report["benchmarks"][t].get(m, float("nan")) for t in tasks] for m in LABELS},
              "main metric", "Benchmarks (lm-eval)")
        save(fig, "benchmarks.png")
    return written


def write_report(report: dict, out: str | os.PathLike) -> list[Path]:
    """report.json, report.md and the PNG plots into `out`; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    return [out / "report.json", out / "report.md", *plots(report, out)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hat", required=True, help="HAT checkpoint directory")
    parser.add_argument("--llama", required=True, help="source Llama: HF checkpoint directory or .gguf file")
    parser.add_argument("--texts", nargs="+", required=True, help="UTF-8 text files for bits per byte and compression")
    parser.add_argument("--out", default="outputs/report")
    parser.add_argument("--mc", nargs="*", default=None, help="multiple-choice JSON lines (default: eval/tasks/hat_mc)")
    parser.add_argument("--perturbations", nargs="+", default=list(DEFAULT_KINDS), choices=list(DEFAULT_KINDS))
    parser.add_argument("--noise_rate", type=float, default=0.05, help="probability that a letter is hit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hat_window", type=int, default=2048, help="bits-per-byte window, bytes")
    parser.add_argument("--llama_window", type=int, default=512, help="bits-per-byte window, tokens")
    parser.add_argument("--max_chars", type=int, default=None, help="use only the first N characters of each text")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--tasks", default=None, help="lm-eval tasks, comma separated (e.g. hat_en,hat_de)")
    parser.add_argument("--include_path", nargs="*", default=None, help="more lm-eval task directories")
    parser.add_argument("--limit", type=float, default=None, help="lm-eval: documents per task")
    parser.add_argument("--num_fewshot", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    parser.add_argument("--check-finite", action=argparse.BooleanOptionalAction, default=True,
                        help="check that every HAT weight is finite; the first NaN or inf is an error (default on)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit >= 1:
        args.limit = int(args.limit)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = build_report(args)
    for path in write_report(report, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
