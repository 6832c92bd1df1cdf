"""The ``xai`` command. The only place that prints, shows progress and chooses exit codes.

TensorFlow is imported only inside the commands that need a model, so ``xai --help`` and
``xai methods`` start instantly.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable

import click

from .. import __version__
from .._api import describe
from .._api import layers as xaicli_layers
from .._api import report as xaicli_report
from .._api import sanity as xaicli_sanity
from .._errors import EXIT_OK, InterruptedRunError, XaiError
from .._inputs.discover import expand_stdin
from .._inputs.scaling import PRESET_HELP
from .._models.files import check_model_path
from .._runs.config import AUTO
from .._runs.run import RunSummary
from .._runs.run import run as xaicli_run
from ..methods import REGISTRY
from ._options import CONTEXT, LOCATION, debug_option, layer_regex_option, model_options, run_options, with_config_file
from ._terminal import StopSignals, Watched, errors_reported, quiet_tensorflow, table_on_stdout


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="xai")
def main() -> None:
    """xai: batch heatmaps that show where a Keras image classifier looked.

    \b
    Quick start:
      xai run model.keras images/ -o out/
      xai layers model.keras
      xai methods
    """


@main.command(context_settings=CONTEXT)
@run_options
def run(model: Path, inputs: tuple[Path, ...], config_file: Path | None, quiet: bool, debug: bool,
        **options: object) -> None:
    """Explain every image in INPUTS (files or folders, searched recursively; '-' reads paths
    from standard input, one per line) with MODEL.

    Writes OUT/<relative path>.<method>.png per image and method, OUT/predictions.csv (or
    .jsonl) and OUT/run.json.
    Exit status: 0 all images explained, 1 some images failed (see the status column),
    2 bad usage, a model that cannot be used, or OUT in use by another run, 3 a --require gate
    not met (every output still written; it wins over 1), 1 also when OUT takes no more files
    (disk full, read-only, removed: stopped as on SIGINT; free space, then --resume), 130/143 stopped
    by SIGINT/SIGTERM (after finishing the batches under way; continue with --resume), 141
    standard output's reader went away (`| head`; stopped the same way),
    70 an internal error (a bug: run with --debug and report it).
    """
    stop = StopSignals(lambda message: watch.note(message))
    watch = Watched(quiet, debug, lambda: stop.reason != "SIGPIPE")  # a pipeline's end is told in one line, below
    with errors_reported(debug):
        options = _run_options(inputs, config_file, options)
        with stop, table_on_stdout(options.get("predictions") == "-", stop.stdout_closed):
            summary = _run(model, options, watch, stop)
    if stop.reason:
        cause = "a closed standard output (its reader went away)" if stop.reason == "SIGPIPE" else stop.reason
        if not quiet:
            click.echo(f"xai: stopped by {cause} after {summary.done} of {summary.images} images; "
                       "run again with --resume to finish", err=True)
        sys.exit(128 + signal.Signals[stop.reason].value)
    if summary.storage_stopped:  # said even with --quiet: it is why the job fails
        click.echo(_storage_stop(summary), err=True)
    if summary.status == "stopped by the first failure (--fail-fast)":
        watch.note(f"stopped at the first failure (--fail-fast): {summary.first_failure}")
    for failure in summary.unmet:  # said even with --quiet: it is why the job fails
        click.echo(f"xai: requirement {failure}", err=True)
    sys.exit(summary.exit_status)


def _run_options(inputs: tuple[Path, ...], config_file: Path | None, options: dict[str, object]) -> dict[str, object]:
    """The run's options from the command line, the config file and the defaults: the output
    folder required, paths read from standard input for an input of '-'."""
    if config_file is not None:
        options = with_config_file(click.get_current_context(), options, config_file)
    if options["out_dir"] is None:
        raise XaiError("no output folder: give -o/--out, or out = \"...\" in the --config file")
    inputs = tuple(expand_stdin(inputs, sys.stdin if "-" in map(os.fspath, inputs) else ()))
    return {**options, "inputs": inputs}


def _run(model: Path, options: dict[str, object], watch: Watched, stop: StopSignals) -> RunSummary:
    """``xaicli.run`` with the command line's options; its summary said in a line or two. An
    interrupted run in OUT is answered with the command that resumes it."""
    options = dict(options)
    inputs, out_dir = options.pop("inputs"), options.pop("out_dir")
    try:
        summary = xaicli_run(model, inputs, out_dir, watch=watch, stop=stop, **options)
    except InterruptedRunError as exc:
        raise XaiError(exc.advice(shlex.join(["xai", *sys.argv[1:], "--resume"]))) from None
    finally:
        watch.end()  # before any line on stderr: the bar's own line stays whole
    watch.note(_summary_line(summary) + _accuracy(summary.accuracy)
               + (_on_ray(summary.engine_details) if summary.engine == "ray" else ""))
    if summary.metrics:
        watch.note("; ".join(f"{method}: " + ", ".join(f"{name} {value:.3f}" for name, value in means.items()
                                                          if value is not None)
                             for method, means in summary.metrics.items()))
    if summary.report is not None:
        watch.note(f"report: {summary.report}")
    if summary.summary is not None:
        watch.note(f"summary: {summary.summary}")
    return summary


def _summary_line(summary: RunSummary) -> str:
    counts, total = summary.counts, summary.images
    explained = counts["explained"] + counts["resumed"]
    resumed = f" ({counts['resumed']} by the earlier run)" if counts["resumed"] else ""
    kept = f", {counts['skipped']} skipped (outputs already there)" if counts["skipped"] else ""
    where = f" (see status=error rows in {summary.table or 'the table on stdout'})" if counts["failed"] else ""
    return (f"{explained} of {total} images explained{resumed}{kept}, {counts['failed']} failed, in "
            f"{summary.seconds:.1f} s ({summary.done / max(summary.seconds, 1e-9):.1f} img/s); outputs in "
            f"{summary.out_dir}{where}")


def _storage_stop(summary: RunSummary) -> str:
    """One line for a run the output folder stopped: what happened where, what the rest needs,
    and how to go on."""
    what = summary.status.removeprefix("stopped: ")
    left = summary.images - summary.done
    need = (f"; the other {left} images need about {_megabytes(summary.space_needed)} more"
            if left and summary.space_needed is not None else "")
    said = "" if summary.manifest_written else " (run.json could not be written to say so)"
    if "vanished" in what:
        advice = "start again with --overwrite: nothing is left to resume"
    else:
        fix = ("free space" if what.startswith(("disk full", "quota")) else "fix the store's access"
               if what.startswith("the store") else "make the output folder writable")
        advice = f"{fix} and run again with --resume"
    return f"xai: stopped: {what}{said} after {summary.done} of {summary.images} images{need}; {advice}"


def _megabytes(size: int) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"


def _on_ray(pool: dict | None) -> str:
    """'; on Ray: 2 replicas (0.5 CPU each) on 2 nodes' from run.json's ray entry (--engine ray), and
    the nodes lost mid-run."""
    if pool is None:
        return ""
    gpus = f", {pool['gpus_per_replica']:g} GPU" if pool["gpus_per_replica"] else ""
    plural = lambda count, word: f"{count} {word}{'' if count == 1 else 's'}"  # noqa: E731
    lost = pool.get("nodes_lost") or []
    redone = (f"; {plural(len(lost), 'node')} lost mid-run ({', '.join(lost)}), "
              f"{'its' if len(lost) == 1 else 'their'} work redone on the others") if lost else ""
    return (f"; on Ray: {plural(pool['replicas'], 'replica')} ({pool['cpus_per_replica']:g} CPU{gpus} each) "
            f"on {plural(pool['nodes'], 'node')}{redone}")


def _accuracy(accuracy: dict | None) -> str:
    """'; accuracy 91.7% (11 of 12 labelled images), macro F1 0.905' from run.json's accuracy (--true-labels)."""
    if accuracy is None:
        return ""
    if not accuracy["images"]:
        return "; no image with a true label was explained"
    f1 = f", macro F1 {accuracy['f1']:.3f}" if accuracy.get("f1") is not None else ""
    exact = " (every label right)" if "labels" in accuracy else ""
    return (f"; accuracy {accuracy['accuracy']:.1%}{exact} ({accuracy['correct']} of {accuracy['images']} "
            f"labelled images){f1}")


def _model_command(func: Callable) -> Callable:
    """A subcommand that takes MODEL and the options for reading it."""
    for decorate in (debug_option, model_options, layer_regex_option,
                     click.argument("model", type=click.Path(path_type=Path)), main.command(context_settings=CONTEXT)):
        func = decorate(func)
    return func


@_model_command
@click.option("--all", "show_all", is_flag=True, help="List every layer, not only the candidates.")
def layers(model: Path, layer_regex: str, show_all: bool, debug: bool, **model_options: object) -> None:
    """List MODEL's candidate target layers; '*' marks the one `--layer auto` picks."""
    with errors_reported(debug):
        check_model_path(model)
        quiet_tensorflow(debug)
        listing = xaicli_layers(model, layer_regex, **model_options)
        shown = [row for row in listing.rows if show_all or row.candidate is not None]
        width = max([len(row.path) for row in shown] + [4])
        click.echo(f"  {'idx':>4}  {'path':<{width}}  {'type':<22}  output shape")
        for row in shown:
            idx = "" if row.candidate is None else str(row.candidate)
            shape = "(multiple)" if row.output_shape is None else str(row.output_shape)
            click.echo(f"{'*' if row.picked else ' '} {idx:>4}  {row.path:<{width}}  {row.type_name:<22}  {shape}")
        if listing.picked is not None:
            click.echo(f"* --layer auto: {listing.picked}, {listing.reason}")
        else:
            click.echo(f"xai: {listing.missing}", err=True)
    sys.exit(EXIT_OK)


@_model_command
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
def info(model: Path, layer_regex: str, as_json: bool, debug: bool, **model_options: object) -> None:
    """Describe MODEL: format, input, outputs, classes, activation, preprocessing, the layer
    `--layer auto` picks, and the methods that apply."""
    with errors_reported(debug):
        check_model_path(model)
        quiet_tensorflow(debug)
        summary = describe(model, layer_regex, **model_options)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            width = max(len(key) for key in summary)
            for key, value in summary.items():
                click.echo(f"{key.replace('_', ' '):<{width}}  {_as_text(value)}")
    sys.exit(EXIT_OK)


def _as_text(value: object) -> str:
    if isinstance(value, list):
        return "; ".join(_as_text(v) for v in value) if value and isinstance(value[0], dict) else ", ".join(map(str, value))
    if isinstance(value, dict):  # a model output
        dims = ", ".join("N" if d is None else str(d) for d in value["shape"])
        use = f"{value['kind']}, can be explained" if value["explainable"] else "not an (N, units) output"
        return f"{value['index']}: {value['layer']} ({dims}), {value['activation']}, {use}"
    return str(value)


@main.command(context_settings=CONTEXT)
@click.argument("out", type=LOCATION)
@debug_option
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
              help="Also write the run's Markdown summary (as `xai run --summary`).")
def report(out: Path | str, summary: Path | None, debug: bool) -> None:
    """Write OUT/index.html again from the run in OUT (after --resume, or for a run made with
    --no-report or by an older xai); thumbnails that are missing are made from the overlays.
    OUT may be a store's URL (s3://bucket/prefix)."""
    with errors_reported(debug):
        page, written = xaicli_report(out, summary)
        click.echo(page)
        if written is not None:
            click.echo(written)


@main.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for sanity.csv and sanity.png.")
@click.option("-m", "--method", "methods", default="gradcam", show_default=True, metavar="NAMES",
              help=f"Methods to check, comma-separated: {', '.join(REGISTRY)}.")
@click.option("--steps", type=int, default=5, show_default=True,
              help="Randomization steps, from the output layer alone to every layer.")
@click.option("--max-images", type=int, default=16, show_default=True,
              help="Check the first N images found (the figure shows at most 6).")
@click.option("--layer", default=AUTO, show_default=True, metavar="auto|NAME|PATH|INDEX", help="Target layer, as for run.")
@layer_regex_option
@click.option("--preprocess", type=click.Choice([AUTO, *PRESET_HELP]), default=AUTO, show_default=True,
              help="Pixel scaling, as for run.")
@model_options
@debug_option
def sanity(model: Path, inputs: tuple[Path, ...], out_dir: Path, methods: str, steps: int, max_images: int,
           debug: bool, **options: object) -> None:
    """Do the maps depend on the model? Randomize MODEL's weighted layers from the output down (in
    memory; the file is never touched) and compare each image's maps with the trained model's
    (Spearman, SSIM): OUT/sanity.csv, OUT/sanity.png, and a verdict per method (Adebayo et al. 2018)."""
    with errors_reported(debug):
        check_model_path(model)
        quiet_tensorflow(debug)
        for line in xaicli_sanity(model, inputs, out_dir, methods, steps, max_images, **options):
            click.echo(f"xai: {line}", err=True)
        click.echo(out_dir / "sanity.csv")


@main.command(context_settings=CONTEXT)
def methods() -> None:
    """List the explanation methods: name, family, what it computes, and its paper."""
    width = max(len(name) for name in REGISTRY)
    with errors_reported(debug=False):
        for spec in REGISTRY.values():
            click.echo(f"{spec.name:<{width}}  [{spec.family}]  {spec.summary}")
            click.echo(f"{'':<{width}}  {spec.paper}")
