"""The layer graph as plain data: which layers feed a layer, and which every path passes through.

Pure Python, so it is tested without TensorFlow. A graph is ``inputs_of``: each layer's path
mapped to the paths of the layers whose outputs it takes (the model input is a node of its own).
Execution order is a topological order, which makes one pass enough for dominators.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def ancestors(inputs_of: Mapping[str, Iterable[str]], target: str) -> set[str]:
    """Every node with a path to ``target``, ``target`` included."""
    seen, stack = {target}, [target]
    while stack:
        for parent in inputs_of.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def on_every_path(order: Iterable[str], inputs_of: Mapping[str, Iterable[str]], source: str, target: str) -> set[str]:
    """The nodes that every path from ``source`` to ``target`` passes through (its dominators),
    both ends included. ``order`` lists the nodes in execution (topological) order; nodes that
    take no input from the graph (constants, learned tokens) count as fed by ``source``."""
    relevant = ancestors(inputs_of, target)
    dominators: dict[str, set[str]] = {source: {source}}
    for node in order:
        if node not in relevant or node == source:
            continue
        parents = [p for p in inputs_of.get(node, ()) if p in dominators] or [source]
        common = set.intersection(*(dominators[p] for p in parents))
        dominators[node] = common | {node}
    return dominators.get(target, set())
