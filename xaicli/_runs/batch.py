"""Explaining images held in memory, for the Python API: read, fitted to the model, explained a
batch at a time, and their rows made as the table's are."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._explain.explainer import BatchExplanation
from .._explain.targets import Target
from .._inputs.geometry import drawn_picture, to_model_input
from .._outputs.table import row_record
from . import rows
from .config import ExplainOptions
from .decisions import Prepared, chosen_targets

if TYPE_CHECKING:
    from .._api import Explanation, Picture

NON_FINITE = "the model produced non-finite scores (NaN or inf) for this image"


def explain_pictures(prepared: Prepared, options: ExplainOptions, pictures: list[Picture]) -> Explanation:
    """Explain ``pictures`` with ``prepared``'s methods as ``options`` say (the per-call ones may
    differ from the explainer's), ``batch_size`` at a time."""
    from .._api import Explanation

    info = prepared.info
    _, targets = chosen_targets(options, prepared.labels, info)
    batch_size = prepared.explainer.batch_size
    parts: list[list[BatchExplanation]] = []
    for start in range(0, len(pictures), batch_size):
        chunk = pictures[start:start + batch_size]
        inputs = np.stack([to_model_input(p.picture, info.input_size, info.channels, prepared.scaling, options.resize)
                           for p in chunk])
        parts.append([prepared.explainer.explain(inputs, target) for target in targets])
    explained = [_joined([part[position] for part in parts]) for position in range(len(parts[0]))]
    views = [drawn_picture(p.picture, info.input_size, options.resize, options.max_size) for p in pictures]
    return Explanation(prepared, options, pictures, explained, _records(prepared, options, pictures, targets, explained),
                       views)


def _joined(batches: list[BatchExplanation]) -> BatchExplanation:
    """Batches' explanations as one, images in order."""
    return BatchExplanation(
        probabilities=np.concatenate([b.probabilities for b in batches]),
        scores=np.concatenate([b.scores for b in batches]),
        classes=np.concatenate([b.classes for b in batches]),
        maps={method: np.concatenate([b.maps[method] for b in batches]) for method in batches[0].maps},
    )


def _records(prepared: Prepared, options: ExplainOptions, pictures: list[Picture], targets: tuple[Target, ...],
             explained: list[BatchExplanation]) -> list[dict[str, object]]:
    """The table's rows: image by image, then method, then rank, as JSON Lines holds them."""
    ranked = options.target == "topk"
    records = []
    for index, picture in enumerate(pictures):
        finite = bool(np.all(np.isfinite(explained[0].scores[index])))
        for method in options.methods:
            for target, explanation in zip(targets, explained):
                row = (rows.explained_row(prepared, explanation, index, method, name=picture.name, note=picture.note,
                                          rank=target.rank, top_k=options.top_k) if finite
                       else rows.error_row(prepared, picture.name, method, NON_FINITE))
                records.append(row_record(row, options.top_k, ranked=ranked))
    return records
