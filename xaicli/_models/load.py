"""Read model files: Keras 3 ``.keras``, ``.h5`` from Keras 2 or 3, SavedModel folders, custom
objects and safe mode. Files that Keras 3 cannot read as they are (Keras 2 nested models, options
of a newer Keras) are read from a corrected temporary copy; the user's file is never changed."""

from __future__ import annotations

import importlib
import importlib.util
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras.src.models.functional import Functional

from .._errors import ModelError, UsageError, first_line
from .files import check_model_path
from .versions import (NESTED_MODEL_CLASSES, h5_attributes, is_newer_than_this, keras2_config, model_config,
                       readable_copy, serialized_objects, what_reads, written_by)


class _Keras2DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D that accepts the ``groups`` argument Keras 2 wrote into its configs
    (always 1 there) and Keras 3 rejects; without it, legacy MobileNet/EfficientNet .h5 files
    do not load at all."""

    def __init__(self, *args: Any, groups: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)


# Built-in classes replaced while loading, so files written by Keras 2 load in Keras 3.
KERAS2_COMPATIBLE: dict[str, Any] = {"DepthwiseConv2D": _Keras2DepthwiseConv2D}


def load_model(path: Path, unsafe: bool = False, custom_objects: dict[str, Any] | None = None) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` file (Keras 2 or 3) without compiling.

    Args:
        unsafe: allow ``Lambda`` layers that hold Python code (Keras safe mode off); only for
            files you trust, because loading them can run arbitrary code.
        custom_objects: name -> class or function for custom layers (see ``load_custom_objects``).
    """
    check_model_path(path)
    if path.is_dir():
        return _load_savedmodel_folder(path, unsafe, custom_objects)
    _check_container(path)
    if _is_keras2_nested_sequential(path):
        _refuse_lambda_unless_unsafe(path, unsafe)
        return _load_through_keras2(path, "a Keras 2 Sequential model holding a nested model", unsafe, custom_objects)
    objects = {**KERAS2_COMPATIBLE, **(custom_objects or {})}
    with readable_copy(path) as readable:
        try:
            model = keras.models.load_model(readable, compile=False, safe_mode=not unsafe, custom_objects=objects)
        except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
            raise ModelError(_load_failure(path, exc)) from exc
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ModelError(
            f"{path} holds a subclassed model ({type(model).__name__}); "
            "save it as a Functional or Sequential model to explain it"
        )
    return model


def _is_keras2_nested_sequential(path: Path) -> bool:
    """A Keras 2 .h5 whose model is a Sequential with a model among its layers (the transfer
    learning recipe ``Sequential([base_model, GlobalAveragePooling2D(), Dense(...)])``)."""
    config = keras2_config(path)
    return bool(config and config.get("class_name") == "Sequential" and any(
        layer.get("class_name") in NESTED_MODEL_CLASSES for layer in config["config"].get("layers", [])))


def _refuse_lambda_unless_unsafe(path: Path, unsafe: bool) -> None:
    """Keras 2 reads a Lambda layer's Python code without asking; safe mode is ours to keep."""
    attributes = h5_attributes(path)
    if not unsafe and attributes and attributes[1] and '"class_name": "Lambda"' in attributes[1]:
        raise ModelError(_lambda_refused(path))


def _check_container(path: Path) -> None:
    """A .keras file is a zip archive and an .h5 file HDF5; anything else would reach the user
    as Keras's own message, which says "File not found" for an empty .keras file."""
    import h5py

    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"cannot load model {path}: not a .keras file (those are zip archives); "
                         "it is empty, truncated or of another format")
    if path.suffix.lower() != ".keras" and not h5py.is_hdf5(path):
        raise ModelError(f"cannot load model {path}: not an HDF5 file; it is empty, truncated or of another format")


def _load_savedmodel_folder(folder: Path, unsafe: bool, custom_objects: dict[str, Any] | None) -> keras.Model:
    """A SavedModel folder. One written by Keras 2 (``model.save(dir)``, TF <= 2.15) keeps its
    layers in ``keras_metadata.pb``; Keras 3 cannot read it, so Keras 2 (``tf_keras``) loads it
    and writes it to a temporary Keras 2 ``.h5``, which loads here with every layer reachable.
    Any other SavedModel is wrapped around its serving function."""
    if not (folder / "keras_metadata.pb").exists():
        return _load_exported_savedmodel(folder)
    return _load_through_keras2(folder, "a SavedModel written by Keras 2", unsafe, custom_objects)


def _load_through_keras2(source: Path, what: str, unsafe: bool, custom_objects: dict[str, Any] | None) -> keras.Model:
    """Load ``source`` with Keras 2 (``tf_keras``) and read it back here from a temporary Keras 2
    ``.h5`` of the same weights. A Sequential model holding a nested model is rebuilt as a
    Functional one first: Keras 3 cannot read that Sequential (keras-team/keras#20084), while it
    reads the Functional form with every layer of the nested model reachable."""
    try:
        import tf_keras
    except ImportError:
        raise ModelError(f"{source} is {what}; loading it needs Keras 2: pip install 'xaicli[legacy]'") from None
    try:
        legacy = tf_keras.models.load_model(source, compile=False, custom_objects=custom_objects)
        if isinstance(legacy, tf_keras.Sequential) and any(isinstance(l, tf_keras.Model) for l in legacy.layers):
            legacy = _as_functional(tf_keras, legacy)
        with tempfile.TemporaryDirectory(prefix="xai-keras2-") as scratch:
            converted = Path(scratch) / f"{source.stem}.h5"
            legacy.save(converted, save_format="h5")
            return load_model(converted, unsafe=unsafe, custom_objects=custom_objects)
    except ModelError:
        raise
    except Exception as exc:  # tf_keras raises many types for a file it cannot read
        raise ModelError(f"cannot load {source} ({what}) with Keras 2: {first_line(exc)}") from exc


def _as_functional(tf_keras: Any, sequential: Any) -> Any:
    """The same layers (weights shared) called in order on a new input, as a Functional model."""
    inputs = tf_keras.Input(batch_shape=sequential.input_shape, dtype=sequential.input.dtype)
    x = inputs
    for layer in sequential.layers:
        x = layer(x)
    return tf_keras.Model(inputs, x, name=sequential.name)


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
        name = self.activation.__name__
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
        return _lambda_refused(path)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", chain) or re.search(r"Unknown layer: '([^']+)'", chain)
    if missing:
        module = _recorded_module(path, missing[1])
        if module:
            return (f"{path} uses the custom class '{missing[1]}' from module {module}: pass --custom-objects "
                    f"{module} (it must be installed), or a FILE.py that defines it")
        return (f"{path} uses the custom class or function '{missing[1]}'; pass --custom-objects "
                "FILE.py (or a module name) that defines it")
    version, unknown = written_by(path), _unknown_option(chain)
    if unknown and is_newer_than_this(version):
        return (f"cannot load model {path}: it was written by Keras {version}, whose {unknown} this Keras "
                f"{keras.__version__} does not have; {what_reads(version)}")
    message = first_line(exc)  # Keras may put a whole layer config on this line
    return f"cannot load model {path}: {message if len(message) <= 200 else message[:197] + '...'}"


def _unknown_option(chain: str) -> str | None:
    """The class and option Keras's message says it did not know ('Conv2D option 'x''), if any."""
    found = (re.search(r"Unrecognized keyword arguments? passed to (\w+): \{'(\w+)'", chain)
             or re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", chain))
    return f"{found[1]} option {found[2]!r}" if found else None


def _recorded_module(path: Path, name: str) -> str | None:
    """The module a model file records for a custom class (Keras 3 files, and Keras 2 files from
    TensorFlow 2.13 on, write it beside the class name), if any."""
    short = name.split(">")[-1]
    for node in serialized_objects(model_config(path)):
        module = node.get("module")
        if (node.get("class_name") == short and isinstance(module, str)
                and not module.startswith(("keras", "builtins", "__main__"))):
            return module
    return None


def _lambda_refused(path: Path) -> str:
    return (f"{path} has a Lambda layer holding Python code, which safe loading refuses because "
            "it can run arbitrary code; if you trust this file, pass --unsafe")


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


def model_format(path: Path) -> str:
    """A short description of the file format, with the Keras version that wrote an .h5 file."""
    if path.is_dir() and (path / "keras_metadata.pb").exists():
        return "SavedModel folder written by Keras 2 (converted through tf_keras)"
    if path.is_dir():
        return "SavedModel folder without Keras layers (serving function only: input-gradient methods)"
    if path.suffix.lower() == ".keras":
        return "Keras 3 (.keras)"
    attributes = h5_attributes(path)
    return f"HDF5 (.h5) written by Keras {attributes[0]}" if attributes else "HDF5 (.h5)"
