"""Explaining images (or a 3-D model's volumes) held in memory, for the Python API: read, fitted to
the model, explained a batch at a time, and their rows made as the table's are."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._errors import ImageError, UsageError
from .._explain.explainer import Explained
from .._inputs.geometry import drawn_picture, to_model_input
from .._inputs.volumes import PlacedScan, fit_volume_view, volume_model_input
from .._outputs.table import row_record
from . import rows
from .config import ExplainOptions
from .decisions import Prepared, chosen_targets
from .regions import given_region

if TYPE_CHECKING:
    from .._api import Explanation, Picture, ScanInput
    from .._models.info import ModelInfo

NON_FINITE = "the model produced non-finite scores (NaN or inf) for this image"


def explain_pictures(prepared: Prepared, options: ExplainOptions, pictures: list[Picture]) -> Explanation:
    """Explain ``pictures`` with ``prepared``'s methods as ``options`` say (the per-call ones may
    differ from the explainer's), ``batch_size`` at a time."""
    from .._api import Explanation

    info = prepared.info
    _, targets = chosen_targets(options, prepared.labels, info)
    if options.region == "truth":
        raise UsageError("region='truth' reads each image's label map from a run's --truth-masks; here give the "
                         "region as region='box:X0,Y0,X1,Y1', or explain the files with xaicli.run")
    batch_size = prepared.explainer.batch_size
    explained: list[list[Explained]] = []
    for start in range(0, len(pictures), batch_size):
        chunk = pictures[start:start + batch_size]
        inputs = np.stack([to_model_input(p.picture, info.input_size, info.channels, prepared.scaling, options.resize)
                           for p in chunk])
        given = [_given_box(options, info, p, start + position) for position, p in enumerate(chunk)]
        explained += prepared.explainer.explain_each(inputs, targets, given=given if given[0] is not None else None)
    views = [drawn_picture(p.picture, info.input_size, options.resize, options.max_size) for p in pictures]
    return Explanation(prepared, options, pictures, explained, _records(prepared, options, pictures, explained), views,
                       per_image=any(target.depends_on_prediction for target in targets))


def explain_volumes(prepared: Prepared, options: ExplainOptions, scans: list[ScanInput]) -> Explanation:
    """Explain a 3-D model's ``scans`` as ``explain_pictures`` does images: each fitted to the
    model's (D, H, W) as ``options.resize`` says, ``batch_size`` at a time."""
    from .._api import Explanation

    info = prepared.info
    _, targets = chosen_targets(options, prepared.labels, info)
    placed = [PlacedScan(each.scan, fit_volume_view(each.scan.shape, info.input_size, options.resize)) for each in scans]
    batch_size = prepared.explainer.batch_size
    explained: list[list[Explained]] = []
    for start in range(0, len(placed), batch_size):
        inputs = np.stack([volume_model_input(p, info.input_size, prepared.scaling) for p in placed[start:start + batch_size]])
        explained += prepared.explainer.explain_each(inputs, targets)
    return Explanation(prepared, options, scans, explained, _records(prepared, options, scans, explained), placed,
                       per_image=any(target.depends_on_prediction for target in targets))


def _given_box(options: ExplainOptions, info: ModelInfo, picture: Picture, position: int) -> np.ndarray | None:
    """The ``region`` box of a segmentation on the output grid of ``picture``, the ``position``-th
    image; None for other regions and models."""
    if info.kind != "segmentation":
        return None
    try:
        return given_region(options.region, info, None, None, (picture.picture.height, picture.picture.width),
                            options.resize)
    except ImageError as exc:
        raise ImageError(f"image {position} ({picture.name}): {exc}") from None


def _records(prepared: Prepared, options: ExplainOptions, pictures: list[Picture] | list[ScanInput],
             explained: list[list[Explained]]) -> list[dict[str, object]]:
    """The table's rows: image by image, then method, then explained class, as JSON Lines holds them."""
    layout = rows.table_layout(prepared, options)
    records = []
    for picture, image_explained in zip(pictures, explained):
        finite = all(np.all(np.isfinite(e.explanation.scores[e.index])) for e in image_explained)
        for method in options.methods:
            for each in image_explained:
                if not finite:
                    row = rows.error_row(prepared, picture.name, method, NON_FINITE)
                elif not each.target.explains:
                    row = rows.nothing_row(prepared, each.explanation, each.index, method, name=picture.name,
                                           reason=each.target.reason, note=picture.note)
                else:
                    row = rows.explained_row(prepared, each.explanation, each.index, method, name=picture.name,
                                             note=picture.note, rank=each.target.rank, top_k=options.top_k,
                                             region_pixels=each.target.region_pixels)
                records.append(row_record(row, layout))
    return records
