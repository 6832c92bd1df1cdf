"""models/graph.py: ancestors and the nodes on every path, on hand-drawn graphs (no TensorFlow)."""

from xaicli._models.graph import ancestors, on_every_path

# input -> stem -> {branch_a1 -> branch_a2, branch_b} -> concat -> act -> pool -> head
#                                                                  \-> side (a second output)
INCEPTION = {
    "stem": ("in",), "branch_a1": ("stem",), "branch_a2": ("branch_a1",), "branch_b": ("stem",),
    "concat": ("branch_a2", "branch_b"), "act": ("concat",), "pool": ("act",), "head": ("pool",),
    "side": ("branch_b",),
}
ORDER = ["stem", "branch_a1", "branch_a2", "branch_b", "concat", "act", "pool", "head", "side"]


def test_every_path_passes_the_merge_not_the_branches():
    assert on_every_path(ORDER, INCEPTION, "in", "head") == {"in", "stem", "concat", "act", "pool", "head"}


def test_a_side_output_is_dominated_by_its_own_branch():
    assert on_every_path(ORDER, INCEPTION, "in", "side") == {"in", "stem", "branch_b", "side"}


def test_residual_shortcut_bypasses_the_block_but_not_the_add():
    graph = {"conv1": ("in",), "bn": ("conv1",), "conv2": ("bn",), "add": ("conv2", "conv1"), "out": ("add",)}
    assert on_every_path(list(graph), graph, "in", "out") == {"in", "conv1", "add", "out"}


def test_a_node_without_graph_inputs_counts_as_fed_by_the_input():
    """A learned class token made from no layer output: the concatenation is still the only way."""
    graph = {"embed": ("in",), "token": (), "concat": ("token", "embed"), "head": ("concat",)}
    assert on_every_path(list(graph), graph, "in", "head") == {"in", "concat", "head"}


def test_ancestors_include_the_target_and_skip_other_outputs():
    assert ancestors(INCEPTION, "head") == set(ORDER) - {"side"} | {"in"}
    assert ancestors(INCEPTION, "side") == {"side", "branch_b", "stem", "in"}
