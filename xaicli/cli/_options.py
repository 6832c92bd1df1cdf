"""The command line's options: those of every command that reads a model, those the methods
declare, all of `xai run`'s, and a config file's values merged under the command line's."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .._errors import XaiError
from .._storage import as_location
from .._evaluation.faithfulness import PERTURBATION_METRICS
from .._explain.registry import METHOD_OPTIONS
from .._explain.targets import REGION_SOURCES
from .._inputs.geometry import RESIZE_MODES
from .._inputs.intensity import KINDS
from .._inputs.nifti import SLICE_AXES, SLICE_AXIS_HELP
from .._inputs.raster import DEFAULT_MAX_PIXELS
from .._inputs.scaling import PRESET_HELP
from .._inputs.stacks import SLICE_CHOICES
from .._models.kinds import AUTO_KIND, KINDS as OUTPUT_KINDS
from .._outputs.naming import IMAGE_FORMATS
from .._outputs.render import COLORMAPS
from .._outputs.table import TABLE_FORMATS
from .._runs.config import (AUTO, DEFAULT_THRESHOLD, ENGINES, SIGNS, TARGETS, parse_numbers, parse_size,
                            read_config_file)
from ..methods import REGISTRY

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def debug_option(func: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="Show TensorFlow's log and full tracebacks.")(func)


def parsed(parse: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, str | None], object]:
    """A click callback that parses an option's text with ``parse``; our one-line error becomes
    click's usage error for that option."""
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
        try:
            return parse(value) if value else None
        except XaiError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


def model_options(func: Callable) -> Callable:
    """Options that say how to load and read the model, shared by every command that takes one.
    Their names are ``open_model``'s keyword arguments, so commands pass them straight on."""
    options = [
        click.option("--input-size", metavar="HxW|DxHxW", callback=parsed(parse_size),
                     help="Image size fed to the model (height x width; a volume model's depth x height x width); "
                          "needed when the model accepts any size."),
        click.option("--output", "output", default=AUTO, show_default=True, metavar="auto|INDEX|NAME",
                     help="Which model output to explain: auto takes the only (or first) output shaped "
                          "(N, units); feature-map outputs beside it are ignored (see `xai info`)."),
        click.option("--kind", default=AUTO_KIND, show_default=True, type=click.Choice([AUTO_KIND, *OUTPUT_KINDS]),
                     help="What the explained output is; auto tells it from its shape and activation (a linear "
                          "output of several units is taken as a classifier's logits): "
                          + "; ".join(f"{k}: {v}" for k, v in OUTPUT_KINDS.items()) + "."),
        click.option("--unsafe", is_flag=True,
                     help="Allow Lambda layers holding Python code; loading them can run arbitrary code, "
                          "so use only for files you trust."),
        click.option("--custom-objects", metavar="FILE.py|MODULE",
                     help="Python file or module that defines the model's custom layers."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def method_options(func: Callable) -> Callable:
    """An option for each option a method declares (``registry.METHOD_OPTIONS``), in registry order."""
    for method_name, option in reversed(METHOD_OPTIONS):
        kind = click.Choice(list(option.choices)) if option.choices else option.type
        meanings = ": " + "; ".join(f"{k}: {v}" for k, v in option.choices.items()) if option.choices else ""
        func = click.option(option.flag, option.name, type=kind, default=option.default,
                            show_default=option.default is not None,
                            help=f"{method_name}: {option.help}{meanings}.")(func)
    return func


def layer_regex_option(func: Callable) -> Callable:
    return click.option(
        "--layer-regex", default="conv", show_default=True, metavar="REGEX",
        help="Layer names (case-insensitive) that count as candidates besides convolution layers.",
    )(func)


def with_config_file(ctx: click.Context, options: dict[str, object], path: Path) -> dict[str, object]:
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


class _Location(click.ParamType):
    """A local path, or a store's URL (kept as text: click.Path would fold 's3://b' into 's3:/b')."""

    name = "path|URL"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        return value if isinstance(value, Path) else as_location(str(value))


LOCATION = _Location()

# The options of `xai run`, in the order --help shows them.
RUN_OPTIONS = [
    click.argument("model", type=click.Path(path_type=Path)),
    click.argument("inputs", nargs=-1, required=True, type=LOCATION),
    click.option("-o", "--out", "out_dir", type=LOCATION,
                 help="Output folder (required here or in --config), or a store's URL (s3://bucket/prefix, gs://, "
                      "az://: the s3, gcs, azure extras; credentials as the store's own tools find them); overlays "
                      "mirror the input tree, plus predictions.csv."),
    click.option("--overwrite", is_flag=True, help="Replace outputs of an earlier run in OUT."),
    click.option("--skip-existing", is_flag=True,
                 help="Keep outputs of an earlier run in OUT; explain only images missing any of them."),
    click.option("--resume", is_flag=True,
                 help="Continue an interrupted run in OUT with the same options: images it finished keep "
                      "their rows and files; the table ends as an uninterrupted run's would."),
    click.option("--fail-fast", is_flag=True, help="Stop after the batch of the first image that fails (exit 1)."),
    click.option("--report/--no-report", default=True, show_default=True,
                 help="Write OUT/index.html, one self-contained page of the run (gallery, filters, failures), and the "
                      "thumbnails it shows (OUT/.thumbs/)."),
    click.option("--format", "table_format", type=click.Choice(TABLE_FORMATS), default="csv", show_default=True,
                 help="Predictions table format."),
    click.option("--true-labels", metavar="folder|FILE.csv",
                 help="True classes: 'folder' (each image's parent folder is its class, the ImageFolder layout) or a "
                      "CSV of path,label (a multi-label model's row may list several: a.png,\"Effusion;Edema\"). The table "
                      "gains true_label and correct; the summary, run.json and the report gain accuracy, macro F1 and a "
                      "confusion matrix (per-label precision, recall and F1 for a multi-label model). Labels must be the "
                      "model's (--labels names, else indices)."),
    click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
                 help="Write a short Markdown summary (counts, accuracy, the ten least confident or misclassified "
                      "images, linked) for a CI job page, e.g. --summary \"$GITHUB_STEP_SUMMARY\"."),
    click.option("--metrics", default="", metavar="NAMES",
                 help="Faithfulness per image and method, comma-separated: "
                      + "; ".join(f"{k}: {v}" for k, v in PERTURBATION_METRICS.items())
                      + ". Costs about 2 x (--metric-steps + 1) model calls per image and method."),
    click.option("--metric-steps", type=int, default=20, show_default=True,
                 help="Equal steps of the deletion and insertion curves."),
    click.option("--truth-masks", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                 help="Object masks mirroring the inputs (DIR/<relative path>, the same with .png as its suffix, or with .png added; any non-zero "
                      "pixel is the object; any size, scaled to the image): adds pointing_hit, energy_in and iou."),
    click.option("--truth-boxes", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.json",
                 help='Object boxes: {"relative/path.png": [[x0, y0, x1, y1], ...]} in original pixels (edges '
                      "included): adds pointing_hit, energy_in and iou."),
    click.option("--pointing-tolerance", type=float, default=15.0, show_default=True,
                 help="Pixels (of the original image) around the map's peak that still count as a hit."),
    click.option("--require", metavar="GATES",
                 help="CI gates on the figures' means, e.g. 'pointing>=0.9,deletion<=0.2,accuracy>=0.95' (f1: the macro "
                      "F1 of --true-labels): each method "
                      "must meet each; when one does not, everything is still written and the exit status is 3."),
    click.option("--predictions", metavar="PATH|-",
                 help="Where the predictions table goes (default OUT/predictions.<format>); '-' writes it to "
                      "standard output, while progress stays on standard error."),
    click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="TOML file of option values (keys are the long option names, e.g. batch-size = 16); "
                      "options given on the command line win."),
    click.option("-m", "--method", "methods", default="gradcam", show_default=True, metavar="NAMES",
                 help=f"Explanation method(s), comma-separated: {', '.join(REGISTRY)} (see `xai methods`)."),
    click.option("--layer", default=AUTO, show_default=True, metavar="auto|NAME|PATH|INDEX",
                 help="Target layer: auto (last convolutional), a name, a nested path 'base/conv5', "
                      "or an index among the candidates (-1 = last); see `xai layers`."),
    layer_regex_option,
    click.option("--class", "target_class", metavar="INDEX|LABEL",
                 help="Class to explain for every image (default: each image's top-1 class)."),
    click.option("--top-k", type=int, default=0, show_default=True, metavar="K",
                 help="Add the K best classes to the table (top1_index, top1_label, top1_prob, ...)."),
    click.option("--target", type=click.Choice(list(TARGETS)), default=AUTO, show_default=True,
                 help="Which classes get a heatmap: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + "."),
    click.option("--threshold", type=float, metavar="P",
                 help=f"Multi-label models: a label is present (and explained by --target positive) when its "
                      f"probability is at least P, 0..1 [default: {DEFAULT_THRESHOLD}]."),
    click.option("--sign", type=click.Choice(list(SIGNS)),
                 help="Regression models: explain " + "; ".join(f"{k}: {v}" for k, v in SIGNS.items())
                      + " [default: positive]."),
    click.option("--background", metavar="INDEX|LABEL|none",
                 help="Segmentation models: the class whose region is not explained (every other class in the "
                      "predicted mask gets a map) [default: 0; none for independent sigmoid channels]."),
    click.option("--region", default="predicted", show_default=True, metavar="predicted|truth|box:X0,Y0,X1,Y1",
                 help="Segmentation models: where each class's scores are summed: "
                      + "; ".join(f"{k}: {v}" for k, v in REGION_SOURCES.items()) + "."),
    click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
                 help="Class names: a text file with one per line, or a JSON list or index->name object."),
    click.option("-b", "--batch-size", type=int, default=16, show_default=True,
                 help="Images per forward/backward pass."),
    click.option("--preprocess", type=click.Choice([AUTO, *PRESET_HELP]), default=AUTO, show_default=True,
                 help="Pixel scaling: auto (0..255 if the model has a Rescaling/Normalization layer, "
                      "else 0..1); " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + "."),
    click.option("--mean", callback=parsed(parse_numbers), metavar="M[,M,M]",
                 help="--preprocess custom: per-channel mean on the 0..1 scale, e.g. 0.485,0.456,0.406."),
    click.option("--std", callback=parsed(parse_numbers), metavar="S[,S,S]",
                 help="--preprocess custom: per-channel standard deviation on the 0..1 scale."),
    click.option("--resize", type=click.Choice(list(RESIZE_MODES)), default="stretch", show_default=True,
                 help="How images are fitted to the model's input: " + "; ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items())
                      + ". Heatmaps are always drawn back over the whole original image."),
    model_options,
    click.option("--alpha", type=float, default=0.4, show_default=True,
                 help="Heatmap opacity over the image, 0 (image only) to 1 (heatmap only)."),
    click.option("--colormap", type=click.Choice(list(COLORMAPS)), default="jet", show_default=True,
                 help="Colormap for the heatmap."),
    click.option("--save", default="overlay", show_default=True, metavar="KINDS",
                 help="Files per image and method, comma-separated: overlay (.png), heatmap (.heatmap.png, "
                      "grayscale), raw (.npy, float map), panel (.panel.png: image | heatmap | overlay, captioned). "
                      "A volume model always writes the map over the scan (.nii.gz); overlay adds .ortho.png "
                      "(three planes through the peak) and .mosaic.png (axial slices), raw the model-space .npy."),
    click.option("--image-format", type=click.Choice(list(IMAGE_FORMATS)), default="png", show_default=True,
                 help="Overlay, heatmap and panel files: png (lossless), jpeg (quality 90, about 7x smaller) or "
                      "webp (lossy, about 30x smaller)."),
    click.option("--intensity", default="auto", show_default=True, metavar="CHOICE",
                 help="How images deeper than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) are brought to 0..255; "
                      "8-bit images are never changed. A volume's or multi-frame file's statistics are those of the "
                      "whole file. " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()) + "."),
    click.option("--dicom", is_flag=True,
                 help="In folders, also take files without an image suffix (e.g. named by UIDs) whose DICOM "
                      "preamble is found."),
    click.option("--slices", default="nonzero", show_default=True, metavar="nonzero|all|middle|A:B",
                 help="Which slices of a NIfTI volume (frames of a multi-frame DICOM) are explained, one row each: "
                      + "; ".join(f"{k}: {v}" for k, v in SLICE_CHOICES.items()) + "."),
    click.option("--slice-axis", type=click.Choice(list(SLICE_AXES)), default="axial", show_default=True,
                 help="NIfTI volumes, turned to RAS, are cut across this axis: "
                      + "; ".join(f"{k}: {v}" for k, v in SLICE_AXIS_HELP.items()) + "."),
    click.option("--max-size", type=int, default=None, metavar="N",
                 help="Draw every image output (each panel pane) with its long side at most N pixels (aspect "
                      "kept); default: overlays at the original size, panels and heatmaps at most 1280. The model "
                      "still sees the full image."),
    click.option("--memory-budget", type=int, default=256, show_default=True, metavar="MB",
                 help="MiB of decoded originals and of decoding/rendering work in flight (besides the model); "
                      "originals that do not fit are read again to draw them."),
    click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images larger than this many pixels (decompression-bomb guard)."),
    click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True,
                 help="What runs the images: " + "; ".join(f"{k}: {v}" for k, v in ENGINES.items())
                      + ". Outputs are byte-identical either way."),
    click.option("--workers", type=int, default=None, metavar="N",
                 help="local: threads that decode images and write PNGs (default CPU count, 2..8). ray: model "
                      "replicas (default one per node), which together never hold every CPU."),
    click.option("--ray-address", metavar="ADDRESS",
                 help="--engine ray: the cluster to join: 'auto' (the one this machine belongs to), HOST:PORT "
                      "(the head's GCS) or 'ray://HOST:PORT' (Ray Client); default: start Ray on this machine."),
    click.option("--gpus-per-worker", type=float, default=0.0, show_default=True, metavar="SHARE",
                 help="--engine ray: GPUs each replica asks for (0.5 puts two on a GPU); where the cluster has GPUs."),
    method_options,
    click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line."),
    debug_option,
]


def run_options(func: Callable) -> Callable:
    """Give ``xai run`` its options (``RUN_OPTIONS``)."""
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func
