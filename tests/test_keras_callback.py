"""xaicli.keras.ExplainCallback: overlays of a fixed set of images in TensorBoard as a model
trains, read back from the event file, and training exactly as it is without the callback."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from .conftest import SIZE

EPOCHS = 2


def _data():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (24, SIZE, SIZE, 3)).astype(np.float32)
    y = rng.integers(0, 2, 24)
    return x, y


def _trained(callbacks):
    """A small CNN fitted for two epochs from a fixed seed; its weights after fit."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(4, 3, activation="relu", name="conv"),
        layers.Dropout(0.3),  # random in training: a callback drawing from the same generators would show
        layers.GlobalAveragePooling2D(),
        layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, epochs=EPOCHS, batch_size=8, shuffle=True, verbose=0, callbacks=callbacks)
    return model.get_weights()


def _image_summaries(log_dir):
    """(tag, step) of every image summary in the event files, and the images' sizes."""
    import tensorflow as tf

    found, sizes = Counter(), set()
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found[(value.tag, event.step)] += 1
                encoded = tf.make_ndarray(value.tensor)  # width, height, then the PNG
                sizes.add((int(encoded[0]), int(encoded[1])))
    return found, sizes


def test_the_callback_writes_one_image_per_image_method_and_epoch_and_changes_no_training(tmp_path):
    from xaicli.keras import ExplainCallback

    images = [np.full((20, 24, 3), 90, np.uint8), np.full((SIZE, SIZE, 3), 200, np.uint8)]
    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
    log_dir, out_dir = tmp_path / "logs", tmp_path / "overlays"
    callback = ExplainCallback([*images, path], methods="gradcam,saliency", log_dir=log_dir, out_dir=out_dir)
    with_callback = _trained([callback])
    without = _trained([])
    for ours, theirs in zip(with_callback, without):
        np.testing.assert_array_equal(ours, theirs)

    found, sizes = _image_summaries(log_dir)
    expected = {(f"xai/{method}/{tag}", epoch) for method in ("gradcam", "saliency")
                for tag in ("image_0", "image_1", "scan.png") for epoch in range(EPOCHS)}
    assert set(found) == expected and set(found.values()) == {1}
    assert sizes == {(24, 20), (SIZE, SIZE), (30, 30)}  # each overlay at its image's size
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert files == sorted(f"epoch_{epoch:03d}/{tag}.{method}.png" for method in ("gradcam", "saliency")
                           for tag in ("image_0", "image_1", "scan.png") for epoch in range(EPOCHS))


def test_every_n_epochs_and_the_arguments_are_checked(tmp_path):
    from xaicli.keras import ExplainCallback

    with pytest.raises(ValueError, match="every_n_epochs must be at least 1"):
        ExplainCallback([tmp_path / "a.png"], every_n_epochs=0, log_dir=tmp_path)
    with pytest.raises(ValueError, match="give log_dir"):
        ExplainCallback([tmp_path / "a.png"])
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    callback = ExplainCallback([image], every_n_epochs=2, out_dir=tmp_path / "out")
    _trained([callback])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["epoch_001"]  # after the second epoch only
