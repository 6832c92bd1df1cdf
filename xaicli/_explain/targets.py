"""What a map explains, as objects (numpy only): each image's best class, a class given for every
image, the r-th best class, a class per image, or each label a multi-label model finds present.
A target names its maps' files (its tag) and its rows (its rank); how it is told to the compiled
step is its own business."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# How the compiled step reads a request: a class index, or -r for the image's r-th best class.
_BEST = -1


@dataclass(frozen=True)
class Target:
    """What one pass of the methods explains, for every image of a batch."""

    @property
    def tag(self) -> str:
        """What output names add for this target ('' when an image has one map per method)."""
        return ""

    @property
    def rank(self) -> int | None:
        """The explained class's rank among the image's (1 = best), for the table; None when not ranked."""
        return None

    def requested(self, count: int) -> np.ndarray:
        """(count,) int32: the request of each of ``count`` images, as the compiled step reads it."""
        raise NotImplementedError

    def part(self, start: int, stop: int) -> Target:
        """The target of images ``start:stop`` of those it was made for: itself, unless it holds a
        class per image."""
        return self

    @property
    def depends_on_prediction(self) -> bool:
        """True when the classes explained are chosen from each image's prediction (``per_image``)."""
        return False

    def per_image(self, prediction: Prediction, given: list[np.ndarray] | None = None) -> list[tuple[Target, ...]]:
        """For a target that ``depends_on_prediction``: given the batch's prediction (its
        ``probabilities`` (n, classes), a segmentation's ``pixels`` (n, h, w, classes)) and, for
        one that ``needs_given_regions``, each image's region from outside the model, each
        image's targets (each explaining one class, or one ``Nothing``)."""
        raise TypeError(f"{type(self).__name__} applies to the whole batch at once")

    @property
    def needs_given_regions(self) -> bool:
        """True when each image's regions come from outside the model (a truth mask, a box)."""
        return False

    @property
    def region_pixels(self) -> int | None:
        """A segmentation target's region size, in pixels of the output grid; None for others."""
        return None

    @property
    def outline(self) -> np.ndarray | None:
        """The region drawn over the overlays, (h, w) on the output grid; None for others."""
        return None

    @property
    def explains(self) -> bool:
        """False for the target of an image with nothing to explain (no label present)."""
        return True

    @property
    def possible_tags(self) -> tuple[str, ...]:
        """Every tag an image's files may have for this target."""
        return (self.tag,)


@dataclass(frozen=True)
class TopClass(Target):
    """Each image's best-scoring class (ties: the lower index, as argmax)."""

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, _BEST, np.int32)


@dataclass(frozen=True)
class GivenClass(Target):
    """One class for every image (``--class``)."""

    index: int

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, self.index, np.int32)


@dataclass(frozen=True)
class RankedClass(Target):
    """Each image's ``place``-th best class (``--target topk``), tagged 'top<place>' with the place
    zero-padded to the width of ``of`` (the K of top K) so that names sort by rank."""

    place: int
    of: int

    @property
    def tag(self) -> str:
        return f"top{self.place:0{len(str(self.of))}d}"

    @property
    def rank(self) -> int | None:
        return self.place

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, -self.place, np.int32)


@dataclass(frozen=True)
class EachClass(Target):
    """A class for each image, in order (e.g. the classes a trained model chose, explained again
    on a randomized one)."""

    indices: tuple[int, ...]

    def requested(self, count: int) -> np.ndarray:
        if count != len(self.indices):
            raise ValueError(f"{len(self.indices)} classes for {count} images")
        return np.asarray(self.indices, np.int32)

    def part(self, start: int, stop: int) -> EachClass:
        return EachClass(self.indices[start:stop])


@dataclass(frozen=True)
class Label(Target):
    """One label of one image, found present (``PresentLabels``); its tag names the files."""

    index: int
    label_tag: str

    @property
    def tag(self) -> str:
        return self.label_tag

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, self.index, np.int32)


@dataclass(frozen=True)
class Nothing(Target):
    """An image with nothing to explain (no label present, no class in its mask): one row that
    says ``reason``, and no map."""

    reason: str

    @property
    def explains(self) -> bool:
        return False

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, _BEST, np.int32)


@dataclass(frozen=True)
class PresentLabels(Target):
    """Each label whose probability is at least ``threshold`` (``--target positive``), one map per
    label, in label order; ``tags`` names each label's files (``label_tags``)."""

    threshold: float
    tags: tuple[str, ...]

    @property
    def possible_tags(self) -> tuple[str, ...]:
        return self.tags

    @property
    def depends_on_prediction(self) -> bool:
        return True

    def requested(self, count: int) -> np.ndarray:
        raise TypeError("PresentLabels depends on each image's prediction: ask per_image")

    def per_image(self, prediction: Prediction, given: list[np.ndarray] | None = None) -> list[tuple[Target, ...]]:
        nothing = Nothing(f"no label reached the threshold {self.threshold:g}: nothing to explain")
        return [tuple(Label(int(index), self.tags[index]) for index in np.flatnonzero(row >= self.threshold))
                or (nothing,) for row in prediction.probabilities]


@dataclass(frozen=True, eq=False)
class Region(Target):
    """One class of a segmentation, explained over a region of one image: its scores summed
    over ``region`` (h, w) float32 in [0, 1] on the output grid (Seg-Grad-CAM)."""

    index: int
    region_tag: str
    region: np.ndarray

    @property
    def tag(self) -> str:
        return self.region_tag

    @property
    def region_pixels(self) -> int:
        return int(np.count_nonzero(self.region > 0.5))

    @property
    def outline(self) -> np.ndarray:
        return self.region

    def requested(self, count: int) -> np.ndarray:
        return np.full(count, self.index, np.int32)


REGION_SOURCES = {
    "predicted": "each class over the pixels the model predicts as it",
    "truth": "each class over its pixels in the image's --truth-masks label map (pixel values are classes)",
    "box:X0,Y0,X1,Y1": "each class the model predicts inside the box (original pixels), over the whole box",
}


@dataclass(frozen=True)
class ClassRegions(Target):
    """A segmentation's classes, each over a region (Vinogradova et al. 2020): every class but
    ``background`` present in the image's predicted mask, or only ``class_index`` when given.
    The region is where the class is predicted (``within`` 'predicted'), where the image's
    label map has it ('truth'), or a box ('box', every class predicted inside it). A pixel's
    predicted class is the most probable one; with ``independent`` channels (several sigmoids)
    a pixel belongs to every class at or above ``threshold``. ``tags`` names each class's files."""

    tags: tuple[str, ...]
    background: int | None = 0
    class_index: int | None = None
    independent: bool = False
    threshold: float = 0.5
    within: str = "predicted"

    @property
    def possible_tags(self) -> tuple[str, ...]:
        return tuple(tag for index, tag in enumerate(self.tags) if index != self.background)

    @property
    def depends_on_prediction(self) -> bool:
        return True

    @property
    def needs_given_regions(self) -> bool:
        return self.within != "predicted"

    def requested(self, count: int) -> np.ndarray:
        raise TypeError("ClassRegions depends on each image's prediction: ask per_image")

    def per_image(self, prediction: Prediction, given: list[np.ndarray] | None = None) -> list[tuple[Target, ...]]:
        """``given``: with ``within`` 'truth', each image's (h, w) int label map on the output grid
        (-1 where unknown); with 'box', each image's (h, w) float32 box region."""
        predicted = predicted_masks(prediction.pixels, self.independent, self.threshold)
        return [self._regions(predicted[index], given[index] if given is not None else None) or
                (Nothing(self._nothing_reason()),) for index in range(len(predicted))]

    def _regions(self, predicted: np.ndarray, given: np.ndarray | None) -> tuple[Region, ...]:
        """One image's regions, from its (h, w, classes) predicted mask and its given region."""
        classes = predicted.shape[-1]
        wanted = [self.class_index] if self.class_index is not None else [
            index for index in range(classes) if index != self.background]
        if self.within == "truth":
            masks = given[..., None] == np.arange(classes)
        elif self.within == "box":
            inside = given > 0.5
            return tuple(Region(index, self.tags[index], given) for index in wanted
                         if self.class_index is not None or predicted[inside, index].any())
        else:
            masks = predicted
        return tuple(Region(index, self.tags[index], masks[..., index].astype(np.float32))
                     for index in wanted if masks[..., index].any())

    def _nothing_reason(self) -> str:
        which = f"class {self.class_index}" if self.class_index is not None else "no class but the background"
        where = {"predicted": "in the predicted mask", "truth": "in the truth mask",
                 "box": "predicted inside the box"}[self.within]
        return f"{which} {where}: nothing to explain"


def predicted_masks(pixels: np.ndarray, independent: bool, threshold: float) -> np.ndarray:
    """(n, h, w, classes) bool: each pixel's class from its (n, h, w, classes) probabilities,
    the most probable one (ties: the lower index); with ``independent`` channels, every class
    at or above ``threshold``."""
    if independent:
        return pixels >= threshold
    return np.argmax(pixels, axis=-1)[..., None] == np.arange(pixels.shape[-1])


class Prediction(Protocol):
    """What ``per_image`` reads of a batch's prediction."""

    probabilities: np.ndarray  # (n, classes)
    pixels: np.ndarray | None  # a segmentation's (n, h, w, classes) per-pixel probabilities


BEST = TopClass()


def label_tags(labels: tuple[str, ...], count: int) -> tuple[str, ...]:
    """What each of ``count`` labels adds to its files' names: its name from ``--labels`` with any
    character other than letters, digits, '-' and '_' made '_' (e.g. 'Pleural_Thickening'), or
    'label<i>' (zero-padded) without names, or when two names would be the same."""
    numbered = tuple(f"label{index:0{len(str(count - 1))}d}" for index in range(count))
    if len(labels) != count:
        return numbered
    named = tuple(re.sub(r"[^\w-]", "_", name, flags=re.ASCII).strip("_") for name in labels)
    return named if all(named) and len(set(named)) == count else numbered


def targets_of(target: str, top_k: int, class_index: int | None, kind: str = "classifier",
               threshold: float = 0.5, tags: tuple[str, ...] = (), background: int | None = 0,
               independent: bool = False, region: str = "predicted") -> tuple[Target, ...]:
    """The targets of ``--target`` (``auto``, ``predicted``, ``topk`` or ``positive``), ``--top-k``
    and ``--class``'s index, for an output of ``kind``: each of the top ``top_k`` classes, the
    labels present at ``threshold`` (named by ``tags``; ``auto`` on a multi-label model without
    ``--class``), a segmentation's classes over their predicted pixels (all but ``background``,
    or the class given; each over the region ``region`` (``REGION_SOURCES``) says), the class
    given, or each image's best."""
    if kind == "segmentation":
        within = "box" if region.startswith("box:") else region
        return (ClassRegions(tags, background, class_index, independent, threshold, within),)
    if target == "topk":
        return tuple(RankedClass(place, top_k) for place in range(1, top_k + 1))
    if target == "positive" or (target == "auto" and kind == "multilabel" and class_index is None):
        return (PresentLabels(threshold, tags),)
    return (BEST,) if class_index is None else (GivenClass(class_index),)
