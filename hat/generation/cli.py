"""`hat-generate`: stream text from a HAT model, one-shot or as an interactive chat.

    hat-generate MODEL_DIR --prompt "Die Hauptstadt von Frankreich ist"      # one answer, then exit
    hat-generate MODEL_DIR                                                  # chat: one user turn per stdin line
    hat-generate MODEL_DIR --no-chat --max-new-tokens 200 --temperature 0   # raw completion, greedy
    echo "Hallo!" | hat-generate MODEL_DIR --seed 0                         # scripted chat

With a chat template (the tokenizer saved next to the model; the default byte tokenizer if there is none) each line
is a user turn and the conversation is kept (`/reset` clears it, `/exit` or end of input quits); with `--no-chat`, or a
tokenizer without a template, each prompt (or line) is continued as raw text. Output streams through HF's `TextStreamer`, which
only prints complete UTF-8 characters. `--temperature 0` is greedy decoding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hat-generate", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="the directory of a saved HAT model (config.json, weights; tokenizer optional)")
    p.add_argument("--prompt", help="generate once for this prompt and exit (default: read prompts from stdin)")
    p.add_argument("--no-chat", action="store_true", help="raw completion: do not apply the chat template")
    p.add_argument("--system", help="system message for chat mode")
    p.add_argument("--max-new-tokens", type=int, default=256, help="bytes to generate at most (default 256)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9; 1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely bytes (default 0 = off)")
    p.add_argument("--seed", type=int, help="random seed for sampling")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        p.error(f"{args.model_dir}: not a directory (pass the directory of a saved HAT model)")
    if not (model_dir / "config.json").is_file():
        p.error(f"{args.model_dir}: no config.json (not a saved model)")
    if args.max_new_tokens < 1:
        p.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        p.error(f"--top-k must be >= 0, got {args.top_k}")
    return args


def load(model_dir: str, device: str = "cpu", dtype: str = "auto"):
    """The model (eval mode) and its tokenizer; a default byte tokenizer when none was saved with the model."""
    from transformers import AutoModelForCausalLM

    from ..tokenizer import HATTokenizer, build_tokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    # `HATForCausalLM` is registered with the Auto classes when `hat` is imported (as it is, to run this file)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    if Path(model_dir).is_dir() and not (Path(model_dir) / "tokenizer.json").is_file():
        tokenizer = build_tokenizer(model.config.special_token_dict)
    else:
        # HATTokenizer keeps special strings typed by the user as plain bytes (no control-token injection)
        tokenizer = HATTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    return model, tokenizer


def generation_kwargs(args: argparse.Namespace, model) -> dict:
    sample = args.temperature > 0
    kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=sample, eos_token_id=model.config.eos_token_id)
    if sample:
        kwargs.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    return kwargs


def prompt_limit(model) -> int:
    """The longest prompt in bytes the model was made for: its byte stacks' `max_position_embeddings`."""
    return min(model.config.encoder_config.max_position_embeddings, model.config.decoder_config.max_position_embeddings)


def too_long(prompt_ids: torch.Tensor, limit: int) -> str | None:
    """The message for a prompt (1, T) longer than `limit` bytes, else None. `generate` itself only warns (its byte
    attention stays within the window); here the prompt grows with the chat, and the prefill's cost with it."""
    n = prompt_ids.shape[1]
    if n <= limit:
        return None
    return (f"hat-generate: the prompt is {n} bytes, more than the model's {limit} (max_position_embeddings); "
            "shorten it (in a chat, /reset starts over)")


def respond(model, tokenizer, prompt_ids: torch.Tensor, gen_kwargs: dict, out=None) -> str:
    """Stream the continuation of `prompt_ids` (1, T) to `out` (stdout) and return it as text."""
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            stream = out or sys.stdout
            stream.write(text + ("\n" if stream_end else ""))
            stream.flush()

    streamer = _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    ids = model.generate(
        input_ids=prompt_ids.to(model.device), attention_mask=torch.ones_like(prompt_ids).to(model.device),
        streamer=streamer, **gen_kwargs,
    )
    return tokenizer.decode(ids[0, prompt_ids.shape[1] :], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model, tokenizer = load(args.model_dir, args.device, args.dtype)
    gen_kwargs = generation_kwargs(args, model)
    chat = not args.no_chat and bool(getattr(tokenizer, "chat_template", None))
    if args.seed is not None:
        torch.manual_seed(args.seed)

    def encode(history: list[dict], text: str) -> torch.Tensor:
        if chat:
            return tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        return torch.tensor([list(tokenizer(text)["input_ids"])])

    system = [{"role": "system", "content": args.system}] if args.system else []
    limit = prompt_limit(model)
    if args.prompt is not None:
        ids = encode(system + [{"role": "user", "content": args.prompt}], args.prompt)
        if message := too_long(ids, limit):
            print(message, file=sys.stderr)
            return 1
        respond(model, tokenizer, ids, gen_kwargs)
        return 0

    history = list(system)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(">>> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if text.strip() == "/exit":
            break
        if text.strip() == "/reset":
            history = list(system)
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        ids = encode(history, text)
        if message := too_long(ids, limit):
            print(message, file=sys.stderr)
            history.pop()  # the turn is dropped; the conversation goes on without it
            continue
        reply = respond(model, tokenizer, ids, gen_kwargs)
        history.append({"role": "assistant", "content": reply})
    return 0


if __name__ == "__main__":
    sys.exit(main())
