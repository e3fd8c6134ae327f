"""The byte tokenizer's `tokenizers` pipelines, and the files a saved HAT tokenizer consists of (ARCHITECTURE.md §2).

Two pipelines, one vocabulary (ids 0-255 are the byte values; the `ByteLevel` pre-tokenizer maps each byte to
GPT-2's printable character for it, a BPE model without merges maps that character to its id):
- `byte_backend`: what `HATTokenizer` runs. Each special string (`<|eot_id|>`) is an added token with its byte value.
- `stock_backend`: what a stock class reads from a saved `tokenizer.json`. There, special byte v is an added token
  whose string is a Unicode noncharacter, `MARKERS[v]` (U+FDD0 for 192), not the special string: a stock tokenizer
  then reads `<|eot_id|>` in any text as its 10 bytes, never as 192. The decoder writes the special string back
  (`decode([192]) == "<|eot_id|>"`), and the saved chat template writes the marker wherever ours writes a special
  string, so the template's own end-of-turn still becomes 192.

Noncharacters (U+FDD0-U+FDEF and others) are reserved by Unicode for internal use and never assigned; still, text may
hold them, so the chat template escapes them in every message field (role and content) with `ESCAPE` (U+FDEF):
U+FDEF -> U+FDEF "_", each marker -> U+FDEF and its letter ("a" for U+FDD0, ...). The stock pipeline's normalizer
undoes that before the bytes are taken, so a message's bytes are its UTF-8 and no message can produce a control
byte. The price is in plain text given to a stock tokenizer: U+FDEF followed by "_" or "a"-"m" is read as an escape
(U+FDEF "a" gives the bytes of U+FDD0), and a marker there is its control byte. `HATTokenizer` has neither: it
renders the template with `hat_tokenizer=True`, which turns the escaping off, and marks special strings itself.

`save_pretrained` of a `HATTokenizer` writes the stock files (`StockTokenizer`), plus `special_token_dict` and
`auto_map` in `tokenizer_config.json`; `HATTokenizer` reads them back into its own pipeline and template
(`hat_kwargs_from_stock`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import TokenizersBackend

from .remote_code import TOKENIZER_AUTO_MAP, write_code_files
from .special_tokens import NON_UTF8_BYTE_VALUES, special_token_regex, validate_special_token_dict

# One noncharacter per byte value a special token may take, in order: 192 -> U+FDD0, 193 -> U+FDD1, 245 -> U+FDD2, ...
MARKERS = {value: chr(0xFDD0 + i) for i, value in enumerate(sorted(NON_UTF8_BYTE_VALUES))}
ESCAPE = "\ufdef"
# The escape of each character the template escapes: the marker of the i-th value is ESCAPE + the i-th letter.
_ESCAPES = {ESCAPE: ESCAPE + "_", **{marker: ESCAPE + chr(ord("a") + i) for i, marker in enumerate(MARKERS.values())}}

# The Jinja macro the chat template writes every message field through (string literals in `\u` escapes, so that the
# template's source holds no marker itself).
TEXT_MACRO = (
    "{%- macro hat_text(text) -%}\n"
    "    {#- Escapes what a stock tokenizer reads as control tokens; HATTokenizer passes hat_tokenizer (see\n"
    "        hat/tokenizer_files.py) -#}\n"
    "    {%- if hat_tokenizer is defined -%}{{- text -}}{%- else -%}{{- text"
    + "".join(f" | replace('\\u{ord(c):04x}', '\\u{ord(e[0]):04x}{e[1]}')" for c, e in _ESCAPES.items())
    + " -}}{%- endif -%}\n{%- endmacro %}\n"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, the alphabet of the `ByteLevel` pre-tokenizer and decoder."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return table


def _pipeline(tokens: Mapping[int, str]) -> Tokenizer:
    """Byte vocabulary in which `tokens` (byte value -> string) are added special tokens."""
    byte_to_char = bytes_to_unicode()
    id_to_token = {b: byte_to_char[b] for b in range(256)} | dict(tokens)
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in id_to_token.items()}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    # Added tokens take the ids the vocabulary already gives their strings, so the vocabulary stays at 256
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in sorted(tokens.values())])
    return backend


def byte_backend(special_token_dict: Mapping[str, int]) -> Tokenizer:
    """`HATTokenizer`'s pipeline: plain text is its UTF-8 bytes, each special string an added token."""
    return _pipeline({value: token for token, value in special_token_dict.items()})


def stock_backend(special_token_dict: Mapping[str, int]) -> Tokenizer:
    """The saved pipeline: special byte v is the added token `MARKERS[v]`, decoded as its special string; the
    normalizer undoes the chat template's escapes."""
    backend = _pipeline({value: MARKERS[value] for value in special_token_dict.values()})
    byte_to_char = bytes_to_unicode()
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace(escape, char) for char, escape in _ESCAPES.items() if char != ESCAPE]
        + [normalizers.Replace(_ESCAPES[ESCAPE], ESCAPE)]
    )
    backend.decoder = decoders.Sequence(
        [decoders.Replace(MARKERS[value], "".join(byte_to_char[b] for b in token.encode()))
         for token, value in special_token_dict.items()] + [decoders.ByteLevel()]
    )
    return backend


def _map_template(template, pattern: re.Pattern, table: Mapping[str, str]):
    if template is None:
        return None
    if isinstance(template, Mapping):  # named templates
        return {name: _map_template(t, pattern, table) for name, t in template.items()}
    return pattern.sub(lambda m: table[m.group()], template)


def stock_chat_template(template, special_token_dict: Mapping[str, int]):
    """A chat template (or a dict of named ones) with each special string it writes replaced by its marker.

    Raises:
        `ValueError`: the template holds a marker itself (the saved template could not be read back).
    """
    for t in ([] if template is None else template.values() if isinstance(template, Mapping) else [template]):
        used = sorted(f"U+{ord(c):04X}" for c in set(t) & set(MARKERS.values()) | set(t) & {ESCAPE})
        if used:
            raise ValueError(f"the chat template holds {used}, which the saved tokenizer uses as markers; write "
                             "them as escapes in the template's string literals ('\\ufdd0')")
    table = {token: MARKERS[value] for token, value in special_token_dict.items()}
    return _map_template(template, re.compile(special_token_regex(special_token_dict)), table)


def hat_chat_template(template, special_token_dict: Mapping[str, int]):
    """The inverse of `stock_chat_template`."""
    table = {MARKERS[value]: token for token, value in special_token_dict.items()}
    return _map_template(template, re.compile("|".join(map(re.escape, table))), table)


class StockTokenizer(TokenizersBackend):
    """The stock view of a `HATTokenizer` that `save_pretrained` writes: a `TokenizersBackend` over `stock_backend`."""

    def __init__(self, special_token_dict: Mapping[str, int], **kwargs):
        specials = validate_special_token_dict(special_token_dict)
        for key in ("eos_token", "pad_token"):
            if kwargs.get(key) in specials:
                kwargs[key] = MARKERS[specials[kwargs[key]]]
        kwargs["chat_template"] = stock_chat_template(kwargs.get("chat_template"), specials)
        super().__init__(tokenizer_object=stock_backend(specials), special_token_dict=specials, **kwargs)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # Runs after the base class wrote tokenizer_config.json and before any upload: name the stock class for
        # AutoTokenizer, and our class (with the code files) for AutoTokenizer with trust_remote_code=True.
        config_file = file_names[0]
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        config["tokenizer_class"] = "TokenizersBackend"
        config["auto_map"] = TOKENIZER_AUTO_MAP
        with open(config_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        written = write_code_files(save_directory)
        return tuple(super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)) + tuple(written)


def hat_kwargs_from_stock(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`HATTokenizer` init kwargs read from stock files (they hold `special_token_dict`): its own pipeline, special
    strings and chat template instead of the stock ones."""
    specials = validate_special_token_dict(kwargs.pop("special_token_dict"))
    strings = {MARKERS[value]: token for token, value in specials.items()}
    for key in ("eos_token", "pad_token"):
        content = str(kwargs.get(key))  # a string, or an `AddedToken` as `from_pretrained` passes it
        if content in strings:
            kwargs[key] = strings[content]
    # `from_pretrained` also passes what it read from tokenizer.json: the pipeline is ours instead
    _drop_file_pipeline(kwargs)
    kwargs["tokenizer_object"] = byte_backend(specials)
    kwargs["chat_template"] = hat_chat_template(kwargs.get("chat_template"), specials)
    return kwargs


def hat_kwargs_from_byte_files(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`HATTokenizer` init kwargs read from files whose ids are the bytes themselves and whose special strings are
    added tokens at their byte values (what earlier versions of this package saved, and what any byte-level
    `tokenizers` pipeline of a HAT looks like): our own pipeline for the special tokens found there."""
    added = kwargs.get("added_tokens_decoder") or {}
    specials = validate_special_token_dict({str(token): int(i) for i, token in added.items()
                                            if getattr(token, "special", True)})
    _drop_file_pipeline(kwargs)
    kwargs["tokenizer_object"] = byte_backend(specials)
    return kwargs


def _drop_file_pipeline(kwargs: dict[str, Any]) -> None:
    """Remove what `from_pretrained` read from tokenizer.json (the pipeline is `byte_backend`'s instead)."""
    for key in ("tokenizer_file", "vocab", "merges", "post_processor", "added_tokens_decoder"):
        kwargs.pop(key, None)


__all__ = ["ESCAPE", "MARKERS", "StockTokenizer", "byte_backend", "hat_kwargs_from_byte_files", "hat_kwargs_from_stock",
           "stock_backend"]
