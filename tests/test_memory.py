"""Memory bounded by a budget, not by batch size times image size: the pipeline's own accounting
of decoded originals and decode/render work never exceeds it, and originals it could not keep
are read again, to the same files. (The RSS figures live in benchmarks/run.py.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from xaicli._budget import MemoryBudget
from xaicli._engines.local import run
from xaicli._inputs.discover import discover
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare


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


def test_a_6000x4000_photo_gets_full_size_overlays_and_panels_and_heatmaps_sized_for_looking(tiny_model, tmp_path):
    """The defaults a user meets first: on a 24-megapixel photo with sensor noise, overlays stay
    at the original size, while panels (three panes) and heatmaps are drawn with their long side
    at most VIEWING_SIDE; no panel or heatmap is over 25 MB. --max-size still caps every kind."""
    from click.testing import CliRunner

    from xaicli.cli import main
    from xaicli._inputs.geometry import VIEWING_SIDE

    rng = np.random.default_rng(3)
    scene = np.kron(rng.integers(40, 220, (40, 60, 3)), np.ones((100, 100, 1)))  # 4000 x 6000 blocks
    photo = np.clip(scene + rng.normal(0, 12, scene.shape), 0, 255).astype(np.uint8)  # sensor noise
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "photo.jpg", quality=92)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(tiny_model), str(tmp_path / "in"), "-o", str(out), "-q",
                                       "--save", "overlay,heatmap,panel", "--method", "gradcam,saliency",
                                       "--no-report"])
    assert result.exit_code == 0, result.output
    pane = round(4000 * VIEWING_SIDE / 6000)
    for method in ("gradcam", "saliency"):
        sizes = {kind: Image.open(out / f"photo.jpg.{method}{suffix}.png").size
                 for kind, suffix in (("overlay", ""), ("heatmap", ".heatmap"), ("panel", ".panel"))}
        assert sizes["overlay"] == (6000, 4000)
        assert sizes["heatmap"] == (VIEWING_SIDE, pane)
        assert sizes["panel"][0] == 3 * VIEWING_SIDE and pane < sizes["panel"][1] < pane + 100  # the caption bar
        for kind in ("heatmap", "panel"):
            assert (out / f"photo.jpg.{method}.{kind}.png").stat().st_size < 25 * 2**20, kind
    capped = CliRunner().invoke(main, ["run", str(tiny_model), str(tmp_path / "in"), "-o", str(tmp_path / "capped"),
                                       "-q", "--save", "overlay,heatmap,panel", "--max-size", "2000", "--no-report"])
    assert capped.exit_code == 0, capped.output
    assert Image.open(tmp_path / "capped" / "photo.jpg.gradcam.png").size == (2000, 1333)
    assert Image.open(tmp_path / "capped" / "photo.jpg.gradcam.heatmap.png").size == (2000, 1333)
    assert Image.open(tmp_path / "capped" / "photo.jpg.gradcam.panel.png").size[0] == 6000
