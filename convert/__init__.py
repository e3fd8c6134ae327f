"""Llama -> HAT conversion (`convert-llama`, also `python -m hat.convert`); ARCHITECTURE.md §6.

    convert-llama                                   # embedded SmolLM2-135M-Instruct GGUF -> outputs/smollm2-135m-hat
    convert-llama --input /models/Llama-3.1-8B --output outputs/llama-3.1-8b-hat --preset release-8b --dtype bfloat16

Where each piece is:
    table.py            LLAMA_TO_HAT, DROPPED, hat_key, ConversionError: the renaming, one table and a strict loop
    sizing.py           presets, the `auto` sizes, parameter counts, hat_config_from_llama
    init.py             init_new_modules (one named, seeded function), build_new_modules
    in_memory.py        hat_from_llama: a LlamaForCausalLM -> HATForCausalLM in memory (tests, small models)
    safetensors_io.py   reading and checking safetensors headers, writing shards a tensor at a time
    gguf_io.py          GGUF through `gguf.GGUFReader`: default_source, check_gguf, load_llama_gguf
    output.py           the output directory: checks, the temporary directory beside it, moving it into place
    card.py             ConversionSummary (what convert-llama prints) and the model card
    checkpoint.py       convert_checkpoint (HF dir -> HAT dir, streamed) and convert_gguf
    cli.py              convert-llama

Main entry points: `hat.convert.checkpoint.convert_checkpoint`, `hat.convert.checkpoint.convert_gguf`,
`hat.convert.in_memory.hat_from_llama`, `hat.convert.sizing.hat_config_from_llama`.
"""
