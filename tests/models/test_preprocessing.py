"""models/preprocessing.py on hand-made model descriptions (no TensorFlow): which family is
recognized, by name or by layer names, at which level, and what it is fed."""

from dataclasses import replace

import pytest

from xaicli._models.info import LayerInfo, ModelInfo
from xaicli._models.preprocessing import FAMILIES, Preprocessing, choose_preprocessing


def _info(model_name, paths, preprocessing=()):
    layers = tuple(LayerInfo(path, "Layer", (None, 4, 4, 8), False) for path in paths)
    return ModelInfo(input_size=(32, 32), model_name=model_name, channels=3, layers=layers, head_path=paths[-1],
                     final_activation="softmax", units=3, preprocessing=tuple(preprocessing))


def _family_layers(family):
    """One layer name per signature pattern, made to match it."""
    examples = {r"\d+": "3", r"\w+": "x", r"\w*": "convnext_tiny", r"[\d.]+": "1.00"}
    names = []
    for pattern in family.signature:
        for regex, text in examples.items():
            pattern = pattern.replace(regex, text)
        names.append(pattern)
    return names


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.signature], ids=lambda f: f.display)
def test_each_family_is_recognized_by_its_layer_names_when_renamed(family):
    chosen = choose_preprocessing("auto", _info("my_model", [*_family_layers(family), "head"]))
    preset, reason = chosen.preset, chosen.reason
    assert preset == family.preset
    assert reason.startswith(f"the model my_model has the layers of Keras's {family.display}, which expects")


@pytest.mark.parametrize("name,preset,display", [
    ("vgg16", "caffe", "VGG"), ("resnet152", "caffe", "ResNet"), ("resnet101v2", "symmetric", "ResNetV2"),
    ("inception_v3", "symmetric", "InceptionV3"), ("xception", "symmetric", "Xception"),
    ("mobilenet_0.25_128", "symmetric", "MobileNet"), ("mobilenetv2_1.00_160", "symmetric", "MobileNetV2"),
    ("nasnet_large", "symmetric", "NASNet"), ("densenet201", "torch", "DenseNet"),
    ("efficientnetv2-b2", "torch", "EfficientNetV2"), ("efficientnetv2-m", "symmetric", "EfficientNetV2-S/M/L"),
    ("convnext_base", "torch", "ConvNeXt"), ("MobileNetV3Large", "symmetric", "MobileNetV3"),
])
def test_a_nested_backbone_is_recognized_by_its_name(name, preset, display):
    info = _info("functional", [f"{name}/conv", name, "gap", "head"])
    assert choose_preprocessing("auto", info) == Preprocessing(
        preset, f"the backbone {name} is Keras's {display}, which expects "
                + {"caffe": "BGR pixels with the ImageNet mean subtracted (caffe)", "symmetric": "pixels scaled to -1..1",
                   "torch": "pixels scaled to 0..1 and normalized by the ImageNet mean and std (torch)"}[preset])


def test_the_outermost_backbone_wins_over_models_nested_in_it():
    info = _info("functional", ["convnext_tiny/convnext_tiny_stem/conv", "convnext_tiny/convnext_tiny_stem",
                                "convnext_tiny/add", "convnext_tiny", "head"])
    assert "the backbone convnext_tiny is Keras's ConvNeXt" in choose_preprocessing("auto", info).reason


def test_a_model_that_rescales_inside_gets_raw_pixels_and_the_family_is_named():
    info = _info("efficientnetb0", ["rescaling", "normalization", "stem_conv", "head"], preprocessing=("rescaling",))
    assert choose_preprocessing("auto", info) == Preprocessing(
        "none", "the model rescales inside: rescaling (the model efficientnetb0 is Keras's EfficientNet)")


def test_unknown_models_fall_back_to_unit_and_requests_are_kept():
    info = _info("my_cnn", ["conv_a", "conv_b", "head"])
    assert choose_preprocessing("auto", info) == Preprocessing(
        "unit", "no Rescaling/Normalization layer in the model, assuming pixels/255")
    assert choose_preprocessing("caffe", info) == Preprocessing("caffe", "as requested")


def test_a_keras_hub_image_converter_becomes_mean_and_std():
    """ImageNet mean/std folded into scale and offset, as keras-hub presets store them."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    scale = tuple(1 / (255 * s) for s in std)
    offset = tuple(-m / s for m, s in zip(mean, std))
    info = replace(_info("res_net_image_classifier", ["backbone/conv", "head"]), image_converter=(scale, offset))
    chosen = choose_preprocessing("auto", info)
    assert chosen.preset == "custom" and chosen.reason.startswith("the model's own keras-hub image converter")
    assert chosen.mean == pytest.approx(mean) and chosen.std == pytest.approx(std)
    unit = replace(info, image_converter=((1 / 255,) * 3, (0.0,) * 3))
    assert choose_preprocessing("auto", unit).mean == (0.0, 0.0, 0.0) and choose_preprocessing("auto", unit).std == pytest.approx((1.0,) * 3)
