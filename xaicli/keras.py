"""Explanations during training: a Keras callback that explains a fixed set of images with the model
being trained, every few epochs, into TensorBoard (and, if asked, into files)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from ._api import Explainer, ImageLike
from ._errors import UsageError

__all__ = ["ExplainCallback"]


class ExplainCallback(keras.callbacks.Callback):
    """Explain ``images`` with the model being trained at the end of every ``every_n_epochs``-th
    epoch: each overlay goes to TensorBoard as an image summary (tag ``xai/<method>/<image>``,
    step = the epoch, counted from 0), and with ``out_dir`` also to
    ``out_dir/epoch_<NNN>/<image>.<method>.png``.

    The model is only read (inference mode, no weight or state changes, no random numbers drawn
    from Keras, TensorFlow or NumPy's global generators), so training goes exactly as it would
    without the callback. The layer, preprocessing and compiled steps are settled on the first
    epoch explained and reused after it; the maps follow the weights as they change.

    Args:
        images: the images to follow: paths, PIL images or arrays, as ``Explainer.explain`` takes them.
        methods: the methods to draw, as ``Explainer``'s ``methods``.
        every_n_epochs: explain after epochs every_n_epochs, 2 x every_n_epochs, ... (>= 1).
        log_dir: the TensorBoard folder (a ``train``-like subfolder is not added); None writes no summaries.
        out_dir: also write each epoch's overlays as PNG files here.
        **options: any other ``Explainer`` option (``layer``, ``preprocess``, ``target_class``,
            ``labels``, ``alpha``, ``colormap``, ``max_size``, ...).

    Example:
        >>> callback = ExplainCallback(["scan1.png", "scan2.png"], methods="gradcam",
        ...                            log_dir="logs/xai", max_size=256)  # doctest: +SKIP
        >>> model.fit(x, y, epochs=10, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, images: ImageLike | Sequence[ImageLike], methods: str | Sequence[str] = "gradcam",
                 every_n_epochs: int = 1, log_dir: str | Path | None = None, out_dir: str | Path | None = None,
                 **options: Any) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        if log_dir is None and out_dir is None:
            raise ValueError("give log_dir (TensorBoard), out_dir (PNG files) or both: otherwise nothing is written")
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise UsageError("log_dir: TensorBoard summaries need TensorBoard: pip install 'xaicli[tensorboard]' "
                             "(or tensorboard)")
        self._images = images
        self._options = {"methods": methods, **options}
        self._every = every_n_epochs
        self._log_dir = None if log_dir is None else Path(log_dir)
        self._out_dir = None if out_dir is None else Path(out_dir)
        self._explainer: Explainer | None = None
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self._every:
            return
        if self._explainer is None:
            self._explainer = Explainer(self.model, **self._options)
        explanation = self._explainer.explain(self._images)
        tags = _tags(explanation.names)
        for index, tag in enumerate(tags):
            for method in explanation.maps:
                overlay = explanation.overlay(index, method)
                if self._log_dir is not None:
                    with self._summary_writer().as_default():
                        tf.summary.image(f"xai/{method}/{tag}", np.asarray(overlay)[None], step=epoch)
                if self._out_dir is not None:
                    folder = self._out_dir / f"epoch_{epoch:03d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    overlay.save(folder / f"{tag}.{method}.png")
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _summary_writer(self) -> Any:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self._log_dir))
        return self._writer


def _tags(names: Sequence[str]) -> list[str]:
    """A short, distinct name per image for tags and files: its file name, or 'image_3'."""
    tags = []
    for position, name in enumerate(names):
        base = re.sub(r"[^\w.-]+", "_", Path(name).name) if not name.startswith("<") else f"image_{position}"
        tags.append(base if base not in tags else f"{base}_{position}")
    return tags
