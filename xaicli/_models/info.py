"""What the tool knows about a model, as plain data: its layers, outputs and the explained one.
Made by ``inspect``; read by every decision (layer, preprocessing, output) without TensorFlow."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .kinds import detected_kind


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the model tree. ``path`` joins nested model names with '/'."""

    path: str
    type_name: str
    output_shape: tuple[int | None, ...] | None  # None when the layer has several outputs
    is_convolution: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_feature_map(self) -> bool:
        """A 4-D (N, H, W, C) output, or a volume model's 5-D (N, D, H, W, C) one, with more than
        one spatial position."""
        shape = self.output_shape
        if shape is None or len(shape) not in (4, 5):
            return False
        return math.prod(d if d is not None else 2 for d in shape[1:-1]) > 1

    @property
    def spatial_shape(self) -> tuple[int | None, ...]:
        """A feature map's (H, W) or (D, H, W)."""
        return tuple(self.output_shape[1:-1]) if self.output_shape else ()


@dataclass(frozen=True)
class OutputInfo:
    """One model output: the innermost layer that produces it, its shape and activation."""

    index: int
    head_path: str
    shape: tuple[int | None, ...]  # batch dimension first, as Keras reports it (None)
    final_activation: str

    @property
    def kind(self) -> str | None:
        """What the output is by its shape and activation (``kinds.KINDS``); None when it is
        none of them (a token sequence, a feature vector of unknown width)."""
        detected = detected_kind(self.shape, self.final_activation)
        return detected[0] if detected else None

    @property
    def explainable(self) -> bool:
        """An (N, units) or per-pixel (N, h, w, C) output has a score to explain; a token
        sequence does not."""
        return self.kind is not None

    @property
    def units(self) -> int:
        """Width of the output: its classes (or logits) when it is explainable."""
        return int(self.shape[-1] or 0)

    def describe(self) -> str:
        """'1: head (N, 3), softmax' as the error messages and ``xai info`` list outputs."""
        dims = ", ".join("N" if i == 0 else str(d) for i, d in enumerate(self.shape))
        return f"{self.index}: {self.head_path} ({dims}), {self.final_activation}"


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the tool needs to know about a loaded model."""

    input_size: tuple[int, ...]  # (height, width) fed to the model; (depth, height, width) for a volume model
    model_name: str  # the outer model's own name (keras.applications models keep theirs, e.g. resnet50)
    channels: int
    layers: tuple[LayerInfo, ...]  # in execution order, inner layers before their model
    head_path: str  # the layer that produces the explained output
    final_activation: str  # 'softmax', 'sigmoid' or 'linear'
    units: int  # width of the output (logits)
    preprocessing: tuple[str, ...]  # paths of Rescaling/Normalization layers inside
    outputs: tuple[OutputInfo, ...] = ()  # every output; head_path/units/activation are the chosen one's
    output_reason: str = ""  # why that output is the one explained
    attention_layers: tuple[str, ...] = ()  # paths of attention layers at any depth, in call order
    token_grid: tuple[int, int] | None = None  # (rows, columns) of patch tokens, for transformers
    extra_tokens: int = 0  # tokens before the patch tokens (1 = a class token)
    attention_note: str = ""  # why attention cannot be placed on the image, when it cannot
    image_converter: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # keras-hub (scale, offset)
    feeds_output: frozenset[str] = frozenset()  # paths of the layers the explained output depends on
    on_every_path: frozenset[str] = frozenset()  # paths every path from the input to that output passes
    kind: str = "classifier"  # what the explained output is (kinds.KINDS)
    kind_reason: str = ""  # why: its shape and activation, or --kind

    @property
    def takes_volumes(self) -> bool:
        """A 3-D model: its input is a batch of volumes (N, D, H, W, C)."""
        return len(self.input_size) == 3

    @property
    def num_classes(self) -> int:
        """Classes (labels, values) a user can ask for; a binary output, and a one-channel
        sigmoid segmentation, has two (0 = negative or background, 1 = positive)."""
        return 2 if self.units == 1 and (self.kind == "binary" or self.per_pixel_sigmoid) else self.units

    @property
    def per_pixel_sigmoid(self) -> bool:
        """A segmentation whose channels are sigmoids: independent per pixel, not competing."""
        return self.kind == "segmentation" and self.final_activation == "sigmoid"

    @property
    def output_grid(self) -> tuple[int, int]:
        """(height, width) of a segmentation's output (its stride may be > 1); (1, 1) for other kinds."""
        if self.kind != "segmentation":
            return (1, 1)
        shape = next(o.shape for o in self.outputs if o.head_path == self.head_path)
        return int(shape[1]), int(shape[2])
