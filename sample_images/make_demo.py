"""Regenerate the demo model and sample images that the README quick start runs on.

    pip install -e . scikit-image    # scikit-image only for the three photographs
    python sample_images/make_demo.py

Deterministic: a fixed seed draws ellipses, rectangles and triangles on textured backgrounds,
a small CNN learns to tell them apart, and the sample images are drawn the same way at
various sizes with each object's box written to ``shapes/boxes.json`` (the pointing-game
test checks that Grad-CAM peaks inside them). The photographs come from ``skimage.data``
(CC0, see README).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
CLASSES = ("ellipse", "rectangle", "triangle")
MODEL_SIZE = 64
TRAIN_COUNT = 4500
SAMPLE_SIZES = [(64, 64), (96, 128), (160, 120), (200, 200), (120, 90), (256, 192)]  # (width, height)


def textured_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour blobs plus grain and a few thin lines: texture with no object-like shape."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 14, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 5)):
        points = [tuple(rng.uniform(0, [width, height])) for _ in range(2)]
        draw.line(points, fill=tuple(int(c) for c in rng.uniform(30, 220, 3)), width=1)
    return image


def draw_object(rng: np.random.Generator, image: Image.Image, label: int) -> tuple[int, int, int, int]:
    """Draw one shape of class ``label``; returns its box (left, top, right, bottom), pixels."""
    width, height = image.size
    scale = min(width, height)
    box_w = int(rng.uniform(0.22, 0.45) * scale)
    box_h = int(rng.uniform(0.22, 0.45) * scale)
    left = int(rng.uniform(0.03 * width, width - box_w - 0.03 * width))
    top = int(rng.uniform(0.03 * height, height - box_h - 0.03 * height))
    right, bottom = left + box_w, top + box_h
    colour = tuple(int(c) for c in rng.choice([rng.uniform(0, 60, 3), rng.uniform(200, 255, 3)]))
    draw = ImageDraw.Draw(image)
    if CLASSES[label] == "ellipse":
        draw.ellipse((left, top, right, bottom), fill=colour)
    elif CLASSES[label] == "rectangle":
        draw.rectangle((left, top, right, bottom), fill=colour)
    else:
        draw.polygon([(left, bottom), (right, bottom), ((left + right) / 2, top)], fill=colour)
    return left, top, right, bottom


def make_image(rng: np.random.Generator, width: int, height: int, label: int) -> tuple[Image.Image, tuple]:
    image = textured_background(rng, width, height)
    box = draw_object(rng, image, label)
    return image.filter(ImageFilter.GaussianBlur(0.4)), box


def training_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(TRAIN_COUNT) % len(CLASSES)
    images = np.stack([
        np.asarray(make_image(rng, MODEL_SIZE, MODEL_SIZE, int(label))[0], dtype=np.float32)
        for label in labels
    ])
    return images, labels


def build_model():
    import keras
    from keras import layers

    inputs = keras.Input((MODEL_SIZE, MODEL_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for index, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        if index < 3:
            x = layers.MaxPooling2D(name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_demo")


def train(rng: np.random.Generator):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    images, labels = training_data(rng)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(images, labels, batch_size=64, epochs=12, validation_split=0.1, verbose=2)
    return model


def write_samples(rng: np.random.Generator) -> None:
    folder = HERE / "shapes"
    folder.mkdir(exist_ok=True)
    boxes = {}
    for index in range(12):
        label = index % len(CLASSES)
        width, height = SAMPLE_SIZES[index % len(SAMPLE_SIZES)]
        image, box = make_image(rng, width, height, label)
        name = f"{index:02d}_{CLASSES[label]}.png"
        image.save(folder / name)
        boxes[name] = {"label": CLASSES[label], "class_index": label, "box": list(box)}
    (folder / "boxes.json").write_text(json.dumps(boxes, indent=1) + "\n")


def write_photos() -> None:
    from skimage import data

    folder = HERE / "photos"
    folder.mkdir(exist_ok=True)
    Image.fromarray(data.chelsea()).save(folder / "chelsea_cat.jpg", quality=90)
    coffee = Image.fromarray(data.coffee()).resize((400, 267), Image.Resampling.LANCZOS)
    coffee.save(folder / "coffee.jpg", quality=90)
    camera = Image.fromarray(data.camera()).resize((256, 256), Image.Resampling.LANCZOS)
    camera.save(folder / "camera_grayscale.png")  # a one-channel (mode L) image


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rng = np.random.default_rng(20261124)
    model = train(rng)
    model.save(HERE / "demo_model.keras")
    (HERE / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    write_samples(rng)
    write_photos()


if __name__ == "__main__":
    main()
