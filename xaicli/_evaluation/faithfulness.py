"""Can a map be trusted? Per-image figures computed in the same pass that makes the map, their
means per method, and the requirements a CI job sets on them (numpy only; the model's
probabilities come in as a function).

- Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE): the explained class's probability
  as the input's pixels (a volume's voxels) are removed (replaced by the baseline) or revealed (over a blurred copy)
  in descending order of the map, in equal steps; the area under that curve over the fraction
  changed, 0..1. A faithful map makes the probability fall fast when deleting (low AUC) and
  rise fast when inserting (high AUC).
- Against ground truth (an object mask): pointing (Zhang et al. 2016: the map's peak lies on
  the object, within a tolerance), energy inside the object (Wang et al. 2020: the share of the
  map's mass on it), and the IoU of the map thresholded at half its maximum with the object.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .._errors import UsageError

PERTURBATION_METRICS = {
    "deletion": "area under the explained class's probability as the map's top pixels are removed (lower is better)",
    "insertion": "area under the probability as they are revealed over a blurred copy (higher is better)",
}
TRUTH_METRICS = {
    "pointing": "share of images whose map peak lies on the object, within --pointing-tolerance pixels",
    "energy": "share of the map's mass inside the object",
    "iou": "IoU of the map above half its maximum with the object",
}
BLUR_SIGMA, BLUR_TAPS = 5.0, 11  # the paper's insertion start: a Gaussian blur of the input


def area_under(probabilities: np.ndarray) -> float:
    """Trapezoid-rule area under ``probabilities`` taken at equal steps over 0..1."""
    values = np.asarray(probabilities, np.float64)
    return float(np.sum((values[1:] + values[:-1]) / 2.0) / (len(values) - 1))


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat indices of an (H, W) map's pixels (a (D, H, W) map's voxels), highest first; ties
    keep raster order."""
    return np.argsort(-saliency.ravel(), kind="stable")


def perturbed(source: np.ndarray, target: np.ndarray, order: np.ndarray, steps: int) -> Iterator[np.ndarray]:
    """The ``steps + 1`` inputs of a curve: at step k the first round(k / steps * H W) pixels
    (voxels) of ``order`` take ``target``'s values (all channels), the others keep ``source``'s.
    ``source``, ``target``: (H, W, C) or (D, H, W, C) float32. Deletion: image over baseline;
    insertion: blurred copy over image."""
    channels = source.shape[-1]
    current = source.reshape(-1, channels).copy()
    flat_target = target.reshape(-1, channels)
    count, done = len(current), 0
    for step in range(steps + 1):
        upto = round(step * count / steps)
        chosen = order[done:upto]
        current[chosen] = flat_target[chosen]
        done = upto
        yield current.reshape(source.shape).copy()


def blurred(image: np.ndarray, sigma: float = BLUR_SIGMA, taps: int = BLUR_TAPS) -> np.ndarray:
    """(H, W, C) or (D, H, W, C) float32 Gaussian-blurred along every axis but the channels'
    (separable, ``taps`` wide, edges reflected)."""
    offsets = np.arange(taps) - taps // 2
    kernel = np.exp(-(offsets ** 2) / (2 * sigma ** 2))
    kernel /= kernel.sum()
    result = image.astype(np.float32)
    for axis in range(image.ndim - 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (taps // 2, taps // 2)
        padded = np.pad(result, pad, mode="reflect" if result.shape[axis] > taps // 2 else "edge")
        length = result.shape[axis]
        result = sum(weight * np.take(padded, np.arange(shift, shift + length), axis=axis)
                     for shift, weight in enumerate(kernel)).astype(np.float32)
    return result


@dataclass(frozen=True)
class CurveJob:
    """One curve to measure: its inputs, and the class whose probability it follows (a
    segmentation's, its mean over ``region``, (h, w) on the output grid)."""

    inputs: Callable[[], Iterator[np.ndarray]]
    explained: int
    steps: int
    region: np.ndarray | None = None


Probabilities = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]  # (inputs, regions or None) -> (n, classes)


def curve_areas(jobs: Sequence[CurveJob], probabilities: Probabilities, batch_size: int) -> list[float]:
    """The area of each job's curve. Inputs of all jobs go through ``probabilities`` ((n, H, W, C)
    and the jobs' regions (n, h, w), None without -> (n, classes)) together, ``batch_size`` at a
    time, so the steps of several images share a model call; inputs are made as they are
    needed, never all at once."""
    curves = [np.zeros(job.steps + 1) for job in jobs]
    pending: list[tuple[int, int, np.ndarray]] = []

    def flush() -> None:
        regions = [jobs[job].region for job, _, _ in pending]
        scores = probabilities(np.stack([inputs for _, _, inputs in pending]),
                               None if regions[0] is None else np.stack(regions))
        for (job, step, _), row in zip(pending, scores):
            curves[job][step] = row[jobs[job].explained]
        pending.clear()

    for number, job in enumerate(jobs):
        for step, inputs in enumerate(job.inputs()):
            pending.append((number, step, inputs))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return [area_under(curve) for curve in curves]


def pointing_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> bool:
    """The (H, W) map's peak (first in raster order) lies within ``tolerance`` pixels of the
    (H, W) boolean object ``mask``."""
    row, column = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    reach = int(math.ceil(tolerance))
    top, left = max(0, row - reach), max(0, column - reach)
    window = mask[top:row + reach + 1, left:column + reach + 1]
    rows, columns = np.nonzero(window)
    if not len(rows):
        return False
    distances = np.hypot(rows + top - row, columns + left - column)
    return bool(distances.min() <= tolerance)


def energy_in(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) map's mass inside the object, 0..1 (0 for an empty map)."""
    total = float(saliency.sum(dtype=np.float64))
    return float(saliency[mask].sum(dtype=np.float64)) / total if total > 0 else 0.0


def iou(saliency: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the map at or above half its maximum with the object, 0..1."""
    peak = float(saliency.max())
    shown = saliency >= peak / 2 if peak > 0 else np.zeros(saliency.shape, bool)
    union = np.count_nonzero(shown | mask)
    return np.count_nonzero(shown & mask) / union if union else 0.0


def box_mask(boxes: Iterable[Sequence[float]], size: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """(H, W) boolean mask of ``boxes`` [x0, y0, x1, y1] (original pixels, x1/y1 inclusive edges
    of the box) scaled by ``scale`` (y, x) onto a grid of ``size`` (H, W)."""
    mask = np.zeros(size, bool)
    for x0, y0, x1, y1 in boxes:
        top, bottom = int(math.floor(y0 * scale[0])), int(math.ceil((y1 + 1) * scale[0]))
        left, right = int(math.floor(x0 * scale[1])), int(math.ceil((x1 + 1) * scale[1]))
        mask[max(0, top):max(0, bottom), max(0, left):max(0, right)] = True
    return mask


@dataclass(frozen=True)
class Requirement:
    """One ``--require`` term: a figure, a comparison (>= or <=) and a bound."""

    figure: str
    at_least: bool
    bound: float

    def met_by(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound

    def __str__(self) -> str:
        return f"{self.figure}{'>=' if self.at_least else '<='}{self.bound:g}"


LABEL_FIGURES = ("accuracy", "f1")  # from --true-labels, over all images: accuracy (exact match), macro F1
FIGURES = (*PERTURBATION_METRICS, *TRUTH_METRICS, *LABEL_FIGURES)


def parse_requirements(text: str) -> tuple[Requirement, ...]:
    """``'pointing>=0.9,deletion<=0.2,accuracy>=0.95'``; a one-line UsageError otherwise."""
    requirements = []
    for term in (part.strip() for part in text.split(",") if part.strip()):
        match = re.fullmatch(r"([a-z][a-z0-9]*)\s*(>=|<=)\s*([-+0-9.eE]+)", term)
        if not match or match.group(1) not in FIGURES:
            raise UsageError(f"--require {term!r}: give FIGURE>=BOUND or FIGURE<=BOUND with a figure of "
                             f"{', '.join(FIGURES)} (e.g. pointing>=0.9,deletion<=0.2)")
        try:
            bound = float(match.group(3))
        except ValueError:
            raise UsageError(f"--require {term!r}: {match.group(3)!r} is not a number") from None
        requirements.append(Requirement(match.group(1), match.group(2) == ">=", bound))
    return tuple(requirements)


def failed_requirements(requirements: Iterable[Requirement], means: dict[str, dict[str, float | None]],
                        labelled: dict[str, float | None]) -> list[str]:
    """One line per requirement a method's mean (or the accuracy or F1 over the ``labelled``
    images, ``LABEL_FIGURES``) does not meet, saying by how much; a figure with no value (no image
    had it) does not meet it."""
    failures = []
    for requirement in requirements:
        values = {"all images": labelled.get(requirement.figure)} if requirement.figure in LABEL_FIGURES else {
            method: figures.get(requirement.figure) for method, figures in means.items()}
        for who, value in values.items():
            if value is None:
                failures.append(f"{requirement} not met: {who} has no {requirement.figure} (no image had it)")
            elif not requirement.met_by(value):
                failures.append(f"{requirement} not met: {who} {value:.3f} ({abs(value - requirement.bound):.3f} "
                                f"{'short' if requirement.at_least else 'over'})")
    return failures


def figure_from_cell(cell: object) -> float | None:
    """A figure's table cell (CSV text or JSON value) as a number, pointing's true/false as 1/0;
    None when empty."""
    if cell in (None, ""):
        return None
    if isinstance(cell, bool) or str(cell).lower() in ("true", "false"):
        return 1.0 if str(cell).lower() == "true" else 0.0
    return float(cell)


@dataclass
class Means:
    """Running sums of each method's figures, for their means."""

    sums: dict[str, dict[str, float]]
    counts: dict[str, dict[str, int]]

    @classmethod
    def empty(cls) -> "Means":
        return cls({}, {})

    def add(self, method: str, figures: dict[str, float | bool | None]) -> None:
        for figure, value in figures.items():
            if value is None or value == "":
                continue
            self.sums.setdefault(method, {}).setdefault(figure, 0.0)
            self.counts.setdefault(method, {}).setdefault(figure, 0)
            self.sums[method][figure] += float(value)
            self.counts[method][figure] += 1

    def as_dict(self, methods: Sequence[str], figures: Sequence[str]) -> dict[str, dict[str, float | None]]:
        """method -> figure -> mean over the images that had it (None when none did)."""
        return {method: {figure: (round(self.sums[method][figure] / self.counts[method][figure], 6)
                                  if self.counts.get(method, {}).get(figure) else None) for figure in figures}
                for method in methods}


def spearman(first: np.ndarray, second: np.ndarray) -> float | None:
    """Spearman's rank correlation of two maps of one shape (ties ranked by their average); None
    when either is flat, where it is not defined."""
    a, b = _ranks(first.ravel()), _ranks(second.ravel())
    a, b = a - a.mean(), b - b.mean()
    spread = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / spread) if spread > 0 else None


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, tied, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(tied, weights=ranks) / counts)[tied]


SSIM_SIGMA, SSIM_TAPS, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03  # Wang et al. 2004, data range 1


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """Mean structural similarity of two (H, W) maps in [0, 1] (Wang, Bovik, Sheikh & Simoncelli
    2004): Gaussian windows of sigma 1.5 over 11 taps, K1 0.01, K2 0.03."""
    x, y = first.astype(np.float64)[..., None], second.astype(np.float64)[..., None]
    window = lambda image: blurred(image, SSIM_SIGMA, SSIM_TAPS).astype(np.float64)  # noqa: E731
    mean_x, mean_y = window(x), window(y)
    var_x = window(x * x) - mean_x ** 2
    var_y = window(y * y) - mean_y ** 2
    covariance = window(x * y) - mean_x * mean_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())
