"""The model's parts, one file each (ARCHITECTURE.md §3):

    layout.py     where every byte and word sits; attention masks
    attention.py  Llama layers in sequence; the cross-attention of pooling and decoder
    encoder.py    the byte encoder
    pooling.py    word pooling (the encoder connector)
    backbone.py   the Llama 3.1 blocks over words
    decoder.py    the decoder connector and the word-to-byte decoder
    parts.py      the parts' names in memory and on disk; the output-inert weights, frozen by construction
    modeling.py   `HATPreTrainedModel`, `HATModel` (the byte-level stack and its step methods, ARCHITECTURE.md §3.8)

`HATForCausalLM` (the head, the loss and `generate`) is `hat/causal_lm.py`.
"""
