"""What a map explains, as objects (numpy only): each image's best class, a class given for every
image, the r-th best class, or a class per image. A target names its maps' files (its tag) and
its rows (its rank); how it is told to the compiled step is its own business."""

from __future__ import annotations

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


BEST = TopClass()


def targets_of(target: str, top_k: int, class_index: int | None) -> tuple[Target, ...]:
    """The targets of ``--target`` (``predicted`` or ``topk``), ``--top-k`` and ``--class``'s index:
    each of the top ``top_k`` classes, the class given, or each image's best."""
    if target == "topk":
        return tuple(RankedClass(place, top_k) for place in range(1, top_k + 1))
    return (BEST,) if class_index is None else (GivenClass(class_index),)
