"""The code a saved checkpoint carries, so that it loads where this package is not installed (ARCHITECTURE.md §4.1).

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)   # HATForCausalLM, without `import hat`
    AutoModel.from_pretrained(path, trust_remote_code=True)              # HATModel (no head)
    AutoTokenizer.from_pretrained(path, trust_remote_code=True)          # HATTokenizer

Every `save_pretrained` (config, model, tokenizer) calls `write_code_files`, which writes the modules of this
package that the config, the model and the tokenizer import, each as it is installed, into the checkpoint folder,
flat (transformers loads remote code from one folder): `hat/config.py` is `configuration_hat.py`,
`hat/causal_lm.py` `modeling_hat.py`, `hat/tokenizer.py` `tokenization_hat.py`, and every other module `hat_<path>.py`
(`hat/model/layout.py` -> `hat_model_layout.py`). The only change is in the relative imports, rewritten to the flat
names (`from ..config import HATConfig` -> `from .configuration_hat import HATConfig`); the files are generated
from the installed sources at save time, so a checkpoint's code is always the code that saved it. `config.json`
gets `CONFIG_AUTO_MAP`, `tokenizer_config.json` `TOKENIZER_AUTO_MAP`.

Loaded that way, the same module runs inside transformers' module cache, where the files are already flat: a save
from there copies them as they are.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENTRY_MODULES = {"config": "configuration_hat", "causal_lm": "modeling_hat", "tokenizer": "tokenization_hat"}
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_hat.HATConfig",
    "AutoModel": "modeling_hat.HATModel",
    "AutoModelForCausalLM": "modeling_hat.HATForCausalLM",
}
TOKENIZER_AUTO_MAP = {"AutoTokenizer": [None, "tokenization_hat.HATTokenizer"]}

_HERE = Path(__file__).resolve().parent
# Installed as `hat.remote_code`, or a flat copy in transformers' module cache (`transformers_modules.<dir>...`).
_INSTALLED = __package__ == "hat"


def flat_name(key: str) -> str:
    """A module of this package, dotted below `hat` (`model.layout`), -> its file name in a checkpoint, without `.py`."""
    return ENTRY_MODULES.get(key) or "hat_" + key.replace(".", "_")


def code_files() -> dict[str, str]:
    """The code files of a checkpoint: file name -> text, for the config, the model, the tokenizer and what they
    import."""
    return _package_files() if _INSTALLED else _flat_files()


def write_code_files(save_directory: str | Path) -> list[str]:
    """Write `code_files()` into `save_directory` (created if needed); returns the paths written."""
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in code_files().items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(str(folder / name))
    return written


# ------------------------------------------------------------------------------------------ the installed package
def _source_path(key: str) -> Path:
    path = _HERE.joinpath(*key.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _import_key(key: str, path: Path, node: ast.ImportFrom) -> str:
    """The module (dotted below `hat`) that a relative import in module `key` (file `path`) names."""
    where = f"hat/{path.relative_to(_HERE)}:{node.lineno}"
    if node.module is None:
        raise ValueError(f"{where}: `from . import name` cannot be flattened; import from the module by name")
    base = key.split(".") if path.name == "__init__.py" else key.split(".")[:-1]
    if node.level - 1 > len(base):
        raise ValueError(f"{where}: the relative import goes above the package")
    target = ".".join([*base[: len(base) - node.level + 1], node.module])
    if not _source_path(target).is_file():
        raise ValueError(f"{where}: no module hat.{target}")
    return target


def _flatten(key: str) -> tuple[str, list[str]]:
    """Module `key`'s source with its relative imports made flat, and the modules it imports."""
    path = _source_path(key)
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    edits, imports = [], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = _import_key(key, path, node)
            imports.append(target)
            names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
            edits.append((node, f"from .{flat_name(target)} import {names}"))
    # Bottom up, each statement on its first line and the lines it spanned left blank, so that line numbers stay.
    for node, statement in sorted(edits, key=lambda edit: edit[0].lineno, reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        head, tail = lines[first][: node.col_offset], lines[last][node.end_col_offset :]
        lines[first : last + 1] = [head + statement + tail] + ["\n"] * (last - first)
    header = (f"# hat/{path.relative_to(_HERE).as_posix()} of the `hat` package (hat-toolkit), written by "
              "hat.remote_code.write_code_files with its imports made flat. Edit the package, not this copy.\n")
    return header + "".join(lines), imports


def _package_files() -> dict[str, str]:
    files, todo, seen = {}, list(ENTRY_MODULES), set(ENTRY_MODULES)
    while todo:
        key = todo.pop()
        text, imports = _flatten(key)
        files[flat_name(key) + ".py"] = text
        for target in imports:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    if len({flat_name(key) for key in seen}) != len(seen):
        raise AssertionError(f"two modules flatten to one file name: {sorted(seen)}")
    return dict(sorted(files.items()))


# ------------------------------------------------------------------------------------------ a flat copy
def _flat_files() -> dict[str, str]:
    # transformers copies into its cache the module it was asked for and what that imports: a folder from which only
    # the config was loaded has no model files to copy.
    files, todo = {}, [name + ".py" for name in ENTRY_MODULES.values() if (_HERE / f"{name}.py").is_file()]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        files[name] = (_HERE / name).read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(files[name])):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module + ".py")
    return dict(sorted(files.items()))
