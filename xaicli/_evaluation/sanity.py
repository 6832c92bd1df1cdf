"""``xai sanity``: do the maps depend on the model? (Adebayo et al. 2018, "Sanity Checks for
Saliency Maps": cascading model-parameter randomization.)

The layers holding weights are randomized one after another from the output down, on the model
in memory (the file is never touched). After each step the same images are explained for the
classes the trained model predicted, and each map is compared with the trained model's map by
Spearman's rank correlation and SSIM. A method whose maps stay alike as the model loses what it
learned shows the image, not the model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._errors import ImageError
from .._explain.targets import BEST, EachClass, Target
from .._inputs.geometry import to_model_input
from .._inputs.raster import open_image
from .._outputs.render import overlay, upsample
from .._outputs.writers import write_image
from .faithfulness import spearman, ssim

DEPENDENT_BELOW = 0.5  # a method whose mean Spearman stays at or above this when all is randomized is called out
FIGURE_CELL = 128  # pixels of each map in the figure
FIGURE_IMAGES = 6  # images shown in the figure (the CSV has them all)


@dataclass(frozen=True)
class Step:
    """One randomization step: the top ``count`` weighted layers randomized, down to ``layer``."""

    count: int
    layer: str


def cascade(layer_count: int, steps: int) -> list[int]:
    """How many layers (from the output) are randomized at each of at most ``steps`` steps: the
    output layer alone first, every layer last, evenly between."""
    if layer_count < 1:
        return []
    return sorted({max(1, round(value)) for value in np.linspace(1, layer_count, min(steps, layer_count))})


def randomize(layer, rng: np.random.Generator) -> None:
    """Replace a layer's trainable weights by normal draws of each weight's own spread (0.05 for a
    constant one, such as a fresh bias). Batch statistics are kept: a random variance could be
    negative."""
    for variable in layer.trainable_weights:
        values = np.asarray(variable.numpy())
        spread = float(values.std()) or 0.05
        variable.assign(rng.normal(0.0, spread, values.shape).astype(values.dtype))


@dataclass(frozen=True)
class Comparison:
    """One map of one image and method after one step, against the trained model's."""

    image: str
    method: str
    step: int  # 0 is the trained model
    layer: str  # randomized from the output down to this layer ('' for the trained model)
    spearman: float | None
    ssim: float


def compare(images: Sequence[str], trained: dict[str, np.ndarray], randomized: dict[str, np.ndarray],
            size: tuple[int, int], step: int, layer: str) -> list[Comparison]:
    """Comparisons of every image's maps, both upsampled to the model input ``size``."""
    rows = []
    for method, maps in randomized.items():
        for index, name in enumerate(images):
            before, after = upsample(trained[method][index], size), upsample(maps[index], size)
            rows.append(Comparison(name, method, step, layer, spearman(before, after), ssim(before, after)))
    return rows


def means_by_step(comparisons: Sequence[Comparison]) -> dict[str, list[float | None]]:
    """method -> mean Spearman at each step (steps in order; None where no map was comparable)."""
    by_method: dict[str, dict[int, list[float]]] = {}
    for row in comparisons:
        values = by_method.setdefault(row.method, {}).setdefault(row.step, [])
        if row.spearman is not None:
            values.append(row.spearman)
    return {method: [float(np.mean(values)) if values else None for _, values in sorted(steps.items())]
            for method, steps in by_method.items()}


def verdicts(means: dict[str, list[float | None]]) -> list[str]:
    """One line per method: how its maps' correlation with the trained maps falls, and a warning
    when it stays high with every layer randomized."""
    lines = []
    for method, values in means.items():
        shown = " -> ".join("n/a" if value is None else f"{value:.2f}" for value in values)
        last = values[-1]
        if last is not None and last >= DEPENDENT_BELOW:
            lines.append(f"{method}: Spearman {shown}: its maps barely change when the model is randomized; they "
                         "show the image more than the model")
        else:
            lines.append(f"{method}: Spearman {shown} as layers are randomized: its maps depend on the model")
    return lines


def write_table(path: Path, comparisons: Sequence[Comparison]) -> None:
    """The figures as CSV: image, method, step, layer, spearman, ssim (six decimals)."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        table = csv.writer(stream, lineterminator="\n")
        table.writerow(["image", "method", "step", "layer", "spearman", "ssim"])
        for row in comparisons:
            table.writerow([row.image, row.method, row.step, row.layer,
                            "" if row.spearman is None else f"{row.spearman:.6f}", f"{row.ssim:.6f}"])


def draw_figure(pictures: Sequence[Image.Image], maps_by_step: Sequence[dict[str, np.ndarray]],
                headers: Sequence[str], lut: np.ndarray, alpha: float) -> np.ndarray:
    """A grid: a row per (image, method), a column per step (the trained model first), each cell
    the map over the image at ``FIGURE_CELL`` pixels; step names on top, method names at the left.
    Returns (H, W, 3) uint8."""
    methods = list(maps_by_step[0])
    images = min(len(pictures), FIGURE_IMAGES)
    label_width, header = 96, 18
    width = label_width + len(maps_by_step) * (FIGURE_CELL + 2)
    height = header + images * len(methods) * (FIGURE_CELL + 2)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for column, text in enumerate(headers):
        draw.text((label_width + column * (FIGURE_CELL + 2) + 2, 3), _fitted(text, FIGURE_CELL), fill=(0, 0, 0), font=font)
    for image_index in range(images):
        small = pictures[image_index].resize((FIGURE_CELL, FIGURE_CELL), Image.Resampling.BILINEAR)
        for method_index, method in enumerate(methods):
            top = header + (image_index * len(methods) + method_index) * (FIGURE_CELL + 2)
            draw.text((4, top + FIGURE_CELL // 2 - 6), _fitted(method, label_width - 8), fill=(0, 0, 0), font=font)
            for column, maps in enumerate(maps_by_step):
                cell = overlay(small, maps[method][image_index], alpha, lut)
                canvas.paste(Image.fromarray(cell), (label_width + column * (FIGURE_CELL + 2), top))
    return np.asarray(canvas)


def _fitted(text: str, width: int) -> str:
    """``text`` cut so that it fits ``width`` pixels of the default font (6 pixels a character)."""
    most = max(1, width // 6)
    return text if len(text) <= most else text[:most - 1] + "…"


def run_cascade(explain: Callable[[], dict[str, np.ndarray]], layers: Sequence, steps: int, seed: int = 0,
                on_step: Callable[[Step, dict[str, np.ndarray]], None] = lambda step, maps: None,
                name: Callable[[object], str] = lambda layer: layer.name) -> list[Step]:
    """Randomize ``layers`` (weighted layers, from the input to the output) from the output down
    in at most ``steps`` steps, calling ``explain`` after each and handing its maps to ``on_step``.
    Returns the steps taken."""
    rng = np.random.default_rng(seed)
    taken, done = [], 0
    top_down = list(reversed(layers))
    for count in cascade(len(top_down), steps):
        for layer in top_down[done:count]:
            randomize(layer, rng)
        done = count
        step = Step(count, name(top_down[count - 1]))
        on_step(step, explain())
        taken.append(step)
    return taken


def check(prepared, items: Sequence, steps: int, out_dir: Path) -> list[str]:
    """Run the cascade on ``items`` (``InputImage``) with a prepared run's explainer and
    methods; write ``OUT/sanity.csv`` and ``OUT/sanity.png``. Returns the verdict lines. Images
    that cannot be read are left out and named in a line of their own."""
    info, names, pictures, inputs, unreadable = prepared.info, [], [], [], []
    for item in items:
        try:
            picture, _ = open_image(item.path, prepared.config.max_pixels, prepared.intensity)
        except ImageError as exc:
            unreadable.append(f"{item.name}: {exc}")
            continue
        names.append(item.name)
        pictures.append(picture)
        inputs.append(to_model_input(picture, info.input_size, info.channels, prepared.scaling, prepared.config.resize))
    if not inputs:
        return [f"no image could be read: {unreadable[0] if unreadable else 'none given'}"]
    batch = np.stack(inputs)
    explainer = prepared.explainer

    def explain(target: Target) -> tuple[dict[str, np.ndarray], np.ndarray]:
        starts = range(0, len(batch), explainer.batch_size)
        parts = [explainer.explain(batch[start:start + explainer.batch_size],
                                   target.part(start, start + explainer.batch_size)) for start in starts]
        maps = {method: np.concatenate([part.maps[method] for part in parts]) for method in parts[0].maps}
        return maps, np.concatenate([part.classes for part in parts])

    trained, classes = explain(BEST)
    comparisons = compare(names, trained, trained, info.input_size, 0, "")
    maps_by_step, headers = [trained], ["trained"]

    def record(step: Step, maps: dict[str, np.ndarray]) -> None:
        comparisons.extend(compare(names, trained, maps, info.input_size, len(maps_by_step), step.layer))
        maps_by_step.append(maps)
        headers.append(f"to {step.layer}")

    run_cascade(lambda: explain(EachClass(tuple(int(c) for c in classes)))[0], explainer.probe.weighted_layers(), steps, on_step=record,
                name=explainer.probe.layer_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir / "sanity.csv", comparisons)
    write_image(out_dir / "sanity.png", draw_figure(pictures, maps_by_step, headers, prepared.lut,
                                                     prepared.config.alpha))
    lines = verdicts(means_by_step(comparisons))
    return lines + [f"left out, unreadable: {line}" for line in unreadable]
