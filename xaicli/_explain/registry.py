"""The one registry of explanation methods, and how a method declares itself and its options.

A method is a function decorated with ``@method(...)`` in a module of ``xaicli._explain.methods``
(every module there is read), or in a module another package names under the ``xaicli.methods``
entry point group. The decorator says what users see (name, family, summary, paper) and the
method's own options, each declared once beside its code: ``--method`` choices, ``xai methods``,
the CLI options, config keys, ``run.json``, the ``--resume`` check and the tests that run over
every method all read ``REGISTRY``. Method modules import TensorFlow only inside their functions,
so reading them keeps ``xai --help`` and ``xai methods`` instant.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .._errors import UsageError

# The families, in the order ``xai methods`` lists them. 'cam': from a layer's activations and
# gradients, (activations, gradients) -> map before the ReLU, in the compiled step; 'score': from
# a layer's activations and masked forward passes (ScoreContext); 'attention': from a
# transformer's attention weights (AttentionContext); 'gradient': from d score / d input
# (GradientContext).
FAMILIES = ("cam", "score", "attention", "gradient")
BUILT_IN = "xaicli._explain.methods"
PLUGIN_GROUP = "xaicli.methods"  # entry points naming modules of methods from other packages
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Option:
    """One option of a method: ``--name-with-dashes`` on the command line, ``name`` as a config
    key, a Python keyword and in ``run.json``.

    Attributes:
        name: snake_case.
        type: int, float or str.
        default: the value when none is given; None means "not set" (the help says what that does).
        help: what it does, one sentence without the method's name (the help adds it).
        choices: for a str: each allowed value and what it means.
        minimum: the lowest allowed number (inclusive).
        below: numbers must be lower than this (exclusive).
        changes_results: a change alters the maps, so ``--resume`` refuses it (False: only speed).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Mapping[str, str] | None = None
    minimum: float | None = None
    below: float | None = None
    changes_results: bool = True

    @property
    def flag(self) -> str:
        """The command line's spelling: ``--ig-steps``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """A one-line ``UsageError``, the command line's, when ``value`` is not allowed."""
        if value is None and self.default is None:
            return
        numeric = self.type in (int, float)
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float) if self.type is float else self.type)
        if wrong_type:
            kind = {int: "a whole number", float: "a number", str: "text"}.get(self.type, self.type.__name__)
            raise UsageError(f"{self.flag} takes {kind}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"unknown {self.flag} {value!r}; choose from {', '.join(self.choices)}")
        if not numeric:
            return
        low_ok = self.minimum is None or value >= self.minimum
        high_ok = self.below is None or value < self.below
        if low_ok and high_ok:
            return
        if self.minimum is not None and self.below is not None:
            raise UsageError(f"{self.flag} must be in [{self.minimum:g}, {self.below:g}), got {value}")
        if self.minimum is not None:
            least = "0 or more" if self.minimum == 0 else f"at least {self.minimum:g}"
            raise UsageError(f"{self.flag} must be {least}, got {value}")
        raise UsageError(f"{self.flag} must be below {self.below:g}, got {value}")


@dataclass(frozen=True)
class Method:
    """One explanation method: what users see, its options, and the function that computes it."""

    name: str
    family: str
    summary: str
    paper: str
    compute: Callable[..., Any]  # see FAMILIES for what each family's function takes
    options: tuple[Option, ...] = ()
    attention_gradients: bool = False  # needs d score / d attention weights (one more backward pass)

    @property
    def needs_layer(self) -> bool:
        """CAM and score methods explain a convolutional layer; gradient methods the input."""
        return self.family in ("cam", "score")


def method(name: str, *, family: str, summary: str, paper: str, options: Sequence[Option] = (),
           attention_gradients: bool = False) -> Callable[[F], F]:
    """Declare the decorated function an explanation method (see ``Method``; ``family`` is one
    of ``FAMILIES``). The function is returned unchanged."""
    if family not in FAMILIES:
        raise ValueError(f"method {name!r}: family {family!r} is not one of {', '.join(FAMILIES)}")

    def declare(function: F) -> F:
        function.xai_method = Method(name, family, summary, paper, function, tuple(options), attention_gradients)
        return function

    return declare


def _declared(module: Any) -> list[Method]:
    """The methods a module declares, in the order it defines them."""
    return [value.xai_method for value in vars(module).values()
            if callable(value) and getattr(value, "__module__", None) == module.__name__
            and isinstance(getattr(value, "xai_method", None), Method)]


def _method_modules() -> list[Any]:
    """The built-in method modules, then those other packages name (a plugin that cannot be
    imported is left out, with a warning)."""
    package = importlib.import_module(BUILT_IN)
    modules = [importlib.import_module(f"{BUILT_IN}.{info.name}") for info in pkgutil.iter_modules(package.__path__)]
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            modules.append(entry.load())
        except Exception as exc:  # noqa: BLE001 (another package's module: whatever it raises, xai still runs)
            warnings.warn(f"xaicli: the methods of {entry.value} (entry point {entry.name}) cannot be loaded: {exc}",
                          stacklevel=2)
    return modules


def _registry(modules: Sequence[Any]) -> dict[str, Method]:
    """Every declared method by name, family by family; a name or option declared twice is an error."""
    found: dict[str, Method] = {}
    owners: dict[str, str] = {}
    for spec in (spec for module in modules for spec in _declared(module)):
        if spec.name in found:
            raise ValueError(f"method {spec.name!r} is declared twice")
        for option in spec.options:
            if option.name in owners:
                raise ValueError(f"option {option.name!r} of {spec.name!r} is already {owners[option.name]!r}'s")
            owners[option.name] = spec.name
        found[spec.name] = spec
    return {spec.name: spec for spec in sorted(found.values(), key=lambda spec: FAMILIES.index(spec.family))}


REGISTRY: dict[str, Method] = _registry(_method_modules())
# Every method's options, in registry order, with the name of the method that declares each.
METHOD_OPTIONS: tuple[tuple[str, Option], ...] = tuple((spec.name, option) for spec in REGISTRY.values()
                                                       for option in spec.options)
