"""A tiny ViT trained in the test session (seconds) on a task that needs attention to the object:
the class is the colour of one bright patch among dim noise. Attention rollout and the
gradient-weighted rollout must point at that patch (the README's pointing figures)."""

from __future__ import annotations

import numpy as np
import pytest

from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import build_vit

SIZE, PATCH = 16, 4  # a 4 x 4 grid of 4-pixel patches


def coloured_patches(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 16, 16, 3) in [0, 1], classes (N,) = the patch's colour, patch cells (N, 2))."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.3, (count, SIZE, SIZE, 3)).astype(np.float32)
    classes = rng.integers(0, 3, count)
    cells = rng.integers(0, SIZE // PATCH, (count, 2))
    for image, colour, (row, column) in zip(images, classes, cells * PATCH):
        image[row:row + PATCH, column:column + PATCH] = 0.1
        image[row:row + PATCH, column:column + PATCH, colour] = 1.0
    return images, classes, cells


@pytest.fixture(scope="module")
def trained_vit(tmp_path_factory):
    import keras

    images, classes, _ = coloured_patches(3000, seed=0)
    model = build_vit(height=SIZE, width=SIZE, patch=PATCH, dim=16, heads=2, blocks=2, classes=3, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, classes, batch_size=64, epochs=5, verbose=0)
    path = tmp_path_factory.mktemp("trained_vit") / "vit.keras"
    model.save(path)
    return model, path


def test_rollouts_point_at_the_object(trained_vit):
    model, path = trained_vit
    images, classes, cells = coloured_patches(100, seed=1)
    assert model.evaluate(images, classes, verbose=0)[1] >= 0.95  # the task is learned
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", batch_size=50,
                            methods=("attention", "grad-rollout"), preprocess="none"))
    hits = dict.fromkeys(("attention", "grad-rollout"), 0)
    for start in range(0, 100, 50):
        maps = run.explainer.explain(images[start:start + 50], BEST).maps
        for name in hits:
            peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps[name]]
            hits[name] += sum(peak == tuple(cell) for peak, cell in zip(peaks, cells[start:start + 50]))
    assert hits["attention"] >= 85 and hits["grad-rollout"] >= 70, hits
