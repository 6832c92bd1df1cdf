"""Outputs of an earlier run: refused, skipped, or resumed with the same options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .._errors import InterruptedRunError, UsageError
from .._explain.registry import METHOD_OPTIONS
from .._inputs.discover import InputImage
from .._outputs.naming import MANIFEST_NAME
from .._outputs.naming import planned_outputs
from .._outputs.table import read_table
from .._outputs.writers import file_digest
from .config import RunConfig, option_values
# Options that may differ between an interrupted run and its --resume without changing any row.
# A method's own options say so themselves (Option.changes_results).
RESUME_NEUTRAL = frozenset({"existing", "fail_fast", "workers", "batch_size", "inputs", "model", "memory_budget",
                            "dicom", "report", "summary", "require", "engine", "ray_address",
                            "gpus_per_worker"} | {option.name for _method, option in METHOD_OPTIONS
                                                  if not option.changes_results})


def check_existing(config: RunConfig, items: Iterable[InputImage], tags: Sequence[str] = ("",),
                   exists: Callable[[Path], bool] = Path.exists) -> None:
    """Refuse to replace earlier outputs unless asked to (``--overwrite``, ``--skip-existing``,
    ``--resume``); a resumed run must use the options the earlier one used. ``tags``: what the
    run's file names may add per explained class (``Prepared.output_tags``); ``exists``: whether
    an output file is there (``Prepared.output_exists``: on a store, from its listing)."""
    if config.existing == "resume":
        _check_resumable(config)
    if config.existing != "refuse":
        return
    status = _earlier_status(config.out_dir)
    if status == "running" or status.startswith("stopped"):
        raise InterruptedRunError(config.out_url or config.out_dir, "killed" if status == "running" else status)
    run_files = [p for p in (config.predictions_path, config.out_dir / MANIFEST_NAME) if p is not None]
    found = [p for p in run_files if p.exists()]  # the run's own files: fetched from a store before
    found += [p for item in items for p in planned_outputs(config, item, tags) if exists(p)]
    if found:
        more = f" and {len(found) - 1} more outputs" if len(found) > 1 else ""
        raise UsageError(f"{config.shown(found[0])} exists{more}; pass --overwrite to replace them or --skip-existing "
                         "to keep them and explain only the images without outputs")


def _earlier_status(out_dir: Path) -> str:
    """How the run in ``out_dir`` ended, as its ``run.json`` says ('' when there is none)."""
    try:
        return str(json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8")).get("status", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _check_resumable(config: RunConfig) -> None:
    """The earlier run in OUT must have used the same model file and result-changing options."""
    path = config.out_dir / MANIFEST_NAME
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        earlier_options, earlier_model = earlier["options"], earlier["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable manifest: the table's own columns are checked when it is read
    current = option_values(config)
    changed = sorted(key for key in current.keys() | earlier_options.keys()
                     if key not in RESUME_NEUTRAL and current.get(key) != earlier_options.get(key))
    if earlier_model != file_digest(config.model):
        changed.insert(0, "the model file")
    if changed:
        raise UsageError(f"--resume: the run in {config.out_url or config.out_dir} used other settings "
                         f"({', '.join(changed)}); "
                         "resume with the same options, or start again with --overwrite")


def previous_rows(config: RunConfig, columns: tuple[str, ...]) -> dict[str, list[dict[str, object]]]:
    """``--resume``: the earlier table's rows of each image it finished (every row ok or
    skipped), keyed by input as the table writes it, in table order. Its ``columns`` must be
    those this run writes."""
    path = config.kept_table_path
    if config.existing != "resume" or not path.exists():
        return {}
    try:
        earlier_columns, records = read_table(path, config.table_format)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--resume: cannot read the earlier table {config.shown(path)}: {exc}") from None
    if records and earlier_columns != columns:
        raise UsageError(f"--resume: {config.shown(path)} has other columns than this run writes; resume with the same "
                         "options, or start again with --overwrite")
    by_input: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_input.setdefault(str(record["input"]), []).append(record)
    return {key: rows for key, rows in by_input.items() if all(r["status"] in ("ok", "skipped") for r in rows)}
