"""Byte-level tokenizer for HAT (ARCHITECTURE.md §2): token ids 0-255 are byte values, and special tokens take byte
values that never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF; the rule is `hat.special_tokens`). The release default is
`{"<|eot_id|>": 192}`, and `<|eot_id|>` is eos.

    from hat.tokenizer import HATTokenizer, build_tokenizer

    tokenizer = build_tokenizer()                    # or build_tokenizer(config.special_token_dict)
    tokenizer("Straße")["input_ids"]                 # [83, 116, 114, 97, 195, 159, 101] = list("Straße".encode())
    tokenizer.save_pretrained("out/")                # tokenizer.json, tokenizer_config.json, chat_template.jinja
    tokenizer = HATTokenizer.from_pretrained("out/")
    tokenizer = AutoTokenizer.from_pretrained("out/", trust_remote_code=True)   # the same, without this package
    # AutoTokenizer.from_pretrained("out/") loads a stock class, also safe for chats (see "Two classes" below)

The backend is a stock `tokenizers` pipeline: the `ByteLevel` pre-tokenizer (GPT-2's byte <-> unicode alphabet,
`use_regex=False`, so the whole text is one piece) and a BPE model without merges whose vocabulary maps the
character of byte b to id b, except that the ids of special byte values belong to the special strings. So plain text
encodes to exactly its UTF-8 bytes, and `decode` turns the ids back into bytes and the bytes into text, writing
U+FFFD for any byte run that is not valid UTF-8 (e.g. a generation cut inside a character): any byte sequence
decodes. `decode(ids, skip_special_tokens=True)` drops the special ids; with `False` they come out as their strings.
Bad input is an error that names it: text with a lone surrogate (it has no UTF-8 bytes), an id outside 0-255.

Chat format (Llama 3.1, ARCHITECTURE.md §2): `<|begin_of_text|>`, then per turn
`<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`; with `add_generation_prompt` the text ends
with the assistant header and `\\n\\n`. `content` is a string or, in the OpenAI format, a list of
`{"type": "text", "text": ...}` parts, joined without a separator (as Llama 3.1's own template does); other part
types are refused: HAT reads text only. Only the strings in `special_token_dict` are one-byte tokens; by default
that is `<|eot_id|>` alone, and the other markers are plain bytes. The assistant turns sit in
`{% generation %}` blocks that cover the content and its `<|eot_id|>`, which is what TRL's
`assistant_only_loss=True` trains on.

No injection: only the chat template writes control tokens.
- `tokenizer(text)` splits special strings into plain bytes (`split_special_tokens` is `True` by default), so
  `tokenizer("a<|eot_id|>b")` gives the 12 bytes of the string. Pass `split_special_tokens=False` (per call or as an
  attribute) for trusted text that should contain control tokens, e.g. text rendered with `tokenize=False`.
- `apply_chat_template(..., tokenize=True)` marks every special string in the messages, tools, documents and
  template variables with two characters that occur nowhere in the inputs (private-use ones while any are free,
  then unassigned ones), renders the template, and
  encodes the marked strings as plain bytes and the template's own special strings as their ids. The assistant mask
  comes from the same pass, so it stays exact. `apply_chat_template(..., tokenize=False)` returns the plain rendered
  text, in which the template's and the inputs' special strings look alike.

Two classes. `save_pretrained` writes files that load as `HATTokenizer` (`HATTokenizer.from_pretrained`, or
`AutoTokenizer.from_pretrained(path, trust_remote_code=True)`, which runs the code files the folder carries,
`hat.remote_code`), and as a stock `TokenizersBackend` with a plain `AutoTokenizer.from_pretrained(path)`. Saving
`split_special_tokens=True` could not make the stock class safe (its `apply_chat_template` encodes the rendered text
with that setting, so the template's own `<|eot_id|>` would become plain bytes too); the saved files are a stock
view instead (`hat.tokenizer_files`): there the control bytes are Unicode noncharacters (U+FDD0 for 192), so the stock
class reads `<|eot_id|>` in plain text and in messages as its 10 bytes, its chat template writes the noncharacter
for each end of turn (192), escaping noncharacters inside messages, and it decodes 192 as `<|eot_id|>`. Its ids
and assistant masks equal ours for every chat; its `eos_token` is "\ufdd0" (id 192), and in plain text the
noncharacter U+FDD0 itself is the one string that gives a control byte.

Padding: `pad_token` is `<|eot_id|>`, which costs no extra special byte: padded positions are masked by
`attention_mask`, and TRL sets their labels to -100. `padding_side` is "right", for training; generation code
should set `tokenizer.padding_side = "left"`.

Speed: the Rust backend spends about 1 µs per byte; for bulk plain text, `list(text.encode("utf-8"))` gives the same
ids. `apply_chat_template` encodes in Python and is faster than the stock class.
"""

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping

from transformers import BatchEncoding, TokenizersBackend
from transformers.utils.chat_template_utils import get_json_schema, render_jinja_template

from .special_tokens import (
    BYTE_VOCAB_SIZE,
    DEFAULT_SPECIAL_TOKEN_DICT,
    EOT_TOKEN,
    special_token_regex,
    validate_special_token_dict,
)
from .tokenizer_files import (
    ESCAPE,
    MARKERS,
    TEXT_MACRO,
    StockTokenizer,
    byte_backend,
    hat_kwargs_from_byte_files,
    hat_kwargs_from_stock,
)

DEFAULT_MODEL_MAX_LENGTH = 262144  # bytes; HATConfig.max_position_embeddings

CHAT_TEMPLATE = TEXT_MACRO + r"""{{- '<|begin_of_text|>' }}
{%- for message in messages %}
    {%- if message['content'] is not defined %}
        {{- raise_exception('HAT chat template: every message needs a content (a string or text parts)') }}
    {%- elif message['content'] is string %}
        {%- set content = message['content'] %}
    {%- else %}
        {%- if message['content'] | rejectattr('type', 'equalto', 'text') | list %}
            {{- raise_exception('HAT chat template: HAT reads text only; content parts must be {"type": "text", "text": ...}') }}
        {%- endif %}
        {%- set content = message['content'] | map(attribute='text') | join('') %}
    {%- endif %}
    {{- '<|start_header_id|>' + hat_text(message['role']) + '<|end_header_id|>\n\n' }}
    {%- if message['role'] == 'assistant' %}
        {%- generation %}
            {{- hat_text(content) + '<|eot_id|>' }}
        {%- endgeneration %}
    {%- else %}
        {{- hat_text(content) + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"""

# Where `apply_chat_template` looks for two characters absent from its inputs: the private use areas (Supplementary
# A and B, then the BMP's), then planes 4-13 (unassigned: no template writes them of itself), then all the rest.
_MARKER_RANGES = (
    range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE), range(0xE000, 0xF900), range(0x40000, 0xE0000),
    range(0xD800), range(0xE000, 0x110000),
)
_DROP = -1  # segment kinds besides a control token id: a marker (no token) ...
_TEXT = -2  # ... and plain text (one token per UTF-8 byte)


def build_tokenizer(
    special_token_dict: dict[str, int] | None = None, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
) -> "HATTokenizer":
    """
    Build the byte-level HAT tokenizer.

    Args:
        special_token_dict (`dict[str, int]`, *optional*): special strings and the byte value each one takes.
            Defaults to `{"<|eot_id|>": 192}`, the released models' setting.
        model_max_length (`int`): longest sequence in bytes, for truncation and length warnings.

    Raises:
        `ValueError`: if `special_token_dict` is invalid, see `hat.special_tokens.validate_special_token_dict`.
    """
    special_token_dict = validate_special_token_dict(
        DEFAULT_SPECIAL_TOKEN_DICT if special_token_dict is None else special_token_dict
    )
    return HATTokenizer(
        tokenizer_object=byte_backend(special_token_dict),
        eos_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        split_special_tokens=True,
    )


class HATTokenizer(TokenizersBackend):
    """
    `TokenizersBackend` with the no-injection rules of this module's docstring: plain text never yields control tokens
    unless asked (`split_special_tokens=False`), and in `apply_chat_template` only the template writes them.
    Get one from `build_tokenizer` or `HATTokenizer.from_pretrained` (both default to `split_special_tokens=True`), or
    from `AutoTokenizer.from_pretrained(path, trust_remote_code=True)`; without `trust_remote_code`, `AutoTokenizer`
    loads the saved stock view (`hat.tokenizer_files`).
    """

    def __init__(self, *args, **kwargs):
        if "special_token_dict" in kwargs:  # files that `save_pretrained` wrote: the stock view
            kwargs = hat_kwargs_from_stock(kwargs)
        elif "tokenizer_object" not in kwargs and "added_tokens_decoder" in kwargs:  # byte-id files (earlier saves)
            kwargs = hat_kwargs_from_byte_files(kwargs)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        kwargs.setdefault("split_special_tokens", True)
        tokenizer = super().from_pretrained(*args, **kwargs)
        validate_special_token_dict(tokenizer.special_token_dict)
        return tokenizer

    @property
    def special_token_dict(self) -> dict[str, int]:
        """`dict[str, int]`: the special strings and their ids (byte values)."""
        return {token.content: i for i, token in self.added_tokens_decoder.items() if token.special}

    def apply_chat_template(
        self,
        conversation,
        tools=None,
        documents=None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
        sanitize_control_tokens: bool = True,
        padding=False,
        truncation=False,
        max_length: int | None = None,
        return_tensors=None,
        return_dict: bool = True,
        return_assistant_tokens_mask: bool = False,
        tokenizer_kwargs: dict | None = None,
        **kwargs,
    ):
        """
        `PreTrainedTokenizerBase.apply_chat_template` (same arguments and outputs), except that with `tokenize=True`
        special strings in the inputs are always encoded as plain bytes: only the template writes control tokens.
        A message's `content` is a string or a list of `{"type": "text", "text": ...}` parts.
        `sanitize_control_tokens` is accepted for compatibility and has no effect. `tokenizer_kwargs` may hold
        `padding_side`, `pad_to_multiple_of`, `return_attention_mask` and `add_special_tokens` (which adds nothing
        here).
        """
        if isinstance(conversation, (list, tuple)) and conversation:
            chats = conversation if isinstance(conversation[0], (list, tuple)) else [conversation]
            for c, chat in enumerate(chats):
                for m, message in enumerate(chat):
                    _check_message(message, f"conversation[{c}][{m}]" if chats is conversation else f"conversation[{m}]")
        if not tokenize:
            return super().apply_chat_template(
                conversation,
                tools=tools,
                documents=documents,
                chat_template=chat_template,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tokenize=False,
                **kwargs,
                hat_tokenizer=True,
            )
        if return_assistant_tokens_mask and not return_dict:
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible.")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        pad_kwargs = dict(tokenizer_kwargs or {})
        pad_kwargs.pop("add_special_tokens", None)
        unknown = set(pad_kwargs) - {"padding_side", "pad_to_multiple_of", "return_attention_mask"}
        if unknown:
            raise TypeError(f"HATTokenizer.apply_chat_template: unsupported tokenizer_kwargs {sorted(unknown)}")

        chat_template = self.get_chat_template(chat_template, tools)
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        is_batched = isinstance(conversation[0], (list, tuple))
        conversations = conversation if is_batched else [conversation]
        # As the base class: drop None values (e.g. OpenAI's `content=None`)
        conversations = [[{k: v for k, v in m.items() if v is not None} for m in chat] for chat in conversations]

        if tools is not None:  # convert functions to schemas now, so that their docstrings get marked too
            tools = [get_json_schema(tool) if callable(tool) else tool for tool in tools]

        # Render with the inputs' special strings marked, then encode marked ones as bytes and bare ones as ids
        specials = self.special_token_dict
        inputs = (conversations, tools, documents, kwargs)
        strings = list(_strings(inputs))
        for text in strings:
            _check_utf8(text, "apply_chat_template input")
        start, end = _pick_markers(strings, chat_template, specials)
        alternatives = special_token_regex(specials)
        inputs_re = re.compile(alternatives)
        s, e = re.escape(start), re.escape(end)
        rendered_re = re.compile(f"{s}(?P<marked>{alternatives}){e}|(?P<control>{alternatives})|{s}|{e}")
        conversations, tools, documents, kwargs = _mark(inputs, inputs_re, start, end)
        rendered, generation_indices = render_jinja_template(
            conversations=conversations,
            tools=tools,
            documents=documents,
            chat_template=chat_template,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            continue_final_message=continue_final_message,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **kwargs},  # the special token variables are the template's own
            hat_tokenizer=True,  # inputs are marked here: the template need not escape the stock markers
        )
        input_ids, assistant_masks = [], []
        for i, text in enumerate(rendered):
            segments = _segments(text, rendered_re, specials)
            input_ids.append(_segment_ids(segments))
            if return_assistant_tokens_mask:
                assistant_masks.append(_assistant_mask(segments, generation_indices[i], len(input_ids[-1])))

        # Truncate, pad and convert like `__call__` would
        padding_strategy, truncation_strategy, max_length, _ = self._get_padding_truncation_strategies(
            padding=padding, truncation=truncation, max_length=max_length
        )
        if truncation_strategy.value != "do_not_truncate" and max_length is not None:
            keep = slice(None, max_length) if self.truncation_side == "right" else slice(-max_length, None)
            input_ids = [ids[keep] for ids in input_ids]
            assistant_masks = [mask[keep] for mask in assistant_masks]
        out = self.pad(
            {"input_ids": input_ids},
            padding=padding_strategy,
            max_length=max_length,
            pad_to_multiple_of=pad_kwargs.get("pad_to_multiple_of"),
            padding_side=pad_kwargs.get("padding_side"),
            return_attention_mask=pad_kwargs.get("return_attention_mask"),
        )
        data = dict(out)
        if return_assistant_tokens_mask:
            padding_side = pad_kwargs.get("padding_side") or self.padding_side
            data["assistant_masks"] = [
                _pad_right_or_left(mask, len(ids), padding_side) for mask, ids in zip(assistant_masks, out["input_ids"])
            ]
        if not is_batched and not return_tensors:
            data = {key: value[0] for key, value in data.items()}
        out = BatchEncoding(data, tensor_type=return_tensors)
        return out if return_dict else out["input_ids"]

    def _encode_plus(self, text, text_pair=None, *args, **kwargs) -> BatchEncoding:
        # The backend would raise a TypeError on a lone surrogate without saying which text holds it.
        _check_text_input(text, "text")
        _check_text_input(text_pair, "text_pair")
        return super()._encode_plus(text, text_pair, *args, **kwargs)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        # The backend overflows on negative ids and drops ids past its vocabulary without a word.
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        ids = ids["input_ids"] if isinstance(ids, Mapping) else ids
        if ids and (min(ids) < 0 or max(ids) >= BYTE_VOCAB_SIZE):
            i = next(i for i, t in enumerate(ids) if not 0 <= t < BYTE_VOCAB_SIZE)
            raise ValueError(f"token id {ids[i]!r} at position {i} is not a byte value: HAT token ids are 0-255")
        return super()._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Save the stock view of this tokenizer (`hat.tokenizer_files.StockTokenizer`): the files load as
        `HATTokenizer` with `HATTokenizer.from_pretrained` or `AutoTokenizer(..., trust_remote_code=True)`, and as a
        stock `TokenizersBackend` that reads special strings in text as plain bytes with `AutoTokenizer`."""
        stock = StockTokenizer(
            self.special_token_dict, eos_token=self.eos_token, pad_token=self.pad_token,
            chat_template=self.chat_template, model_max_length=self.model_max_length, padding_side=self.padding_side,
            truncation_side=self.truncation_side,
        )
        return stock.save_pretrained(save_directory, **kwargs)


def _strings(obj):
    """Every string in `obj` (strings, mappings with their keys, lists and tuples)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _strings(value)


def _pick_markers(strings: Iterable[str], chat_template: str, specials: dict[str, int]) -> tuple[str, str]:
    """Two characters that occur in no input string, in the template or in a special string (see `_MARKER_RANGES`).

    Raises:
        `ValueError`: if the inputs use every code point (more than a million distinct characters).
    """
    used = set(chat_template).union(*specials, MARKERS.values(), ESCAPE)
    for s in strings:
        used.update(s)
    free = _free_chars(used)
    start, end = next(free, None), next(free, None)
    if end is None:
        raise ValueError(
            f"apply_chat_template: the inputs use {len(used)} distinct characters, leaving fewer than two to mark "
            "special strings with"
        )
    return start, end


def _free_chars(used: set[str]) -> Iterator[str]:
    seen = set()
    for block in _MARKER_RANGES:
        for c in block:
            ch = chr(c)
            if ch not in used and ch not in seen:
                seen.add(ch)
                yield ch


def _check_utf8(text: str, where: str) -> None:
    """A `ValueError` naming the first lone surrogate in `text`: such text is not Unicode and has no UTF-8 bytes."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{where} holds a lone surrogate U+{ord(text[err.start]):04X} at index {err.start}: it is not valid "
            "Unicode and has no UTF-8 bytes (decode such text with errors='replace' first)"
        ) from None


def _check_text_input(text, where: str) -> None:
    """`_check_utf8` on a `__call__` text argument: a string, a list of them, or a list of lists (pre-split words)."""
    if isinstance(text, str):
        _check_utf8(text, where)
    elif isinstance(text, (list, tuple)):
        for i, item in enumerate(text):
            _check_text_input(item, f"{where}[{i}]")


def _check_message(message, where: str) -> None:
    """A chat message is a mapping whose `content`, if any, is a string or a list of text parts."""
    if not isinstance(message, Mapping):
        raise ValueError(f"{where} must be a dict with 'role' and 'content', got {type(message).__name__} {message!r}")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, (list, tuple)):
        raise ValueError(
            f"{where}['content'] must be a string or a list of {{'type': 'text', 'text': ...}} parts, got "
            f"{type(content).__name__} {content!r}"
        )
    for i, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise ValueError(
                f"{where}['content'][{i}] is a {kind!r} part: HAT reads text only; content parts must be "
                f"{{'type': 'text', 'text': str}}, got {part!r}"
            )


def _mark(obj, inputs_re: re.Pattern, start: str, end: str):
    """Wrap every special string in `obj`'s strings (dict keys included) in `start` ... `end`."""
    if isinstance(obj, str):
        return inputs_re.sub(lambda m: start + m.group(0) + end, obj)
    if isinstance(obj, Mapping):
        return {_mark(k, inputs_re, start, end): _mark(v, inputs_re, start, end) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mark(v, inputs_re, start, end) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_mark(v, inputs_re, start, end) for v in obj)
    return obj


def _segments(text: str, rendered_re: re.Pattern, specials: dict[str, int]) -> list[tuple[int, int, int, str]]:
    """
    Cut rendered text into `(char_start, char_end, kind, text)` segments: `kind` is a control token id for a bare
    special string (written by the template), `_TEXT` for plain text (a marked special string included, without its
    markers) and `_DROP` for a marker.
    """
    segments, pos = [], 0
    for m in rendered_re.finditer(text):
        if m.start() > pos:
            segments.append((pos, m.start(), _TEXT, text[pos : m.start()]))
        if m.group("marked") is not None:
            segments.append((m.start(), m.start() + 1, _DROP, ""))
            segments.append((m.start() + 1, m.end() - 1, _TEXT, m.group("marked")))
            segments.append((m.end() - 1, m.end(), _DROP, ""))
        elif m.group("control") is not None:
            segments.append((m.start(), m.end(), specials[m.group("control")], ""))
        else:  # a lone marker: the template cut a marked string apart
            segments.append((m.start(), m.end(), _DROP, ""))
        pos = m.end()
    if pos < len(text):
        segments.append((pos, len(text), _TEXT, text[pos:]))
    return segments


def _segment_ids(segments) -> list[int]:
    ids = []
    for _, _, kind, text in segments:
        if kind == _TEXT:
            ids.extend(text.encode("utf-8"))
        elif kind != _DROP:
            ids.append(kind)
    return ids


def _assistant_mask(segments, generation_indices: list[tuple[int, int]], length: int) -> list[int]:
    """1 for every token made from a character inside one of the `[start, end)` character spans, else 0."""
    starts = [segment[0] for segment in segments]
    first_token, n = [], 0  # id index of each segment's first token
    for _, _, kind, text in segments:
        first_token.append(n)
        n += len(text.encode("utf-8")) if kind == _TEXT else kind != _DROP

    def tokens_before(char: int, inclusive: bool) -> int:
        """Number of tokens made from the characters before `char` (and from `char` itself if `inclusive`)."""
        i = bisect.bisect_right(starts, char) - 1
        seg_start, _, kind, text = segments[i]
        if kind == _TEXT:
            return first_token[i] + len(text[: char - seg_start + inclusive].encode("utf-8"))
        return first_token[i] + (inclusive and kind != _DROP)

    mask = [0] * length
    for start, end in generation_indices:
        if end > start:
            first, last = tokens_before(start, False), tokens_before(end - 1, True)
            mask[first:last] = [1] * (last - first)
    return mask


def _pad_right_or_left(mask: list[int], length: int, side: str) -> list[int]:
    padding = [0] * (length - len(mask))
    return mask + padding if side == "right" else padding + mask


__all__ = ["CHAT_TEMPLATE", "HATTokenizer", "build_tokenizer"]
