"""What the person waiting is told: the engine's stages and progress, from the first batch on."""

from __future__ import annotations

import numpy as np
from PIL import Image

from xaicli._engines import Watch
from xaicli._engines.local import run
from xaicli._inputs.discover import discover
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare


class _Recorder(Watch):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def stage(self, text: str) -> None:
        self.events.append(("stage", text))

    def advance(self, images: float) -> None:
        self.events.append(("advance", images))

    def grow(self, images: int) -> None:
        self.events.append(("grow", images))

    def warmed_up(self) -> None:
        self.events.append(("warmed_up", None))


def test_progress_moves_per_batch_and_method_and_compiling_is_said(tiny_model, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (images / "9.png").write_bytes(b"broken")  # counted as done without being explained
    config = RunConfig(model=tiny_model, inputs=(images,), out_dir=tmp_path / "out", batch_size=4,
                       methods=("gradcam", "saliency", "scorecam"), report=False)
    watch = _Recorder()
    results = list(run(prepare(config), discover(config.inputs), watch=watch))
    assert len(results) == 10
    advances = [amount for kind, amount in watch.events if kind == "advance"]
    assert abs(sum(advances) - 10) < 1e-9
    assert len(advances) >= 3 * 3  # three batches, each moving with its methods
    stages = [text for kind, text in watch.events if kind == "stage"]
    first = watch.events.index(("warmed_up", None))
    assert [kind for kind, _ in watch.events].count("warmed_up") == 1
    assert any(text.startswith("compiling gradcam") for text in stages[:first])  # the prediction step
    assert any(text.startswith("compiling scorecam") for text in stages[:first])
    assert not any("compiling" in text for kind, text in watch.events[first:] if kind == "stage")
    later = [text for kind, text in watch.events[first:] if kind == "stage"]
    assert {"gradcam", "saliency", "scorecam"} <= set(later)  # each method said as it runs
