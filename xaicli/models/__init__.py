"""Models: read the file (``load``), describe it (``inspect``), choose the layer to explain
(``layers``) and the preprocessing (``preprocessing``), and build the probe (``probe``)."""

from .inspect import AUTO_OUTPUT, CONVOLUTIONS, LayerInfo, ModelInfo, OutputInfo, choose_output, inspect_model, open_model
from .layers import candidate_layers, compile_layer_regex, is_token_layer, resolve_layer
from .load import MODEL_SUFFIXES, load_custom_objects, load_model, model_format
from .probe import ATTENTION_SCORES, build_probe, class_scores, final_activation

__all__ = [
    "ATTENTION_SCORES", "AUTO_OUTPUT", "CONVOLUTIONS", "LayerInfo", "MODEL_SUFFIXES", "ModelInfo", "OutputInfo",
    "build_probe", "candidate_layers", "choose_output", "class_scores", "compile_layer_regex", "final_activation",
    "inspect_model", "is_token_layer", "load_custom_objects", "load_model", "model_format", "open_model",
    "resolve_layer",
]
