"""models/layers.py's auto rule on hand-made model descriptions (no TensorFlow)."""

from xaicli._models.info import LayerInfo, ModelInfo
from xaicli._models.layers import auto_layer, candidate_layers


def _info(layers, on_every_path, feeds_output=None):
    infos = tuple(LayerInfo(path, kind, shape, kind == "Conv2D") for path, kind, shape in layers)
    paths = {l.path for l in infos}
    return ModelInfo(input_size=(32, 32), model_name="m", channels=3, layers=infos, head_path=infos[-1].path,
                     final_activation="softmax", units=3, preprocessing=(),
                     feeds_output=frozenset(feeds_output or paths), on_every_path=frozenset(on_every_path))


INCEPTION = [
    ("stem", "Conv2D", (None, 8, 8, 4)), ("branch_a", "Conv2D", (None, 4, 4, 4)),
    ("branch_b", "Conv2D", (None, 4, 4, 4)), ("mixed", "Concatenate", (None, 4, 4, 8)),
    ("pool", "GlobalAveragePooling2D", (None, 8)), ("head", "Dense", (None, 3)),
]


def test_the_merge_after_the_branches_is_picked_and_added_to_the_candidates():
    info = _info(INCEPTION, {"stem", "mixed", "pool", "head"})
    layer, reason = auto_layer(info, "conv")
    assert layer.path == "mixed"
    assert reason == "end of the last conv block (after branch_b): every path to the output passes here"
    assert [l.path for l in candidate_layers(info, "conv")] == ["stem", "branch_a", "branch_b", "mixed"]


def test_a_last_stage_of_one_position_is_not_a_feature_map():
    layers = [("conv1", "Conv2D", (None, 4, 4, 4)), ("act1", "ReLU", (None, 4, 4, 4)),
              ("conv2", "Conv2D", (None, 1, 1, 4)), ("flat", "Flatten", (None, 4)), ("head", "Dense", (None, 3))]
    layer, reason = auto_layer(_info(layers, {"conv1", "act1", "conv2", "flat", "head"}), "conv")
    assert layer.path == "act1" and reason.startswith("end of the last conv block (after conv1)")


def test_convolutions_that_do_not_feed_the_explained_output_are_ignored():
    layers = [("conv1", "Conv2D", (None, 4, 4, 4)), ("side_conv", "Conv2D", (None, 4, 4, 2)),
              ("gap", "GlobalAveragePooling2D", (None, 4)), ("head", "Dense", (None, 3))]
    info = _info(layers, {"conv1", "gap", "head"}, feeds_output={"conv1", "gap", "head"})
    assert auto_layer(info, "conv") == (info.layers[0], "the last convolution: every path to the output passes here")


def test_without_a_layer_on_every_path_the_last_candidate_is_taken():
    layers = [("conv_a", "Conv2D", (None, 4, 4, 4)), ("conv_b", "Conv2D", (None, 4, 4, 4)),
              ("gap", "GlobalAveragePooling2D", (None, 4)), ("head", "Dense", (None, 3))]
    layer, reason = auto_layer(_info(layers, {"gap", "head"}), "conv")
    assert layer.path == "conv_b" and reason == "the last layer that is a convolution or matches /conv/"
