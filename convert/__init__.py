"""`convert-llama` (also `python -m hat.convert`): a Llama checkpoint (HF dir or GGUF) -> a HAT checkpoint.

The work is done in `hat.conversion`; this package is its command line.
"""
