"""The ``xai`` command. The only place that prints, shows progress and chooses exit codes.

TensorFlow is imported only inside the commands that need a model, so ``xai --help`` and
``xai methods`` start instantly.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import IO, Callable, Iterator

import click

from . import __version__
from ._api import describe
from ._api import layers as xaicli_layers
from ._api import report as xaicli_report
from ._api import sanity as xaicli_sanity
from ._engines import Watch
from ._errors import (EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InterruptedRunError,
                      XaiError, first_line)
from ._evaluation.faithfulness import PERTURBATION_METRICS
from ._explain.registry import METHOD_OPTIONS
from ._inputs.discover import expand_stdin
from ._inputs.geometry import RESIZE_MODES
from ._inputs.intensity import KINDS
from ._inputs.nifti import SLICE_AXES, SLICE_AXIS_HELP
from ._inputs.raster import DEFAULT_MAX_PIXELS
from ._inputs.scaling import PRESET_HELP
from ._inputs.stacks import SLICE_CHOICES
from ._models.files import check_model_path
from ._outputs.naming import IMAGE_FORMATS
from ._outputs.render import COLORMAPS
from ._outputs.table import TABLE_FORMATS
from ._quiet import stderr_silenced
from ._runs.config import AUTO, ENGINES, TARGETS, parse_numbers, parse_size, read_config_file
from ._runs.run import RunSummary
from ._runs.run import run as xaicli_run
from .methods import REGISTRY

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


def _debug_option(func: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="Show TensorFlow's log and full tracebacks.")(func)


def _parsed(parse: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, str | None], object]:
    """A click callback that parses an option's text with ``parse``; our one-line error becomes
    click's usage error for that option."""
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
        try:
            return parse(value) if value else None
        except XaiError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


def _model_options(func: Callable) -> Callable:
    """Options that say how to load and read the model, shared by every command that takes one.
    Their names are ``open_model``'s keyword arguments, so commands pass them straight on."""
    options = [
        click.option("--input-size", metavar="HxW", callback=_parsed(parse_size),
                     help="Image size fed to the model (height x width); needed when the model accepts any size."),
        click.option("--output", "output", default=AUTO, show_default=True, metavar="auto|INDEX|NAME",
                     help="Which model output to explain: auto takes the only (or first) classifier output "
                          "shaped (N, classes); feature-map outputs beside it are ignored (see `xai info`)."),
        click.option("--unsafe", is_flag=True,
                     help="Allow Lambda layers holding Python code; loading them can run arbitrary code, "
                          "so use only for files you trust."),
        click.option("--custom-objects", metavar="FILE.py|MODULE",
                     help="Python file or module that defines the model's custom layers."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _method_options(func: Callable) -> Callable:
    """An option for each option a method declares (``registry.METHOD_OPTIONS``), in registry order."""
    for method_name, option in reversed(METHOD_OPTIONS):
        kind = click.Choice(list(option.choices)) if option.choices else option.type
        meanings = ": " + "; ".join(f"{k}: {v}" for k, v in option.choices.items()) if option.choices else ""
        func = click.option(option.flag, option.name, type=kind, default=option.default,
                            show_default=option.default is not None,
                            help=f"{method_name}: {option.help}{meanings}.")(func)
    return func


def _layer_regex_option(func: Callable) -> Callable:
    return click.option(
        "--layer-regex", default="conv", show_default=True, metavar="REGEX",
        help="Layer names (case-insensitive) that count as candidates besides convolution layers.",
    )(func)


@main.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              help="Output folder (required here or in --config); overlays mirror the input tree, "
                   "plus predictions.csv.")
@click.option("--overwrite", is_flag=True, help="Replace outputs of an earlier run in OUT.")
@click.option("--skip-existing", is_flag=True,
              help="Keep outputs of an earlier run in OUT; explain only images missing any of them.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in OUT with the same options: images it finished keep "
                   "their rows and files; the table ends as an uninterrupted run's would.")
@click.option("--fail-fast", is_flag=True, help="Stop after the batch of the first image that fails (exit 1).")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write OUT/index.html, one self-contained page of the run (gallery, filters, failures), and the "
                   "thumbnails it shows (OUT/.thumbs/).")
@click.option("--format", "table_format", type=click.Choice(TABLE_FORMATS), default="csv", show_default=True,
              help="Predictions table format.")
@click.option("--true-labels", metavar="folder|FILE.csv",
              help="True classes: 'folder' (each image's parent folder is its class, the ImageFolder layout) or a "
                   "CSV of path,label. The table gains true_label and correct; the summary, run.json and the report "
                   "gain accuracy and a confusion matrix. Labels must be the model's (--labels names, else indices).")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
              help="Write a short Markdown summary (counts, accuracy, the ten least confident or misclassified "
                   "images, linked) for a CI job page, e.g. --summary \"$GITHUB_STEP_SUMMARY\".")
@click.option("--metrics", default="", metavar="NAMES",
              help="Faithfulness per image and method, comma-separated: "
                   + "; ".join(f"{k}: {v}" for k, v in PERTURBATION_METRICS.items())
                   + ". Costs about 2 x (--metric-steps + 1) model calls per image and method.")
@click.option("--metric-steps", type=int, default=20, show_default=True,
              help="Equal steps of the deletion and insertion curves.")
@click.option("--truth-masks", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Object masks mirroring the inputs (DIR/<relative path>, the same with .png as its suffix, or with .png added; any non-zero "
                   "pixel is the object; any size, scaled to the image): adds pointing_hit, energy_in and iou.")
@click.option("--truth-boxes", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.json",
              help='Object boxes: {"relative/path.png": [[x0, y0, x1, y1], ...]} in original pixels (edges '
                   "included): adds pointing_hit, energy_in and iou.")
@click.option("--pointing-tolerance", type=float, default=15.0, show_default=True,
              help="Pixels (of the original image) around the map's peak that still count as a hit.")
@click.option("--require", metavar="GATES",
              help="CI gates on the figures' means, e.g. 'pointing>=0.9,deletion<=0.2,accuracy>=0.95': each method "
                   "must meet each; when one does not, everything is still written and the exit status is 3.")
@click.option("--predictions", metavar="PATH|-",
              help="Where the predictions table goes (default OUT/predictions.<format>); '-' writes it to "
                   "standard output, while progress stays on standard error.")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of option values (keys are the long option names, e.g. batch-size = 16); "
                   "options given on the command line win.")
@click.option("-m", "--method", "methods", default="gradcam", show_default=True, metavar="NAMES",
              help=f"Explanation method(s), comma-separated: {', '.join(REGISTRY)} (see `xai methods`).")
@click.option("--layer", default=AUTO, show_default=True, metavar="auto|NAME|PATH|INDEX",
              help="Target layer: auto (last convolutional), a name, a nested path 'base/conv5', "
                   "or an index among the candidates (-1 = last); see `xai layers`.")
@_layer_regex_option
@click.option("--class", "target_class", metavar="INDEX|LABEL",
              help="Class to explain for every image (default: each image's top-1 class).")
@click.option("--top-k", type=int, default=0, show_default=True, metavar="K",
              help="Add the K best classes to the table (top1_index, top1_label, top1_prob, ...).")
@click.option("--target", type=click.Choice(list(TARGETS)), default="predicted", show_default=True,
              help="Which classes get a heatmap: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + ".")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Class names: a text file with one per line, or a JSON list or index->name object.")
@click.option("-b", "--batch-size", type=int, default=16, show_default=True,
              help="Images per forward/backward pass.")
@click.option("--preprocess", type=click.Choice([AUTO, *PRESET_HELP]), default=AUTO, show_default=True,
              help="Pixel scaling: auto (0..255 if the model has a Rescaling/Normalization layer, "
                   "else 0..1); " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + ".")
@click.option("--mean", callback=_parsed(parse_numbers), metavar="M[,M,M]",
              help="--preprocess custom: per-channel mean on the 0..1 scale, e.g. 0.485,0.456,0.406.")
@click.option("--std", callback=_parsed(parse_numbers), metavar="S[,S,S]",
              help="--preprocess custom: per-channel standard deviation on the 0..1 scale.")
@click.option("--resize", type=click.Choice(list(RESIZE_MODES)), default="stretch", show_default=True,
              help="How images are fitted to the model's input: " + "; ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items())
                   + ". Heatmaps are always drawn back over the whole original image.")
@_model_options
@click.option("--alpha", type=float, default=0.4, show_default=True,
              help="Heatmap opacity over the image, 0 (image only) to 1 (heatmap only).")
@click.option("--colormap", type=click.Choice(list(COLORMAPS)), default="jet", show_default=True,
              help="Colormap for the heatmap.")
@click.option("--save", default="overlay", show_default=True, metavar="KINDS",
              help="Files per image and method, comma-separated: overlay (.png), heatmap (.heatmap.png, "
                   "grayscale), raw (.npy, float map), panel (.panel.png: image | heatmap | overlay, captioned).")
@click.option("--image-format", type=click.Choice(list(IMAGE_FORMATS)), default="png", show_default=True,
              help="Overlay, heatmap and panel files: png (lossless), jpeg (quality 90, about 7x smaller) or "
                   "webp (lossy, about 30x smaller).")
@click.option("--intensity", default="auto", show_default=True, metavar="CHOICE",
              help="How images deeper than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) are brought to 0..255; "
                   "8-bit images are never changed. A volume's or multi-frame file's statistics are those of the "
                   "whole file. " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()) + ".")
@click.option("--dicom", is_flag=True,
              help="In folders, also take files without an image suffix (e.g. named by UIDs) whose DICOM "
                   "preamble is found.")
@click.option("--slices", default="nonzero", show_default=True, metavar="nonzero|all|middle|A:B",
              help="Which slices of a NIfTI volume (frames of a multi-frame DICOM) are explained, one row each: "
                   + "; ".join(f"{k}: {v}" for k, v in SLICE_CHOICES.items()) + ".")
@click.option("--slice-axis", type=click.Choice(list(SLICE_AXES)), default="axial", show_default=True,
              help="NIfTI volumes, turned to RAS, are cut across this axis: "
                   + "; ".join(f"{k}: {v}" for k, v in SLICE_AXIS_HELP.items()) + ".")
@click.option("--max-size", type=int, default=None, metavar="N",
              help="Draw every image output (each panel pane) with its long side at most N pixels (aspect "
                   "kept); default: overlays at the original size, panels and heatmaps at most 1280. The model "
                   "still sees the full image.")
@click.option("--memory-budget", type=int, default=256, show_default=True, metavar="MB",
              help="MiB of decoded originals and of decoding/rendering work in flight (besides the model); "
                   "originals that do not fit are read again to draw them.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images larger than this many pixels (decompression-bomb guard).")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True,
              help="What runs the images: " + "; ".join(f"{k}: {v}" for k, v in ENGINES.items())
                   + ". Outputs are byte-identical either way.")
@click.option("--workers", type=int, default=None, metavar="N",
              help="local: threads that decode images and write PNGs (default CPU count, 2..8). ray: model "
                   "replicas (default one per node), which together never hold every CPU.")
@click.option("--ray-address", metavar="ADDRESS",
              help="--engine ray: the cluster to join: 'auto' (the one this machine belongs to), HOST:PORT "
                   "(the head's GCS) or 'ray://HOST:PORT' (Ray Client); default: start Ray on this machine.")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True, metavar="SHARE",
              help="--engine ray: GPUs each replica asks for (0.5 puts two on a GPU); where the cluster has GPUs.")
@_method_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@_debug_option
def run(model: Path, inputs: tuple[Path, ...], config_file: Path | None, quiet: bool, debug: bool,
        **options: object) -> None:
    """Explain every image in INPUTS (files or folders, searched recursively; '-' reads paths
    from standard input, one per line) with MODEL.

    Writes OUT/<relative path>.<method>.png per image and method, OUT/predictions.csv (or
    .jsonl) and OUT/run.json.
    Exit status: 0 all images explained, 1 some images failed (see the status column),
    2 bad usage, a model that cannot be used, or OUT in use by another run, 3 a --require gate
    not met (every output still written; it wins over 1), 130/143 stopped
    by SIGINT/SIGTERM (after finishing the batches under way; continue with --resume), 141
    standard output's reader went away (`| head`; stopped the same way),
    70 an internal error (a bug: run with --debug and report it).
    """
    stop = _StopSignals(lambda message: watch.note(message))
    watch = _Watched(quiet, debug, lambda: stop.reason != "SIGPIPE")  # a pipeline's end is told in one line, below
    with _errors_reported(debug):
        options = _run_options(inputs, config_file, options)
        with stop, _table_on_stdout(options.get("predictions") == "-", stop.stdout_closed):
            summary = _run(model, options, watch, stop)
    if stop.reason:
        cause = "a closed standard output (its reader went away)" if stop.reason == "SIGPIPE" else stop.reason
        if not quiet:
            click.echo(f"xai: stopped by {cause} after {summary.done} of {summary.images} images; "
                       "run again with --resume to finish", err=True)
        sys.exit(128 + signal.Signals[stop.reason].value)
    if summary.status == "stopped by the first failure (--fail-fast)":
        watch.note(f"stopped at the first failure (--fail-fast): {summary.first_failure}")
    for failure in summary.unmet:  # said even with --quiet: it is why the job fails
        click.echo(f"xai: requirement {failure}", err=True)
    sys.exit(summary.exit_status)


def _run_options(inputs: tuple[Path, ...], config_file: Path | None, options: dict[str, object]) -> dict[str, object]:
    """The run's options from the command line, the config file and the defaults: the output
    folder required, paths read from standard input for an input of '-'."""
    if config_file is not None:
        options = _with_config_file(click.get_current_context(), options, config_file)
    if options["out_dir"] is None:
        raise XaiError("no output folder: give -o/--out, or out = \"...\" in the --config file")
    inputs = tuple(expand_stdin(inputs, sys.stdin if Path("-") in inputs else ()))
    return {**options, "inputs": inputs}


def _run(model: Path, options: dict[str, object], watch: _Watched, stop: _StopSignals) -> RunSummary:
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


def _on_ray(pool: dict | None) -> str:
    """'; on Ray: 2 replicas (0.5 CPU each) on 1 node' from run.json's ray entry (--engine ray)."""
    if pool is None:
        return ""
    gpus = f", {pool['gpus_per_replica']:g} GPU" if pool["gpus_per_replica"] else ""
    plural = lambda count, word: f"{count} {word}{'' if count == 1 else 's'}"  # noqa: E731
    return (f"; on Ray: {plural(pool['replicas'], 'replica')} ({pool['cpus_per_replica']:g} CPU{gpus} each) "
            f"on {plural(pool['nodes'], 'node')}")


def _accuracy(accuracy: dict | None) -> str:
    """'; accuracy 91.7% (11 of 12 labelled images)' from run.json's accuracy (--true-labels)."""
    if accuracy is None:
        return ""
    if not accuracy["images"]:
        return "; no image with a true label was explained"
    return f"; accuracy {accuracy['accuracy']:.1%} ({accuracy['correct']} of {accuracy['images']} labelled images)"


@contextlib.contextmanager
def _table_on_stdout(used: bool, closed: Callable[[], None]) -> Iterator[None]:
    """While the table goes to standard output (``used``), file names that are not valid UTF-8
    are written as backslash escapes, as in a table file, and a reader that goes away (``| head``)
    calls ``closed`` instead of raising: the run stops as on a signal."""
    if not used:
        yield
        return
    original = sys.stdout
    reconfigure = getattr(original, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    sys.stdout = _ReaderMayLeave(original, closed)
    try:
        yield
    finally:
        sys.stdout = original


class _ReaderMayLeave:
    """Standard output whose reader may go away: the first write that finds the pipe closed calls
    ``closed`` once; that write and every later one go nowhere. Anything else is the stream's."""

    def __init__(self, stream: IO[str], closed: Callable[[], None]) -> None:
        self._stream = stream
        self._closed = closed
        self._gone = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        self._guarded(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, action: Callable[[], object]) -> None:
        if self._gone:
            return
        try:
            action()
        except BrokenPipeError:
            self._gone = True
            _stdout_to_devnull()
            self._closed()


def _stdout_to_devnull() -> None:
    """Point the process's standard output at /dev/null, so that what is still buffered for the
    closed pipe goes nowhere at exit instead of raising again."""
    try:
        descriptor = sys.__stdout__.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real file (a test runner's)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


class _StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the batches under
    way; a second signal stops at once. Calling the object gives the signal's name, or None."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.reason: str | None = None
        self._say = say
        self._previous: dict[int, object] = {}

    def __call__(self) -> str | None:
        if self.reason == "SIGPIPE":
            return "SIGPIPE (standard output's reader went away)"
        return self.reason

    def stdout_closed(self) -> None:
        """The reader of standard output went away: the run stops as on SIGPIPE, quietly."""
        self.reason = self.reason or "SIGPIPE"

    def _handle(self, signum: int, _frame: object) -> None:
        if self.reason:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self._say(f"{self.reason} received: finishing the batches under way (send it again to stop at once)")

    def __enter__(self) -> "_StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _with_config_file(ctx: click.Context, options: dict[str, object], path: Path) -> dict[str, object]:
    """``options`` with the config file's values for every option not given on the command line.
    Keys are long option names; values go through the same checks as on the command line."""
    by_key = {
        flag.lstrip("-").replace("-", "_"): param
        for param in ctx.command.params if isinstance(param, click.Option) and param.name in options
        for flag in param.opts if flag.startswith("--")
    }
    merged = dict(options)
    for key, raw in read_config_file(path).items():
        param = by_key.get(key.replace("-", "_"))
        if param is None:
            raise XaiError(f"config file {path}: unknown key '{key}'; keys are the long options of "
                           f"`xai run`: {', '.join(sorted(k.replace('_', '-') for k in by_key))}")
        if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
            continue
        try:
            # a TOML list (method = ["gradcam", "saliency"]) is the option's comma-separated form
            value = ",".join(map(str, raw)) if isinstance(raw, list) else raw
            merged[param.name] = param.process_value(ctx, value)
        except click.BadParameter as exc:
            raise XaiError(f"config file {path}: key '{key}': {exc.message}") from None
    return merged


class _Watched(Watch):
    """What the person at the terminal sees of a run: one-line notes on stderr, and a tqdm bar that
    moves as each batch's methods finish, says what is under way (compiling for the first batch,
    then the method), and estimates the time left from the batches after the first, whose
    tracing and compiling would inflate it. ``--quiet`` shows neither."""

    BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"

    def __init__(self, quiet: bool, debug: bool, telling: Callable[[], bool] = lambda: True) -> None:
        self._quiet = quiet
        self._debug = debug
        self._telling = telling  # notes are said only while this holds
        self._bar = None
        self._warm = False

    def loading(self, model: object) -> None:
        if sys.stderr.isatty():  # someone is watching: say why nothing moves for a few seconds
            self.note(f"loading {model} (TensorFlow takes a few seconds to start)")
        _tensorflow(self._debug)

    def note(self, text: str) -> None:
        if not self._quiet and self._telling():
            click.echo(f"xai: {text}", err=True)

    def begin(self, images: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=images, unit="img", file=sys.stderr, disable=self._quiet, dynamic_ncols=True,
                         bar_format=self.BAR_FORMAT)

    def end(self) -> None:
        """The bar's last line stays, telling the count, not a stage long past."""
        if self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)
            self._bar.close()
            self._bar = None

    def stage(self, text: str) -> None:
        self._bar.set_postfix_str(text)

    def advance(self, images: float) -> None:
        self._bar.update(images)

    def grow(self, images: int) -> None:
        self._bar.total += images
        self._bar.refresh()

    def warmed_up(self) -> None:
        if self._warm:
            return
        self._warm = True
        done = self._bar.n
        self._bar.set_postfix_str("", refresh=False)  # compiling is over
        self._bar.reset()  # the rate and estimate start again, from the work done so far
        self._bar.n = self._bar.initial = self._bar.last_print_n = done
        self._bar.refresh()


def _model_command(func: Callable) -> Callable:
    """A subcommand that takes MODEL and the options for reading it."""
    for decorate in (_debug_option, _model_options, _layer_regex_option,
                     click.argument("model", type=click.Path(path_type=Path)), main.command(context_settings=CONTEXT)):
        func = decorate(func)
    return func


@_model_command
@click.option("--all", "show_all", is_flag=True, help="List every layer, not only the candidates.")
def layers(model: Path, layer_regex: str, show_all: bool, debug: bool, **model_options: object) -> None:
    """List MODEL's candidate target layers; '*' marks the one `--layer auto` picks."""
    with _errors_reported(debug):
        check_model_path(model)
        _tensorflow(debug)
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
    with _errors_reported(debug):
        check_model_path(model)
        _tensorflow(debug)
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
        use = "can be explained" if value["explainable"] else "not a classifier output (N, classes)"
        return f"{value['index']}: {value['layer']} ({dims}), {value['activation']}, {use}"
    return str(value)


@main.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@_debug_option
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
              help="Also write the run's Markdown summary (as `xai run --summary`).")
def report(out: Path, summary: Path | None, debug: bool) -> None:
    """Write OUT/index.html again from the run in OUT (after --resume, or for a run made with
    --no-report or by an older xai); thumbnails that are missing are made from the overlays."""
    with _errors_reported(debug):
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
@_layer_regex_option
@click.option("--preprocess", type=click.Choice([AUTO, *PRESET_HELP]), default=AUTO, show_default=True,
              help="Pixel scaling, as for run.")
@_model_options
@_debug_option
def sanity(model: Path, inputs: tuple[Path, ...], out_dir: Path, methods: str, steps: int, max_images: int,
           debug: bool, **options: object) -> None:
    """Do the maps depend on the model? Randomize MODEL's weighted layers from the output down (in
    memory; the file is never touched) and compare each image's maps with the trained model's
    (Spearman, SSIM): OUT/sanity.csv, OUT/sanity.png, and a verdict per method (Adebayo et al. 2018)."""
    with _errors_reported(debug):
        check_model_path(model)
        _tensorflow(debug)
        for line in xaicli_sanity(model, inputs, out_dir, methods, steps, max_images, **options):
            click.echo(f"xai: {line}", err=True)
        click.echo(out_dir / "sanity.csv")


@main.command(context_settings=CONTEXT)
def methods() -> None:
    """List the explanation methods: name, family, what it computes, and its paper."""
    width = max(len(name) for name in REGISTRY)
    with _errors_reported(debug=False):
        for spec in REGISTRY.values():
            click.echo(f"{spec.name:<{width}}  [{spec.family}]  {spec.summary}")
            click.echo(f"{'':<{width}}  {spec.paper}")


@contextlib.contextmanager
def _errors_reported(debug: bool) -> Iterator[None]:
    """Turn a project error into one line on stderr and exit status 2. A closed standard output
    is a pipeline's normal end: exit 141 (SIGPIPE's), quietly. Anything else is a bug: one line
    too (exit 70), and the traceback only with --debug."""
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            yield
    except XaiError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"xai: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("xai: stopped at once; images of the batches under way have no rows (--resume redoes them)",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # `xai info --json | head -c 10`: the reader has what it wanted
        _stdout_to_devnull()
        sys.exit(EXIT_BROKEN_PIPE)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 (the last line of defence: a bug, never a traceback)
        if debug:
            raise
        click.echo(f"xai: internal error: {type(exc).__name__}: {first_line(exc)} (a bug in xai, or a model it "
                   "does not understand yet; run again with --debug for the traceback and report it)", err=True)
        sys.exit(EXIT_INTERNAL)


def _tensorflow(debug: bool) -> None:
    """TensorFlow imported with its start-up lines silenced (all of them with --debug), before a model is read."""
    if debug:  # what the library notes for the curious, e.g. options dropped from a newer Keras's file
        logging.basicConfig(format="xai: debug: %(message)s")
        logging.getLogger("xaicli").setLevel(logging.DEBUG)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # Ray's C++ core (--engine ray) says at start that it read this, and nothing after.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        with stderr_silenced():
            import tensorflow  # noqa: F401  (its C++ start-up lines go to the silenced stderr)
        # TensorFlow and Keras 2 also log notices through Python logging, and pydicom logs each
        # decoder that failed before another took the file (or the row said why); the CLI owns stderr.
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)


