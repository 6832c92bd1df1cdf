"""xaicli: batch heatmaps (Grad-CAM and friends) for Keras image classifiers, from the command line
(``xai``) or from Python.

    >>> import xaicli
    >>> explainer = xaicli.Explainer("model.keras", methods="gradcam")  # doctest: +SKIP
    >>> explanation = explainer.explain(["scan.png"])  # doctest: +SKIP
    >>> explanation.maps["gradcam"].shape  # doctest: +SKIP
    (1, 7, 7)

Everything public is importable from here (and ``xaicli.keras`` for the training callback);
modules whose names start with an underscore are the implementation and may change. A package
adds explanation methods by naming a module of ``@xaicli.method`` functions under the
``xaicli.methods`` entry point group.
"""

__version__ = "0.1.0"  # before the imports: the modules below record it

from ._api import Explainer, Explanation, ImageLike, LayerRow, Layers, describe, layers, report, sanity
from ._errors import ImageError, ModelError, UsageError, XaiError
from ._explain.contexts import AttentionContext, GradientContext, MethodOptions, ScoreContext
from ._explain.registry import Method, Option, method
from ._runs.run import RunSummary, run
__all__ = ["AttentionContext", "Explainer", "Explanation", "GradientContext", "ImageError", "ImageLike", "LayerRow",
           "Layers", "Method", "MethodOptions", "ModelError", "Option", "RunSummary", "ScoreContext", "UsageError",
           "XaiError", "describe", "layers", "method", "report", "run", "sanity", "__version__"]
