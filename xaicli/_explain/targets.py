"""What a map explains, as objects (numpy only): each image's best class, a class given for every
image, the r-th best class, a class per image, or each label a multi-label model finds present.
A target names its maps' files (its tag) and its rows (its rank); how it is told to the compiled
step is its own business."""

from __future__ import annotations

import re
from dataclasses import dataclass

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

    def per_image(self, probabilities: np.ndarray) -> list[tuple[Target, ...]]:
        """For a target that ``depends_on_prediction``: given the batch's (n, classes)
        probabilities, each image's targets (each explaining one class, or one that explains
        nothing)."""
        raise TypeError(f"{type(self).__name__} applies to the whole batch at once")

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
class NoLabel(Target):
    """An image on which a multi-label model finds no label at or above the threshold: one row
    that says so, and no map."""

    threshold: float

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

    def per_image(self, probabilities: np.ndarray) -> list[tuple[Target, ...]]:
        return [tuple(Label(int(index), self.tags[index]) for index in np.flatnonzero(row >= self.threshold))
                or (NoLabel(self.threshold),) for row in probabilities]


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
               threshold: float = 0.5, tags: tuple[str, ...] = ()) -> tuple[Target, ...]:
    """The targets of ``--target`` (``auto``, ``predicted``, ``topk`` or ``positive``), ``--top-k``
    and ``--class``'s index, for an output of ``kind``: each of the top ``top_k`` classes, the
    labels present at ``threshold`` (named by ``tags``; ``auto`` on a multi-label model without
    ``--class``), the class given, or each image's best."""
    if target == "topk":
        return tuple(RankedClass(place, top_k) for place in range(1, top_k + 1))
    if target == "positive" or (target == "auto" and kind == "multilabel" and class_index is None):
        return (PresentLabels(threshold, tags),)
    return (BEST,) if class_index is None else (GivenClass(class_index),)
