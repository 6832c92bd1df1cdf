"""Load Keras models, find their layers (nested sub-models included), and build the probe.

The probe is a Functional model that, from one call, returns the target layer's activations
and the pre-activation logits of the model's output. It is built by re-threading the user's
layers through a new ``keras.Input``: calling ``keras.Model(m.inputs, inner_layer.output)``
fails or gives ``None`` gradients for reloaded Sequential models and nested sub-models, while
re-threading works for both (see DESIGN.md). Each nested Functional model is re-threaded on
a fresh input of its own and wrapped as a sub-model whose extra outputs are the tapped
tensors, so those taps stay connected to the outer input.

Weights are shared with the loaded model, never copied, except for the small linear twin of
an output layer that has its softmax/sigmoid built in.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf
from keras.src.models.functional import Functional

from .errors import LayerError, ModelError, UsageError, first_line
from .explainers import REGISTRY

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)
PREPROCESSING_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization)
SQUASHING = ("softmax", "sigmoid")
AUTO_OUTPUT = "auto"  # --output auto: the only, or first, classifier output


class _Keras2DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D that accepts the ``groups`` argument Keras 2 wrote into its configs
    (always 1 there) and Keras 3 rejects; without it, legacy MobileNet/EfficientNet .h5 files
    do not load at all."""

    def __init__(self, *args: Any, groups: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)


# Built-in classes replaced while loading, so files written by Keras 2 load in Keras 3.
KERAS2_COMPATIBLE: dict[str, Any] = {"DepthwiseConv2D": _Keras2DepthwiseConv2D}


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
        """A 4-D (N, H, W, C) output with more than one spatial position."""
        shape = self.output_shape
        if shape is None or len(shape) != 4:
            return False
        height, width = (d if d is not None else 2 for d in shape[1:3])
        return height * width > 1


@dataclass(frozen=True)
class OutputInfo:
    """One model output: the innermost layer that produces it, its shape and activation."""

    index: int
    head_path: str
    shape: tuple[int | None, ...]  # batch dimension first, as Keras reports it (None)
    final_activation: str

    @property
    def explainable(self) -> bool:
        """Only a classifier's (N, classes) output has a class score to explain; feature maps and
        per-pixel (segmentation) outputs do not."""
        return len(self.shape) == 2 and self.shape[1] is not None

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

    input_size: tuple[int, int]  # (height, width) fed to the model
    channels: int
    layers: tuple[LayerInfo, ...]  # in execution order, inner layers before their model
    head_path: str  # the layer that produces the explained output
    final_activation: str  # 'softmax', 'sigmoid' or 'linear'
    units: int  # width of the output (logits)
    preprocessing: tuple[str, ...]  # paths of Rescaling/Normalization layers inside
    outputs: tuple[OutputInfo, ...] = ()  # every output; head_path/units/activation are the chosen one's
    output_reason: str = ""  # why that output is the one explained
    attention_layers: tuple[str, ...] = ()  # paths of MultiHeadAttention layers, in execution order
    token_grid: tuple[int, int] | None = None  # (rows, columns) of patch tokens, for transformers
    extra_tokens: int = 0  # tokens before the patch tokens (1 = a class token)

    @property
    def num_classes(self) -> int:
        """Classes a user can ask for; a one-unit sigmoid has two (0 = negative, 1 = positive)."""
        return 2 if self.is_binary_sigmoid else self.units

    @property
    def is_binary_sigmoid(self) -> bool:
        return self.final_activation == "sigmoid" and self.units == 1


def load_model(path: Path, unsafe: bool = False, custom_objects: dict[str, Any] | None = None) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` file (Keras 2 or 3) without compiling.

    Args:
        unsafe: allow ``Lambda`` layers that hold Python code (Keras safe mode off); only for
            files you trust, because loading them can run arbitrary code.
        custom_objects: name -> class or function for custom layers (see ``load_custom_objects``).
    """
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        return _load_savedmodel_folder(path, unsafe, custom_objects)
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: unsupported model format; give a .keras or .h5 file")
    _check_container(path)
    objects = {**KERAS2_COMPATIBLE, **(custom_objects or {})}
    try:
        readable_copy = _newer_keras_options_dropped if path.suffix.lower() == ".keras" else _keras2_nodes_renumbered
        with readable_copy(path) as readable:
            model = keras.models.load_model(readable, compile=False, safe_mode=not unsafe, custom_objects=objects)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
        raise ModelError(_load_failure(path, exc)) from exc
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ModelError(
            f"{path} holds a subclassed model ({type(model).__name__}); "
            "save it as a Functional or Sequential model to explain it"
        )
    return model


def _check_container(path: Path) -> None:
    """A .keras file is a zip archive and an .h5 file HDF5; anything else would reach the user
    as Keras's own message, which says "File not found" for an empty .keras file."""
    import h5py

    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"cannot load model {path}: not a .keras file (those are zip archives); "
                         "it is empty, truncated or of another format")
    if path.suffix.lower() != ".keras" and not h5py.is_hdf5(path):
        raise ModelError(f"cannot load model {path}: not an HDF5 file; it is empty, truncated or of another format")


@contextlib.contextmanager
def _keras2_nodes_renumbered(path: Path) -> Iterator[Path]:
    """The file to load: ``path`` itself, or a temporary copy whose config Keras 3 can read.

    Keras 2 gave every Functional or Sequential model a node of its own creation, so a model
    nested in another is called at node 1; Keras 3 rebuilds nested models without that node and
    fails to connect the graph ("disconnected nodes"). The copy refers to those calls one node
    lower, at every level of nesting.
    """
    config = _keras2_config(path)
    if config is None or not _renumber_nested_calls(config["config"]):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xai-keras2-") as scratch:
        copy = Path(scratch) / path.name
        shutil.copyfile(path, copy)
        import h5py

        with h5py.File(copy, "r+") as handle:
            handle.attrs["model_config"] = json.dumps(config)
        yield copy


@contextlib.contextmanager
def _newer_keras_options_dropped(path: Path) -> Iterator[Path]:
    """The .keras file to load: ``path`` itself, or, when a newer Keras wrote it, a temporary
    copy without the options that this Keras does not know and that hold their default (None).

    Keras adds constructor options over time and writes every one into the file (Keras 3.13 gave
    initializers ``input_axes``); the Keras that Python 3.10 gets (3.12) then refuses the whole
    file. An option left at None asks for the old behaviour, so dropping it changes nothing.
    """
    config = None
    if _written_by_newer_keras(path):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    if config is None or not _drop_unknown_none_options(config):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xai-newer-keras-") as scratch:
        copy = Path(scratch) / path.name
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
            for entry in source.infolist():
                data = json.dumps(config).encode() if entry.filename == "config.json" else source.read(entry)
                target.writestr(entry, data)
        yield copy


def _written_by_newer_keras(path: Path) -> str | None:
    """The version of Keras that wrote a .keras file when it is newer than this one, else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            written_by = str(json.loads(archive.read("metadata.json")).get("keras_version", "0"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return written_by if _version(written_by) > _version(keras.__version__) else None


def _version(text: str) -> tuple[int, ...]:
    """'3.15.1' -> (3, 15, 1); suffixes such as '.dev0' count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])


def _drop_unknown_none_options(node: Any) -> bool:
    """Remove, in place and at every depth, the None-valued options of serialized Keras objects
    that the installed class does not accept. Returns whether anything was removed."""
    changed = False
    if isinstance(node, list):
        for item in node:
            changed |= _drop_unknown_none_options(item)
    elif isinstance(node, dict):
        accepted = _accepted_options(node)
        options = node.get("config")
        if accepted is not None and isinstance(options, dict):
            for key in [k for k, v in options.items() if v is None and k not in accepted]:
                del options[key]
                changed = True
        for value in node.values():
            changed |= _drop_unknown_none_options(value)
    return changed


def _accepted_options(node: dict) -> set[str] | None:
    """The constructor options of the installed class a serialized Keras object names (every
    ``__init__`` up its class hierarchy), or None when it is not a Keras class found here."""
    module, name = node.get("module"), node.get("class_name")
    if not (isinstance(module, str) and module.startswith("keras") and isinstance(name, str)):
        return None
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if not isinstance(cls, type):
        return None
    return {parameter for klass in cls.__mro__ if "__init__" in vars(klass)
            for parameter in inspect.signature(klass.__init__).parameters}


def _h5_keras_attributes(path: Path) -> tuple[str, str | None] | None:
    """(Keras version that wrote it, model config JSON) of an HDF5 model file; None when the
    file is not HDF5. h5py returns these attributes as bytes or str depending on the writer."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version, config = handle.attrs.get("keras_version", "unknown"), handle.attrs.get("model_config")
    except OSError:
        return None
    text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    return str(text(version)), text(config)


def _keras2_config(path: Path) -> dict | None:
    """The model config of an .h5 file written by Keras 2, or None for anything else."""
    attributes = _h5_keras_attributes(path) if path.suffix.lower() in (".h5", ".hdf5") else None
    if attributes is None or not attributes[0].startswith("2.") or attributes[1] is None:
        return None  # not HDF5 (Keras reports it), or not Keras 2
    return json.loads(attributes[1])


NESTED_MODEL_CLASSES = ("Functional", "Model", "Sequential")


def _renumber_nested_calls(model_config: dict) -> bool:
    """Lower by one every node index that refers to a call of a nested model, recursively.
    Returns whether anything changed."""
    layers = model_config.get("layers", [])
    nested = {layer["config"]["name"] for layer in layers if layer.get("class_name") in NESTED_MODEL_CLASSES}
    changed = False
    for layer in layers:
        if layer.get("class_name") in NESTED_MODEL_CLASSES:
            changed |= _renumber_nested_calls(layer["config"])
        for node in layer.get("inbound_nodes", []):
            for reference in node:
                if reference[0] in nested and reference[1] > 0:
                    reference[1] -= 1
                    changed = True
    return changed


def _load_savedmodel_folder(folder: Path, unsafe: bool, custom_objects: dict[str, Any] | None) -> keras.Model:
    """A SavedModel folder. One written by Keras 2 (``model.save(dir)``, TF <= 2.15) keeps its
    layers in ``keras_metadata.pb``; Keras 3 cannot read it, so Keras 2 (``tf_keras``) loads it
    and writes it to a temporary Keras 2 ``.h5``, which loads here with every layer reachable.
    Any other SavedModel is wrapped around its serving function."""
    if not (folder / "saved_model.pb").exists():
        raise ModelError(f"{folder} is a folder but not a SavedModel (no saved_model.pb); give a .keras or .h5 file")
    if not (folder / "keras_metadata.pb").exists():
        return _load_exported_savedmodel(folder)
    try:
        import tf_keras
    except ImportError:
        raise ModelError(
            f"{folder} is a SavedModel written by Keras 2; loading it needs Keras 2: pip install 'xaicli[legacy]'"
        ) from None
    try:
        legacy = tf_keras.models.load_model(folder, compile=False, custom_objects=custom_objects)
        with tempfile.TemporaryDirectory(prefix="xai-savedmodel-") as scratch:
            converted = Path(scratch) / f"{folder.name}.h5"
            legacy.save(converted, save_format="h5")
            return load_model(converted, unsafe=unsafe, custom_objects=custom_objects)
    except ModelError:
        raise
    except Exception as exc:  # tf_keras raises many types for a folder it cannot read
        raise ModelError(f"cannot load SavedModel {folder} with Keras 2: {first_line(exc)}") from exc


SERVING_ENDPOINTS = ("serve", "serving_default")


class _ServedModel(keras.layers.TFSMLayer):
    """A SavedModel's serving function as one layer (Keras 3 ``model.export()`` or plain TF).

    Its layers cannot be reached, so only input-gradient methods apply. The output's squashing
    is found from served values and exposed as ``activation``, so the rest of the tool treats
    this layer like a Dense head; ``logits_from`` recovers scores from served probabilities.
    """

    def __init__(self, folder: Path, endpoint: str, activation: str, **kwargs: Any):
        super().__init__(str(folder), call_endpoint=endpoint, **kwargs)
        self.activation = getattr(keras.activations, activation)

    def logits_from(self, served: Any) -> Any:
        """Softmax: centred log-probabilities ``log p - mean log p``, equal to the logits minus
        their mean. Sigmoid: ``log p - log(1 - p)``, the logit itself. Linear: unchanged."""
        name = final_activation(self)
        if name == "linear":
            return served
        tiny = 1e-30  # keeps log finite where float32 probabilities underflow to 0
        if name == "softmax":
            logs = keras.ops.log(keras.ops.maximum(served, tiny))
            return logs - keras.ops.mean(logs, axis=-1, keepdims=True)
        return keras.ops.log(keras.ops.maximum(served, tiny)) - keras.ops.log(keras.ops.maximum(1.0 - served, tiny))


def _load_exported_savedmodel(folder: Path) -> keras.Model:
    """Wrap a SavedModel without Keras metadata as a one-layer model over its serving function."""
    try:
        reloaded = tf.saved_model.load(str(folder))
    except Exception as exc:  # TensorFlow raises many types for an unreadable folder
        raise ModelError(f"cannot load SavedModel {folder}: {first_line(exc)}") from exc
    endpoint = next((e for e in SERVING_ENDPOINTS if hasattr(reloaded, e) or e in reloaded.signatures), None)
    if endpoint is None:
        raise ModelError(f"SavedModel {folder} has no serving endpoint ({' or '.join(SERVING_ENDPOINTS)})")
    function = getattr(reloaded, endpoint, None) or reloaded.signatures[endpoint]
    concrete = function if hasattr(function, "structured_input_signature") else function.concrete_functions[0]
    args, kwargs = concrete.structured_input_signature
    specs = [*tf.nest.flatten(args), *tf.nest.flatten(kwargs)]
    if len(specs) != 1 or specs[0].shape.rank != 4:
        raise ModelError(f"SavedModel {folder} does not take one image batch (N, H, W, C); its inputs: {specs}")
    inputs = keras.Input(batch_shape=tuple(specs[0].shape), dtype="float32")
    activation = _served_activation(function, specs[0])
    served = _ServedModel(folder, endpoint, activation, name="savedmodel")(inputs)
    if isinstance(served, dict):
        if len(served) != 1:
            raise ModelError(f"SavedModel {folder} serves {len(served)} outputs; only one is supported")
        served = next(iter(served.values()))
    return keras.Model(inputs, served, name=folder.name)


def _served_activation(function: Any, spec: tf.TensorSpec) -> str:
    """'softmax' when served rows are probabilities that sum to 1, 'sigmoid' when every value is
    in [0, 1] otherwise, else 'linear'; judged on random and constant images."""
    height, width, channels = (d or 32 for d in spec.shape[1:])
    probes = [np.random.default_rng(0).uniform(0, 255, (4, height, width, channels)), np.zeros((1, height, width, channels))]
    outputs = []
    for probe in probes:
        served = function(tf.constant(probe, tf.float32))
        outputs.append(np.asarray(next(iter(served.values())) if isinstance(served, dict) else served))
    values = np.concatenate([o.reshape(len(o), -1) for o in outputs])
    if values.min() < 0 or values.max() > 1:
        return "linear"
    if values.shape[1] > 1 and np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        return "softmax"
    return "sigmoid"


def _load_failure(path: Path, exc: BaseException) -> str:
    """One line that says why loading failed and what to do."""
    chain = " ".join(str(e) for e in _exception_chain(exc))
    if "Lambda" in chain and "safe_mode" in chain:
        return (f"{path} has a Lambda layer holding Python code, which safe loading refuses because "
                "it can run arbitrary code; if you trust this file, pass --unsafe")
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", chain) or re.search(r"Unknown layer: '([^']+)'", chain)
    if missing:
        return (f"{path} uses the custom class or function '{missing[1]}'; pass --custom-objects "
                "FILE.py (or a module name) that defines it")
    newer = _written_by_newer_keras(path) if path.suffix.lower() == ".keras" else None
    if newer:
        return (f"cannot load model {path}: it was written by Keras {newer}, newer than this Keras "
                f"{keras.__version__}; upgrade Keras (pip install -U keras) ({first_line(exc)})")
    return f"cannot load model {path}: {first_line(exc)}"


def _exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def load_custom_objects(source: str) -> dict[str, Any]:
    """Import a Python file or module that defines custom layers; returns its public classes and
    functions by name. Classes decorated with ``@keras.saving.register_keras_serializable()``
    register themselves on import; undecorated ones are matched by class name."""
    try:
        if source.endswith(".py") or Path(source).is_file():
            spec = importlib.util.spec_from_file_location(f"xai_custom_{Path(source).stem}", source)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python file: {source}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
    except Exception as exc:  # the user's own code: any error it raises is theirs to see
        raise UsageError(f"--custom-objects {source}: cannot import it: {first_line(exc)}") from exc
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module.__name__}


def open_model(path: Path, *, input_size: tuple[int, int] | None = None, output: str = AUTO_OUTPUT,
               unsafe: bool = False, custom_objects: str | None = None) -> tuple[keras.Model, ModelInfo]:
    """Load and inspect in one step, as every command does."""
    objects = load_custom_objects(custom_objects) if custom_objects else None
    model = load_model(path, unsafe=unsafe, custom_objects=objects)
    return model, inspect_model(model, input_size, output)


def model_format(path: Path) -> str:
    """A short description of the file format, with the Keras version that wrote an .h5 file."""
    if path.is_dir() and (path / "keras_metadata.pb").exists():
        return "SavedModel folder written by Keras 2 (converted through tf_keras)"
    if path.is_dir():
        return "SavedModel folder without Keras layers (serving function only: input-gradient methods)"
    if path.suffix.lower() == ".keras":
        return "Keras 3 (.keras)"
    attributes = _h5_keras_attributes(path)
    return f"HDF5 (.h5) written by Keras {attributes[0]}" if attributes else "HDF5 (.h5)"


def inspect_model(model: keras.Model, input_size: tuple[int, int] | None = None,
                  output: str = AUTO_OUTPUT) -> ModelInfo:
    """Trace the model once, symbolically, and describe its input, layers and outputs.

    Args:
        input_size: (height, width) for models whose input size is not fixed.
        output: which output to explain: 'auto' (the only, or first, (N, classes) output), an
            index, or the name or path of the layer that produces it (``xai info`` lists them).
    """
    size, channels = _input_geometry(model, input_size)
    traced = _trace(model, size, channels, _Plan(record=lambda _path: True))
    layers = tuple(
        LayerInfo(path, type(layer).__name__, _shape(traced.records.get(path)),
                  isinstance(layer, CONVOLUTIONS))
        for path, layer in traced.layers.items()
    )
    outputs = tuple(
        OutputInfo(i, head, tuple(tensor.shape), final_activation(traced.layers[head]))
        for i, (head, tensor) in enumerate(zip(traced.heads, traced.outputs))
    )
    chosen, output_reason = choose_output(outputs, output)
    attention = tuple(p for p, l in traced.layers.items() if isinstance(l, keras.layers.MultiHeadAttention))
    grid, extra = _token_layout(layers, attention, size)
    return ModelInfo(
        input_size=size,
        channels=channels,
        layers=layers,
        head_path=chosen.head_path,
        final_activation=chosen.final_activation,
        units=chosen.units,
        preprocessing=tuple(p for p, l in traced.layers.items() if isinstance(l, PREPROCESSING_LAYERS)),
        outputs=outputs,
        output_reason=output_reason,
        attention_layers=attention,
        token_grid=grid,
        extra_tokens=extra,
    )


def _token_layout(layers: tuple[LayerInfo, ...], attention: tuple[str, ...],
                  size: tuple[int, int]) -> tuple[tuple[int, int] | None, int]:
    """The patch grid and the number of leading extra tokens (class/distillation) of a
    transformer: the grid is the last 4-D feature map before the first attention layer (the
    patch embedding), else the input's aspect ratio; extra tokens are what the sequence has
    beyond the grid."""
    if not attention:
        return None, 0
    first = next(i for i, l in enumerate(layers) if l.path == attention[0])
    tokens = layers[first].output_shape[1] if layers[first].output_shape else None
    if tokens is None:
        return None, 0
    maps = [l for l in layers[:first] if l.is_feature_map]
    if maps:
        grid = (int(maps[-1].output_shape[1]), int(maps[-1].output_shape[2]))
    else:
        rows = round((tokens * size[0] / size[1]) ** 0.5)
        grid = (rows, tokens // max(rows, 1))
    extra = tokens - grid[0] * grid[1]
    return (grid, extra) if 0 <= extra <= 8 else (None, 0)


def choose_output(outputs: tuple[OutputInfo, ...], spec: str) -> tuple[OutputInfo, str]:
    """The output to explain and why: 'auto' takes the only (N, classes) output, or the first of
    several; an index or a head layer's name or path takes that output, which must be one."""
    explainable = [o for o in outputs if o.explainable]
    listing = "; ".join(o.describe() for o in outputs)
    if spec == AUTO_OUTPUT:
        if not explainable:
            raise ModelError(f"the model has no classifier output shaped (N, classes) to explain; its outputs: "
                             f"{listing}. xai explains image classifiers: save the model with its classification head")
        chosen = explainable[0]
        if len(outputs) == 1:
            return chosen, "the model's only output"
        if len(explainable) == 1:
            return chosen, f"the only (N, classes) output of {len(outputs)}"
        return chosen, f"the first of {len(explainable)} (N, classes) outputs; choose another with --output"
    chosen = _named_output(outputs, spec)
    if chosen is None:
        raise UsageError(f"--output {spec!r} does not name an output; the model has {listing}")
    if not chosen.explainable:
        choices = ", ".join(o.describe() for o in explainable) or "(none)"
        raise UsageError(f"--output {spec!r} is {chosen.describe()}, not a classifier output shaped (N, classes); "
                         f"outputs that can be explained: {choices}")
    return chosen, "as requested"


def _named_output(outputs: tuple[OutputInfo, ...], spec: str) -> OutputInfo | None:
    """The output an index ('1', '-1') or a head layer's path or name refers to, if any."""
    if re.fullmatch(r"-?\d+", spec.strip()) and -len(outputs) <= int(spec) < len(outputs):
        return outputs[int(spec)]
    return next((o for o in outputs if spec in (o.head_path, o.head_path.rsplit("/", 1)[-1])), None)


def final_activation(layer: keras.layers.Layer) -> str:
    """'softmax' or 'sigmoid' when ``layer`` squashes its output that way, else 'linear'."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return name if name in SQUASHING else "linear"


def candidate_layers(info: ModelInfo, name_regex: str) -> list[LayerInfo]:
    """Layers a CAM method can explain, in execution order: feature maps whose name matches
    ``name_regex`` (case-insensitive) or whose type is a convolution, and in a transformer the
    patch-token layers after its first attention layer."""
    pattern = compile_layer_regex(name_regex)
    return [
        layer for layer in info.layers
        if (layer.is_feature_map and (layer.is_convolution or pattern.search(layer.name))) or is_token_layer(layer, info)
    ]


def is_token_layer(layer: LayerInfo, info: ModelInfo) -> bool:
    """A (N, T, D) output of a transformer after its first attention layer whose T tokens are
    the patch grid plus the extra tokens; CAM methods see it reshaped to the grid."""
    if not info.token_grid or layer.output_shape is None or len(layer.output_shape) != 3:
        return False
    rows, columns = info.token_grid
    paths = [l.path for l in info.layers]
    return (layer.output_shape[1] == rows * columns + info.extra_tokens
            and paths.index(layer.path) > paths.index(info.attention_layers[0]))


def compile_layer_regex(name_regex: str) -> re.Pattern[str]:
    try:
        return re.compile(name_regex, re.IGNORECASE)
    except re.error as exc:
        raise UsageError(f"--layer-regex {name_regex!r} is not a valid regular expression: {exc}")


def resolve_layer(info: ModelInfo, spec: str, name_regex: str) -> LayerInfo:
    """Pick the target layer: 'auto' (last candidate), an index among candidates ('-1'),
    a path ('base/conv5'), or a unique layer name."""
    candidates = candidate_layers(info, name_regex)
    if spec == "auto":
        if not candidates:
            raise LayerError(
                f"no convolutional layer found (a 4-D feature map whose name matches "
                f"/{name_regex}/ or whose type is a convolution); feature-map layers: "
                f"{_list([l.path for l in info.layers if l.is_feature_map])}; choose one with --layer, "
                f"or use a method that needs no layer: {', '.join(_layerless_methods())}"
            )
        return candidates[-1]
    if re.fullmatch(r"-?\d+", spec):
        index = int(spec)
        if not -len(candidates) <= index < len(candidates):
            raise LayerError(
                f"--layer {spec}: there are {len(candidates)} candidate layers "
                f"({_list([l.path for l in candidates])}); use an index from "
                f"{-len(candidates)} to {len(candidates) - 1}"
            )
        return candidates[index]
    matches = [l for l in info.layers if l.path == spec] or [l for l in info.layers if l.name == spec]
    if not matches:
        raise LayerError(
            f"layer {spec!r} not found; candidates: {_list([l.path for l in candidates])} "
            "(see `xai layers MODEL`)"
        )
    if len(matches) > 1:
        raise LayerError(f"layer name {spec!r} is ambiguous: {_list([l.path for l in matches])}; give the path")
    layer = matches[0]
    if not (layer.is_feature_map or is_token_layer(layer, info)):
        raise LayerError(
            f"layer {layer.path!r} outputs {layer.output_shape}, not a 4-D feature map "
            f"(N, H, W, C) with H*W > 1; candidates: {_list([l.path for l in candidates])}"
        )
    return layer


def _layerless_methods() -> list[str]:
    """Methods that work on the input, not a layer, from the one registry."""
    return [name for name, spec in REGISTRY.items() if spec.family == "gradient"]


def build_probe(model: keras.Model, info: ModelInfo, layer_path: str | None,
                attention: bool = False) -> keras.Model:
    """A model mapping a (N, H, W, C) float32 batch to ``{"logits": (N, units)}``, plus
    ``"activations"`` of ``layer_path`` when given ((N, h, w, k), or (N, T, D) for a token
    layer), plus ``"attention"``: one (N, heads, T, T) score tensor per attention layer when
    ``attention`` is set."""
    plan = _Plan(record=lambda path: path == layer_path, logits_of=info.head_path, attention=attention)
    traced = _trace(model, info.input_size, info.channels, plan)
    outputs: dict[str, Any] = {"logits": traced.logits}
    if layer_path is not None:
        outputs["activations"] = traced.records[layer_path]
    if attention:
        outputs["attention"] = [traced.records[p + ATTENTION_SCORES] for p in info.attention_layers]
    return keras.Model(traced.inputs, outputs)


def class_scores(logits: tf.Tensor, info: ModelInfo) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-class scores to explain and probabilities to report.

    Args:
        logits: (N, units) pre-activation outputs.

    Returns:
        (scores, probabilities), both (N, num_classes). A one-unit sigmoid becomes two
        classes: score (-z, z), probability (1 - s, s). Softmax and linear heads report
        softmax probabilities; multi-label sigmoid heads report per-label sigmoids.
    """
    if info.is_binary_sigmoid:
        scores = tf.concat([-logits, logits], axis=-1)
        return scores, tf.sigmoid(scores)
    if info.final_activation == "sigmoid":
        return logits, tf.sigmoid(logits)
    return logits, tf.nn.softmax(logits, axis=-1)


# --- re-threading -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    record: Callable[[str], bool]  # which layer outputs to keep, by path
    logits_of: str | None = None  # path of the layer whose pre-activation output is wanted
    attention: bool = False  # also keep every MultiHeadAttention layer's scores


@dataclass
class _Level:
    """What one model level's re-threading collected."""

    records: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, keras.layers.Layer] = field(default_factory=dict)
    producer: dict[int, str] = field(default_factory=dict)  # id(tensor) -> innermost layer path
    logits: Any = None


@dataclass(frozen=True)
class _Traced:
    inputs: Any
    outputs: list[Any]
    heads: list[str]  # per output, the path of the innermost layer that produced it
    records: dict[str, Any]
    layers: dict[str, keras.layers.Layer]
    logits: Any


def _trace(model: keras.Model, size: tuple[int, int], channels: int, plan: _Plan) -> _Traced:
    inputs = keras.Input(batch_shape=(None, *size, channels), dtype="float32")
    level = _Level()
    outputs = _thread(model, inputs, "", plan, level)
    heads = [level.producer[id(o)] for o in outputs]
    return _Traced(inputs, outputs, heads, level.records, level.layers, level.logits)


def _thread(model: keras.Model, x: Any, prefix: str, plan: _Plan, level: _Level) -> list[Any]:
    """Run ``model``'s layers on ``x``, recording into ``level``; returns the output tensors."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _call(layer, x, prefix=prefix, plan=plan, level=level)
        return [x]
    fresh = keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype)
    inner = _Level()
    # Models saved by Keras 2 reload with their input as a one-element list; match its structure.
    structured = [fresh] if isinstance(model.input, (list, tuple)) else fresh
    clone = keras.models.clone_model(
        model, input_tensors=structured, clone_function=lambda layer: layer,
        call_function=partial(_call, prefix=prefix, plan=plan, level=inner),
    )
    taps = list(inner.records)
    exported = [*clone.outputs, *(inner.records[t] for t in taps)]
    if inner.logits is not None:
        exported.append(inner.logits)
    results = keras.Model(fresh, exported)(x)
    outputs, tapped = results[: len(clone.outputs)], results[len(clone.outputs):]
    level.records.update(zip(taps, tapped))
    if inner.logits is not None:
        level.logits = tapped[-1]
    level.layers.update(inner.layers)
    for inner_out, outer_out in zip(clone.outputs, outputs):
        level.producer[id(outer_out)] = inner.producer[id(inner_out)]
    return list(outputs)


def _call(layer: keras.layers.Layer, *args: Any, prefix: str, plan: _Plan, level: _Level, **kwargs: Any) -> Any:
    path = prefix + layer.name
    if isinstance(layer, (keras.Sequential, Functional)):
        outputs = _thread(layer, args[0], path + "/", plan, level)
        out = outputs[0] if len(outputs) == 1 else outputs
    elif plan.attention and isinstance(layer, keras.layers.MultiHeadAttention):
        out = _attend(layer, args, kwargs, path, level)
    else:
        out = layer(*args, **kwargs)
        for tensor in keras.tree.flatten(out):
            level.producer[id(tensor)] = path
        if path == plan.logits_of:
            level.logits = _pre_activation(layer, args, kwargs, out)
    level.layers[path] = layer
    if plan.record(path):
        level.records[path] = out
    return out


ATTENTION_SCORES = ":attention"  # suffix of the record holding a layer's attention scores


class _WithScores(keras.layers.Layer):
    """Calls a MultiHeadAttention layer (same weights) asking for its scores too. Asking the
    layer itself symbolically gives a scores tensor that a Functional model reports as "not
    connected to inputs" (Keras 3.15); as the outputs of this layer's own node, both connect."""

    def __init__(self, attention: keras.layers.MultiHeadAttention, **kwargs: Any):
        super().__init__(name=f"{attention.name}_with_scores", **kwargs)
        self.attention = attention

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self.attention(*args, **kwargs, return_attention_scores=True)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        return self.attention.compute_output_spec(*args, **kwargs, return_attention_scores=True)


def _attend(layer: keras.layers.MultiHeadAttention, args: tuple, kwargs: dict, path: str, level: _Level) -> Any:
    """Call the layer asking for its scores too; record them, pass on only what the model used."""
    wanted_scores = kwargs.pop("return_attention_scores", False)
    output, scores = _WithScores(layer)(*args, **kwargs)
    level.records[path + ATTENTION_SCORES] = scores
    out = (output, scores) if wanted_scores else output
    for tensor in keras.tree.flatten(out):
        level.producer[id(tensor)] = path
    return out


def _pre_activation(layer: keras.layers.Layer, args: tuple, kwargs: dict, out: Any) -> Any:
    if isinstance(layer, _ServedModel):
        return layer.logits_from(out)
    if final_activation(layer) == "linear":
        return out
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return args[0]
    return _linear_twin(layer, args, kwargs)


def _linear_twin(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> Any:
    """The same layer without its activation, sharing nothing but copied weights."""
    config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}_logits"}
    twin = type(layer).from_config(config)
    out = twin(*args, **kwargs)
    twin.set_weights(layer.get_weights())
    return out


# --- helpers -------------------------------------------------------------------------------


def _input_geometry(model: keras.Model, input_size: tuple[int, int] | None) -> tuple[tuple[int, int], int]:
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs; only single-image models are supported")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"the model input has shape {shape}; expected an image batch (N, H, W, C)")
    channels = shape[3]
    if channels not in (1, 3):
        raise ModelError(f"the model expects {channels} channels; only 1 (grayscale) or 3 (RGB) are supported")
    if input_size is not None:
        return input_size, channels
    if shape[1] is None or shape[2] is None:
        raise UsageError(
            f"the model accepts any image size (input shape {shape}); "
            "give the size it was trained on with --input-size HxW"
        )
    return (int(shape[1]), int(shape[2])), int(channels)


def _shape(tensor: Any) -> tuple[int | None, ...] | None:
    if tensor is None or isinstance(tensor, (list, tuple, dict)):
        return None
    return tuple(tensor.shape)


def _list(items: list[str], most: int = 8) -> str:
    if not items:
        return "(none)"
    shown = ", ".join(items[-most:])
    return shown if len(items) <= most else f"... {shown} ({len(items)} in all)"
