"""The explanation methods: ``REGISTRY`` (name -> ``Method``, as ``xai methods`` lists them), and what
a module of methods imports: ``method`` declares a function a method (with its options),
``Option`` one option, and the contexts are what each family's function is given.

A package adds methods by naming such a module under the ``xaicli.methods`` entry point group
(``[project.entry-points."xaicli.methods"] mine = "mypackage.methods"``); xai reads it when it
starts, so the module imports from here, not from ``xaicli`` itself, and leaves TensorFlow to
its functions' bodies.
"""

from ._explain.contexts import AttentionContext, GradientContext, MethodOptions, ScoreContext
from ._explain.registry import FAMILIES, Method, Option, method


def __getattr__(name: str) -> object:
    """``REGISTRY`` on first use: a method module imports this one while the registry is still
    being filled."""
    if name == "REGISTRY":
        from ._explain.registry import REGISTRY

        return REGISTRY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["FAMILIES", "AttentionContext", "GradientContext", "Method", "MethodOptions", "Option",
           "ScoreContext", "method"]
