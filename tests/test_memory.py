"""Memory bounded by a budget, not by batch size times image size: the pipeline's own accounting
of decoded originals and decode/render work never exceeds it, and originals it could not keep
are read again, to the same files. (The RSS figures live in benchmarks/run.py.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from xaicli.budget import MemoryBudget
from xaicli.config import RunConfig
from xaicli.images import discover
from xaicli.engines.local import run
from xaicli.pipeline import prepare


def _photos(folder, count, size=(150, 200)):
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    return folder


def _outputs(prepared, images, out, budget):
    """Run the same prepared explainer (so the maps are the same) into ``out`` under ``budget``."""
    config = replace(prepared.config, out_dir=out)
    results = list(run(replace(prepared, decisions=replace(prepared.decisions, config=config)), discover(config.inputs, exclude=[out]), budget=budget))
    assert all(r.ok for r in results) and len(results) == 24
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png"}


def _prepared(tiny_model, images):
    return prepare(RunConfig(model=tiny_model, inputs=(images,), out_dir=images.parent / "unused", batch_size=8,
                             workers=3, save=("overlay", "heatmap"), existing="overwrite"))


def test_bytes_in_flight_stay_within_the_budget_and_dropped_originals_give_the_same_files(tiny_model, tmp_path):
    images = _photos(tmp_path / "images", 24)
    prepared = _prepared(tiny_model, images)
    tight = MemoryBudget(2_500_000)  # a 200 x 150 image: kept 120 KB, decoded 120 KB, drawn 1.2 MB (+ 120 KB again)
    constrained = _outputs(prepared, images, tmp_path / "tight", tight)
    assert tight.peak <= tight.limit and tight.kept == tight.work == 0  # everything given back
    assert tight.dropped > 0  # some originals were read again to draw them
    roomy = MemoryBudget(2**30)
    assert _outputs(prepared, images, tmp_path / "roomy", roomy) == constrained and roomy.dropped == 0


def test_an_image_larger_than_the_budget_is_still_done_alone(tiny_model, tmp_path):
    images = _photos(tmp_path / "images", 24, size=(300, 400))  # each render is more than the budget
    small = MemoryBudget(300_000)
    files = _outputs(_prepared(tiny_model, images), images, tmp_path / "out", small)
    assert len(files) == 48 and small.kept == small.work == 0
