"""Export lm-eval tasks to local JSON lines, plus task overrides that read them: the same suites, offline.

    python -m hat.eval.offline --tasks hat_en,hat_de --out data/eval_offline          # once, where the Hub is reachable
    python -m hat.eval.harness --model hat --model_args pretrained=DIR \
        --include_path data/eval_offline/tasks --tasks hat_en_local,hat_de_local  # then anywhere, offline

For each task of the requested tasks, groups or tags this writes `<out>/data/<task>/<split>.jsonl` (the raw rows,
before the task's `process_docs`) for every split the task uses, and for each requested name one file
`<out>/tasks/<name>_local.yaml`: a group `<name>_local` of the same shape whose leaves are the upstream tasks, by
name, with only the data source overridden:

    - task: arc_challenge
      dataset_path: json
      dataset_name: null
      custom_dataset: null
      dataset_kwargs: {data_files: {train: .../train.jsonl, validation: ..., test: ...}}

Prompts, metrics, filters, few-shot settings and result names stay upstream's. Subgroups (MMLU's categories)
become inline groups with upstream's `aggregate_metric_list`; settings that an upstream group passes down to its
members (rare; none in hat_en / hat_de) are not carried over. Paths in the YAML are absolute unless
`--relative_to DIR` is given (then they are relative to DIR, the directory lm-eval must be run from).
`eval/tasks/samples/hat_samples_local.yaml` is a hand-written file of this kind (its paths relative to `eval/tasks`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

SPLIT_FIELDS = ("training_split", "validation_split", "test_split", "fewshot_split")


def _path(p: Path, relative_to: Path | None) -> str:
    return os.path.relpath(p, relative_to) if relative_to else str(p.resolve())


def export_task(task, out: Path, relative_to: Path | None = None) -> dict:
    """Write the splits of one loaded lm-eval `Task` to `out/data/<task>/` and return its override entry."""
    name = task.config.task
    data_files = {}
    for split in dict.fromkeys(getattr(task.config, f) for f in SPLIT_FIELDS):
        if split is None or split not in task.dataset:
            continue
        path = out / "data" / name / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        task.dataset[split].to_json(str(path), lines=True, force_ascii=False)
        data_files[split] = _path(path, relative_to)
    if not data_files:
        raise ValueError(f"task {name!r}: none of its splits {[getattr(task.config, f) for f in SPLIT_FIELDS]} has data")
    # custom_dataset: null, or a task that loads its data with a function (ours: `harness.task_data`) keeps doing so
    return {"task": name, "dataset_path": "json", "dataset_name": None, "custom_dataset": None,
            "dataset_kwargs": {"data_files": data_files}}  # fmt: skip


def _aggregation(group) -> list[dict] | None:
    metrics = group.aggregate_metric_list
    if not metrics:
        return None
    return [asdict(m) if is_dataclass(m) else dict(m) for m in metrics]


def _entries(children, out: Path, relative_to: Path | None, pbar) -> list[dict]:
    from lm_eval.api.group import Group

    entries = []
    for child in children:
        if isinstance(child, Group):
            # inline groups are named "<parent>::<name>" once built; lm-eval adds the new parent's prefix again
            entry = {"group": f"{child.name.split('::')[-1]}_local", "task": _entries(child, out, relative_to, pbar)}
            if (aggregation := _aggregation(child)) is not None:
                entry["aggregate_metric_list"] = aggregation
            entries.append(entry)
        else:
            entries.append(export_task(child, out, relative_to))
            pbar.update(1)
    return entries


def export(names: list[str], out: str | os.PathLike, manager, relative_to: str | os.PathLike | None = None) -> list[Path]:
    """Export the tasks behind `names` (tasks, groups or tags) and write one `<name>_local.yaml` per name.

    Raises:
        ValueError: an unknown name (see `hat.eval.report.check_tasks`).
    """
    from lm_eval.api.group import Group

    from .report import check_tasks

    check_tasks(names, manager)
    out = Path(out)
    relative_to = Path(relative_to).resolve() if relative_to else None
    written = []
    for name in names:
        loaded = manager.load([name])  # builds the tasks, which loads (downloads) their data
        built = loaded["groups"].get(name)  # a Group keeps its children; a task or a tag is a flat list
        children = list(built) if isinstance(built, Group) else list(loaded["tasks"].values())
        total = len(loaded["tasks"])
        with tqdm(total=total, desc=f"export {name}") as pbar:
            entries = _entries(children, out, relative_to, pbar)
        spec = {"group": f"{name}_local", "task": entries}
        if isinstance(built, Group) and (aggregation := _aggregation(built)) is not None:
            spec["aggregate_metric_list"] = aggregation
        spec["metadata"] = {"version": 1.0, "exported_from": name}
        path = out / "tasks" / f"{name}_local.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Offline copy of {name!r}, written by `python -m hat.eval.offline`; data in {_path(out / 'data', relative_to)}\n"
        path.write_text(header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    from .report import task_manager

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", required=True, help="comma-separated tasks, groups or tags (e.g. hat_en,hat_de)")
    parser.add_argument("--out", default="data/eval_offline")
    parser.add_argument("--include_path", nargs="*", default=None, help="more lm-eval task directories")
    parser.add_argument("--relative_to", default=None, help="write data paths relative to this directory")
    args = parser.parse_args()
    names = [t for t in args.tasks.split(",") if t]
    for path in export(names, args.out, task_manager(args.include_path), args.relative_to):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
