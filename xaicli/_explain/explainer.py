"""Explain a batch: one compiled step for predictions and every CAM method, a compiled
input-gradient step that the gradient-family methods call as often as they need, and a compiled
masked-scoring step for Score-CAM.

Batches smaller than ``batch_size`` are padded so each step is traced once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from .._errors import LayerError
from .._models.info import ModelInfo
from .._models.probe import Probe, class_scores, explained_measure
from .._outputs.render import normalize_maps
from .contexts import AttentionContext, GradientContext, MethodOptions, ScoreContext
from .targets import BEST, EachClass, Target

# Told of each stage of explaining a batch, for progress: (the methods it computes, () for the
# prediction alone; whether a compiled step runs for the first time, i.e. is being traced and
# compiled; whether the stage has finished). Called once as a stage starts and once as it ends.
StageCallback = Callable[[tuple[str, ...], bool, bool], None]


def _untold(_methods: tuple[str, ...], _compiling: bool, _finished: bool) -> None:
    """The StageCallback that tells no one."""


@dataclass(frozen=True)
class BatchExplanation:
    """What one batch gives.

    probabilities, scores: (n, classes) float32 (a regression's ``probabilities`` are its values,
    see ``class_scores``; a segmentation's are the mean probability and the summed score over
    each image's region); classes: (n,) int explained class per image; maps: method name ->
    (n, h, w) float32 in [0, 1] (h, w: the layer's grid for CAM methods, the model input's size
    for gradient methods); empty for a prediction alone.
    """

    probabilities: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    maps: dict[str, np.ndarray]
    pixels: np.ndarray | None = None  # a segmentation's prediction: (n, h, w, classes) per-pixel probabilities


@dataclass(frozen=True)
class Explained:
    """One explained target of one image: what it explains, and the explanation that holds its
    maps at ``index`` (for a ``Nothing`` target, the image's prediction alone)."""

    target: Target
    explanation: BatchExplanation
    index: int


class Explainer:
    """Runs the requested methods on batches of at most ``batch_size`` images."""

    def __init__(self, probe: Probe, info: ModelInfo, layer_path: str | None,
                 methods: dict[str, dict[str, Callable]], batch_size: int, options: MethodOptions,
                 attention_gradients: bool = False, sign: float = 1.0):
        """``methods``: family ('cam', 'score', 'gradient', 'attention') -> name -> implementation;
        ``attention_gradients``: an attention method needs d score / d attention weights;
        ``sign``: -1 explains what decreases a regression's value."""
        self._probe = probe
        self._info = info
        self._sign = sign
        self._layer_path = layer_path
        self._cam_methods = methods.get("cam", {})
        self._gradient_methods = methods.get("gradient", {})
        self._score_methods = methods.get("score", {})
        self._attention_methods = methods.get("attention", {})
        self._attention_gradients = attention_gradients
        self._options = options
        self._staged: set[tuple[str, ...]] = set()  # the stages that have run: compiled by now
        self.batch_size = batch_size
        images = tf.TensorSpec((batch_size, *info.input_size, info.channels), tf.float32)
        classes = tf.TensorSpec((batch_size,), tf.int32)
        # A segmentation explains a class's scores summed over a region of its output grid; other
        # kinds take a (1, 1) region that is never read, so every model has the same steps.
        regions = tf.TensorSpec((batch_size, *info.output_grid), tf.float32)
        self._step = tf.function(self._predict_and_cams, input_signature=[images, classes, regions])
        self._input_gradient = tf.function(self._score_gradient, input_signature=[images, classes, regions])
        self._predict = tf.function(self._scores_and_probabilities, input_signature=[images, regions])
        self._masked = None
        if self._score_methods:
            layer_shape = probe.activation_shape
            grid = info.token_grid if len(layer_shape) == 3 else layer_shape[1:-1]
            self._masked = tf.function(self._score_masked, input_signature=[
                tf.TensorSpec((*info.input_size, info.channels), tf.float32),
                tf.TensorSpec((batch_size, *grid), tf.float32),
                tf.TensorSpec((), tf.int32),
                tf.TensorSpec(info.output_grid, tf.float32),
            ])

    @property
    def probe(self) -> Probe:
        """The model the maps are computed on (its layers are the loaded model's own)."""
        return self._probe

    def _predict_and_cams(self, images: tf.Tensor, requested: tf.Tensor, regions: tf.Tensor):
        with tf.GradientTape() as tape:
            if self._gradient_methods:
                tape.watch(images)
            outputs = self._probe(images, training=False)
            scores, probabilities = self._scores(outputs["logits"], regions)
            classes = _chosen_classes(scores, requested)
            explained = tf.gather(scores, classes, batch_dims=1)
        activations = self._on_grid(outputs["activations"]) if "activations" in outputs else None
        maps = {}
        # Images in a batch are independent at inference, so the gradient of the summed scores
        # is each image's own gradient. One backward pass serves the CAM methods (through the
        # layer's own tensor: cast or reshaped first, it would be a side branch with no
        # gradient) and the gradient methods (through the input).
        sources = {"layer": outputs["activations"]} if self._cam_methods else {}
        if self._gradient_methods:
            sources["input"] = images
        if self._attention_gradients:
            sources["attention"] = outputs["attention"]
        gradients = tape.gradient(explained, sources) if sources else {}
        if self._cam_methods:
            if gradients["layer"] is None:
                raise LayerError(f"layer {self._layer_path!r} does not feed the model's output; "
                                 "pick another with --layer")
            layer_gradients = self._on_grid(gradients["layer"])
            maps = {name: tf.nn.relu(combine(activations, layer_gradients))
                    for name, combine in self._cam_methods.items()}
        at_images = gradients.get("input", tf.zeros((0,)))
        # Only Score-CAM reads the activations on the host; other runs leave them on the device.
        kept = activations if self._score_methods else tf.zeros((0,))
        attention = [tf.cast(a, tf.float32) for a in outputs.get("attention", [])]
        attention_gradients = [tf.cast(g, tf.float32) for g in gradients.get("attention", [])]
        return probabilities, scores, classes, maps, kept, attention, attention_gradients, at_images

    def _on_grid(self, tensor: tf.Tensor) -> tf.Tensor:
        """float32 (N, h, w, k); a transformer's tokens (N, T, D) lose their extra (class)
        tokens and are laid out on the patch grid, as pytorch-grad-cam users do by hand."""
        tensor = tf.cast(tensor, tf.float32)
        if tensor.shape.rank != 3:
            return tensor
        rows, columns = self._info.token_grid
        return tf.reshape(tensor[:, self._info.extra_tokens:, :], (-1, rows, columns, tensor.shape[-1]))

    def _score_masked(self, image: tf.Tensor, channel_maps: tf.Tensor, target: tf.Tensor,
                      region: tf.Tensor) -> tf.Tensor:
        """Upsample each map to the input size (bilinear, half-pixel centres; trilinear for a
        volume), min-max it to [0, 1] (a flat map becomes 0), mask the image with it and return
        ``target``'s probability: the explained output's activation, as Score-CAM's Algorithm 1
        scores (a segmentation's over ``region``)."""
        masks = _resized(channel_maps[..., None], self._info.input_size)
        positions = tuple(range(1, masks.shape.rank))
        low = tf.reduce_min(masks, axis=positions, keepdims=True)
        span = tf.reduce_max(masks, axis=positions, keepdims=True) - low
        masks = tf.where(span > 0, (masks - low) / tf.where(span > 0, span, 1.0), 0.0)
        regions = tf.broadcast_to(region, (tf.shape(masks)[0], *self._info.output_grid))
        scores, probabilities = self._scores(self._probe.logits(image[None] * masks), regions)
        return explained_measure(scores, probabilities, self._info)[:, target]

    def _scores(self, logits: tf.Tensor, regions: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """(scores, probabilities), (B, classes): a segmentation's per-pixel ones summed (scores)
        and averaged (probabilities) over each image's region of ``regions`` (B, h, w) in
        [0, 1]; the whole output grid when ``regions`` is None."""
        scores, probabilities = class_scores(tf.cast(logits, tf.float32), self._info, self._sign)
        if self._info.kind != "segmentation":
            return scores, probabilities
        if regions is None:
            regions = tf.ones(tf.shape(scores)[:3], tf.float32)
        area = tf.maximum(tf.reduce_sum(regions, axis=(1, 2)), 1.0)[:, None]
        return (tf.einsum("bhwk,bhw->bk", scores, regions),
                tf.einsum("bhwk,bhw->bk", probabilities, regions) / area)

    def _scores_and_probabilities(self, images: tf.Tensor, regions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Scores and probabilities (a segmentation's over ``regions``), and a segmentation's
        per-pixel probabilities (B, h, w, classes) (nothing for other kinds)."""
        logits = tf.cast(self._probe.logits(images), tf.float32)
        scores, probabilities = self._scores(logits, regions)
        pixels = (class_scores(logits, self._info)[1] if self._info.kind == "segmentation" else tf.zeros((0,)))
        return scores, probabilities, pixels

    def probabilities(self, images: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
        """(n, classes) float32 probabilities of up to ``batch_size`` (n, H, W, C) model inputs,
        as the explained images' are computed (the final activation of the explained output; a
        segmentation's mean over each image's region of ``regions``, (n, h, w))."""
        return self.predict(images, regions).probabilities

    def predict(self, images: np.ndarray, regions: np.ndarray | None = None) -> BatchExplanation:
        """The prediction alone of up to ``batch_size`` (n, H, W, C) model inputs: scores,
        probabilities (a segmentation's over ``regions``, by default the whole image) and each
        image's best class, no maps."""
        count = len(images)
        scores, probabilities, pixels = self._predict(tf.constant(_padded(images.astype(np.float32), self.batch_size, 0.0)),
                                                      tf.constant(self._regions(count, regions)))
        scores = scores.numpy()[:count]
        return BatchExplanation(probabilities.numpy()[:count], scores, np.argmax(scores, axis=-1), {},
                                pixels.numpy()[:count] if self._info.kind == "segmentation" else None)

    def _score_gradient(self, images: tf.Tensor, classes: tf.Tensor, regions: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(images)
            scores, _ = self._scores(self._probe.logits(images), regions)
            explained = tf.gather(scores, classes, batch_dims=1)
        return tape.gradient(explained, images)

    def explain(self, images: np.ndarray, target: Target = BEST, on_stage: StageCallback = _untold,
                regions: np.ndarray | None = None) -> BatchExplanation:
        """Explain up to ``batch_size`` images.

        Args:
            images: (n, H, W, C) float32 preprocessed model inputs, 1 <= n <= batch_size.
            target: what the maps explain: each image's best class, a given class, the r-th best,
                or a class per image.
            on_stage: told as each stage (the prediction with every CAM method, then each other
                method) starts and ends.
            regions: a segmentation's (n, h, w) float32 region per image on its output grid, in
                [0, 1]; the class's scores are summed over it. None: the whole grid.
        """
        count = len(images)
        batch = _padded(images.astype(np.float32), self.batch_size, 0.0)
        wanted = np.concatenate([target.requested(count), BEST.requested(self.batch_size - count)])
        areas = self._regions(count, regions)
        with self._stage(on_stage, tuple(self._cam_methods), self._step):
            (probabilities, scores, classes, cam_maps, activations, attention, attention_gradients,
             at_images) = self._step(tf.constant(batch), tf.constant(wanted), tf.constant(areas))
            raw = {name: m.numpy() for name, m in cam_maps.items()}
        if self._gradient_methods:
            context = GradientContext(batch, classes.numpy(), self._options, self._gradient_at(classes, areas),
                                      at_images.numpy())
            for name, method in self._gradient_methods.items():
                with self._stage(on_stage, (name,), self._input_gradient):
                    raw[name] = method(context)
        if self._score_methods:
            chosen = classes.numpy()
            context = ScoreContext(batch[:count], chosen[:count], activations.numpy()[:count], self._options,
                                   lambda position, maps: self._masked_probabilities(
                                       batch[position], maps, int(chosen[position]), areas[position]))
            for name, method in self._score_methods.items():
                with self._stage(on_stage, (name,), self._masked):
                    raw[name] = method(context)
        if self._attention_methods:
            context = AttentionContext([a.numpy()[:count] for a in attention],
                                       [g.numpy()[:count] for g in attention_gradients], self._info.token_grid,
                                       self._info.extra_tokens, self._options)
            for name, method in self._attention_methods.items():
                with self._stage(on_stage, (name,), None):
                    raw[name] = method(context)
        return BatchExplanation(
            probabilities=probabilities.numpy()[:count],
            scores=scores.numpy()[:count],
            classes=classes.numpy()[:count],
            maps={name: normalize_maps(raw[name][:count]) for name in raw},
        )

    def _regions(self, count: int, regions: np.ndarray | None) -> np.ndarray:
        """(batch_size, h, w) float32: ``regions`` of ``count`` images, the whole grid elsewhere."""
        areas = np.ones((self.batch_size, *self._info.output_grid), np.float32)
        if regions is not None:
            areas[:count] = regions
        return areas

    def explain_each(self, images: np.ndarray, targets: tuple[Target, ...], on_stage: StageCallback = _untold,
                     given: list[np.ndarray] | None = None) -> list[list[Explained]]:
        """Explain up to ``batch_size`` images for each of ``targets``: per image, its explained
        targets in target order. A target that applies to the whole batch is one pass; one whose
        classes depend on the prediction (the labels present) first predicts the batch, then
        explains each (image, class) pair, ``batch_size`` pairs a pass.

        Args:
            images: (n, H, W, C) float32 preprocessed model inputs, 1 <= n <= batch_size.
            given: a segmentation's region of each image from outside the model, on the output
                grid, for targets that ``needs_given_regions`` (see ``ClassRegions.per_image``).
        """
        explained: list[list[Explained]] = [[] for _ in images]
        for target in targets:
            if not target.depends_on_prediction:
                explanation = self.explain(images, target, on_stage)
                for index, each in enumerate(explained):
                    each.append(Explained(target, explanation, index))
                continue
            prediction = self.predict(images)
            pairs = []
            for index, chosen in enumerate(target.per_image(prediction, given)):
                for each in chosen:
                    if each.explains:
                        pairs.append((index, each))
                    else:
                        explained[index].append(Explained(each, prediction, index))
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                classes = EachClass(tuple(int(each.requested(1)[0]) for _, each in chunk))
                regions = (np.stack([each.region for _, each in chunk]) if self._info.kind == "segmentation"
                           else None)
                explanation = self.explain(images[[index for index, _ in chunk]], classes, on_stage, regions)
                for position, (index, each) in enumerate(chunk):
                    explained[index].append(Explained(each, explanation, position))
        return explained

    @contextlib.contextmanager
    def _stage(self, on_stage: StageCallback, methods: tuple[str, ...], step: object) -> Iterator[None]:
        """Tell ``on_stage`` that ``methods`` start, and whether they may be compiling: their first
        run, while the compiled ``step`` they call (a ``tf.function``, or None) is not traced yet;
        then that they finished."""
        tracing_count = getattr(step, "experimental_get_tracing_count", None)
        compiling = methods not in self._staged and tracing_count is not None and tracing_count() == 0
        self._staged.add(methods)
        on_stage(methods, compiling, False)
        yield
        on_stage(methods, False, True)

    def _masked_probabilities(self, image: np.ndarray, channel_maps: np.ndarray, target: int,
                              region: np.ndarray) -> np.ndarray:
        """``target``'s probabilities for ``image`` (over ``region``) under each of ``channel_maps``
        (m, h, w), in padded chunks."""
        scores = []
        for start in range(0, len(channel_maps), self.batch_size):
            chunk = channel_maps[start:start + self.batch_size]
            padded = _padded(chunk.astype(np.float32), self.batch_size, 0.0)
            result = self._masked(tf.constant(image), tf.constant(padded), tf.constant(target, tf.int32),
                                  tf.constant(region))
            scores.append(result.numpy()[:len(chunk)])
        return np.concatenate(scores)

    def _gradient_at(self, classes: tf.Tensor, regions: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        areas = tf.constant(regions)
        return lambda inputs: self._input_gradient(tf.constant(inputs, tf.float32), classes, areas).numpy()


def _resized(maps: tf.Tensor, size: tuple[int, ...]) -> tf.Tensor:
    """(m, *size, 1): (m, h, w, 1) maps resized bilinearly, or (m, d, h, w, 1) volumes
    trilinearly (bilinear over each depth slice, then linear across the slices: the same
    interpolation, separable), with half-pixel centres."""
    if len(size) == 2:
        return tf.image.resize(maps, size, method="bilinear")
    depth, height, width = size
    count, slices = tf.shape(maps)[0], maps.shape[1]
    planes = tf.image.resize(tf.reshape(maps, (-1, *maps.shape[2:])), (height, width), method="bilinear")
    across = tf.transpose(tf.reshape(planes, (count, slices, height * width, 1)), (0, 2, 1, 3))
    stretched = tf.image.resize(across, (height * width, depth), method="bilinear")  # rows are kept as they are
    return tf.reshape(tf.transpose(stretched, (0, 2, 1, 3)), (count, depth, height, width, 1))


def _chosen_classes(scores: tf.Tensor, requested: tf.Tensor) -> tf.Tensor:
    """(B,) int32 class per image: ``requested`` where it is an index, the image's r-th best
    class where it is -r (see ``targets``). Ties rank the lower index first, as argmax does."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.clip_by_value(-requested - 1, 0, tf.shape(scores)[-1] - 1)
    return tf.where(requested < 0, tf.gather(order, rank, batch_dims=1), requested)


def _padded(rows: np.ndarray, size: int, fill: float) -> np.ndarray:
    """``rows`` extended to ``size`` along the first axis with ``fill``, so every compiled step
    sees one fixed batch shape and is traced once."""
    padding = np.full((size - len(rows), *rows.shape[1:]), fill, rows.dtype)
    return np.concatenate([rows, padding])
