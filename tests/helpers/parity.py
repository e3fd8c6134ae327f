"""Splitter parity tools (a test helper: not part of the `hat` library): compare our splitter with a reference.

    from tests.helpers.parity import first_mismatch, probe_code_points
    from hat_splitter import HATSplitter
    reference = HATSplitter().split_with_limit
    probe_code_points(range(0x110000), lambda t: split_words(t, 100), lambda t: reference(t, 100))  # -> []

The splitters are arguments (the reference is `hat_splitter.HATSplitter().split_with_limit`, from the `test` extra).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PROBE_TEMPLATES", "first_mismatch", "probe_code_points"]


def first_mismatch(ours: list[bytes], theirs: list[bytes], context: int = 3) -> str | None:
    """None if the word lists are equal, else a short report of the first differing word with context."""
    if ours == theirs:
        return None
    i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    lo = max(0, i - context)
    return (
        f"first mismatch at word {i} (byte {sum(map(len, theirs[:i]))}; {len(ours)} vs {len(theirs)} words)\n"
        f"  ours:   {ours[lo : i + context + 1]}\n"
        f"  theirs: {theirs[lo : i + context + 1]}"
    )


# Contexts that expose every property the rule reads (word-break class, \p{P}, \p{Ll}, \p{Lu}, \s, emoji).
PROBE_TEMPLATES = (
    "a{c}a", "1{c}1", "${c}", "{c}B", "a{c}", " {c}", "\t\u200d{c}", "{c}\u0301", "\u05d0{c}\u05d0", "{c}{c}",
    "\u30a2{c}\u30a2", "_{c}", "{c}.", "\u05d0{c}", "a.{c}", "{c}\u200d\U0001F642",
)


def probe_code_points(code_points, split: Callable[[str], list[bytes]], reference: Callable[[str], list[bytes]],
                      templates=PROBE_TEMPLATES) -> list[int]:
    """Code points whose words differ between `split` and `reference` in any of `templates`.

    All probes of one template are joined by newlines (always a word boundary) and split at once.
    """
    bad = set()
    cps = [c for c in code_points if not 0xD800 <= c <= 0xDFFF and chr(c) not in "\n\x0b\x0c\r\x85\u2028\u2029"]
    for template in templates:
        text = "\n".join(template.format(c=chr(c)) for c in cps)
        ours, theirs = split(text), reference(text)
        if ours == theirs:
            continue
        lines_ours, lines_theirs = _lines(ours), _lines(theirs)
        if len(lines_ours) != len(cps) or len(lines_theirs) != len(cps):
            bad.update(c for c in cps if split(template.format(c=chr(c))) != reference(template.format(c=chr(c))))
            continue
        bad.update(c for c, a, b in zip(cps, lines_ours, lines_theirs) if a != b)
    return sorted(bad)


def _lines(words: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    for w in words:
        if w == b"\n":
            out.append([])
        else:
            out[-1].append(w)
    return out
