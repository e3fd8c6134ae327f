"""A spy on the model's word splitting: which training paths still split inside `forward`.

    with splitter_calls() as calls:
        model(**batch)
    assert calls == []          # the batch carried `word_lengths`
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock


@contextlib.contextmanager
def splitter_calls() -> Iterator[list[str]]:
    """Records each call of `HATModel.word_lengths` and of the splitter functions the model splits with. The data
    collator holds its own reference to the splitter (imported before the spy), so its calls are not recorded."""
    import hat.splitter as splitter
    from hat.model.modeling import HATModel

    calls: list[str] = []

    def spy(name, function):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)

        return wrapped

    with contextlib.ExitStack() as stack:
        method = spy("HATModel.word_lengths", HATModel.word_lengths)
        stack.enter_context(mock.patch.object(HATModel, "word_lengths", method))
        for name in ("word_lengths_batch", "word_lengths_from_bytes"):
            stack.enter_context(mock.patch.object(splitter, name, spy(name, getattr(splitter, name))))
        yield calls
