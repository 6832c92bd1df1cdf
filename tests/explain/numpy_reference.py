"""Independent numpy computations of the explanation formulas, for the tests to compare against.

The reference models are small enough to differentiate by hand:
    pre    = sum_b conv3x3_valid(x, K_b) + b_b                      one branch, or a residual add of two
    A      = ReLU(pre) (post-activation) or pre itself (signed)     (N, h, w, k)   the target layer
    hidden = ReLU(flatten(A) @ W1 + c1)                             a nonlinear head
    scores = hidden @ W2 + c2                                       the explained pre-activation scores
so d score_c / d flatten(A) = W1 @ (1[hidden > 0] * W2[:, c]), different for every image, and
d score_c / d x follows by passing that back through the ReLU mask (if any) and the convolutions.
A one-unit sigmoid head z is two classes with scores (-z, z): its W2, c2 are mapped by [[-1, 1]],
and its probabilities are the sigmoids of those scores.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The weights of one reference model, read from the Keras model the tests build."""

    convs: tuple  # ((kernel (3, 3, C, k), bias (k,)), ...): the branches summed into the target layer
    relu: bool  # the target layer is ReLU(pre); False: the signed sum itself (a residual add)
    hidden: tuple  # (W1, c1)
    head: tuple  # (W2, c2) giving the explained scores, (10, classes)
    sigmoid: bool = False  # probabilities are sigmoid(scores) (one-unit sigmoid), else softmax

    @classmethod
    def from_keras(cls, model, convs, relu, sigmoid=False):
        """Read ``convs`` (layer names), 'hidden' and 'head' from ``model``."""
        w2, c2 = model.get_layer("head").get_weights()
        if sigmoid:  # z -> (-z, z)
            w2, c2 = w2 @ np.array([[-1.0, 1.0]]), c2 @ np.array([[-1.0, 1.0]])
        return cls(tuple(tuple(model.get_layer(name).get_weights()) for name in convs), relu,
                   tuple(model.get_layer("hidden").get_weights()), (w2, c2), sigmoid)

    def probabilities(self, scores):
        if self.sigmoid:
            return 1 / (1 + np.exp(-scores))
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def conv_valid(images, kernel, bias):
    n, height, width, _ = images.shape
    kh, kw, _, k = kernel.shape
    out = np.zeros((n, height - kh + 1, width - kw + 1, k))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j, :] = np.einsum("nabc,abck->nk", images[:, i:i + kh, j:j + kw, :], kernel) + bias
    return out


def pre_activation(images, model: Reference):
    return sum(conv_valid(images.astype(np.float64), kernel, bias) for kernel, bias in model.convs)


def forward_and_gradients(images, model: Reference, classes=None):
    """Target activations, scores, explained classes and d score / d activations."""
    pre = pre_activation(images, model)
    activations = np.maximum(pre, 0) if model.relu else pre
    (w1, c1), (w2, c2) = model.hidden, model.head
    flat = activations.reshape(len(images), -1)
    pre_hidden = flat @ w1 + c1
    scores = np.maximum(pre_hidden, 0) @ w2 + c2
    classes = scores.argmax(axis=1) if classes is None else np.asarray(classes)
    gradients = np.stack([
        (w1 @ ((pre_hidden[n] > 0) * w2[:, classes[n]])).reshape(activations.shape[1:])
        for n in range(len(images))
    ])
    return activations, scores, classes, gradients


def normalize(cam):
    return _min_max(np.maximum(cam, 0))


def _min_max(cam):
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def eigencam_maps(activations):
    """First principal component over positions, signed to agree with the channel sum."""
    maps = []
    for a in activations:
        positions = a.reshape(-1, a.shape[-1])
        centred = positions - positions.mean(axis=0)
        projection = centred @ np.linalg.svd(centred)[2][0]
        energy = positions.sum(axis=1) - positions.sum(axis=1).mean()
        if (projection * energy).sum() < 0:
            projection = -projection
        maps.append(normalize(projection.reshape(a.shape[:2])))
    return np.stack(maps)


def bilinear_resize(grid, height, width):
    """Bilinear resize of (h, w) with half-pixel centres and edge clamping."""
    def axis(size_in, size_out):
        source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, size_in - 1), source - low
    r0, r1, fr = axis(grid.shape[0], height)
    c0, c1, fc = axis(grid.shape[1], width)
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c1] * fc
    bottom = grid[r1][:, c0] * (1 - fc) + grid[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def scorecam_maps(images, model: Reference, classes, max_channels=None, score="probability", relu=True):
    """Score-CAM's Algorithm 1: each channel, upsampled and min-maxed, masks the image; the
    softmax over channels of the class's probability for each masked image weights it; ReLU.
    ``score="logit"`` and ``relu=False`` are the departures the tests must be able to see."""
    activations, _, _, _ = forward_and_gradients(images, model, classes)
    maps = []
    for image, a, c in zip(images, activations, classes):
        channels = np.arange(a.shape[-1])
        if max_channels is not None:
            channels = np.sort(np.argsort(-a.mean(axis=(0, 1)), kind="stable")[:max_channels])
        scores = []
        for k in channels:
            mask = bilinear_resize(a[:, :, k], *image.shape[:2])
            span = mask.max() - mask.min()
            mask = (mask - mask.min()) / span if span > 0 else np.zeros_like(mask)
            _, masked_scores, _, _ = forward_and_gradients((image * mask[:, :, None])[None], model, [c])
            scores.append((model.probabilities(masked_scores) if score == "probability" else masked_scores)[0, c])
        w = np.exp(np.array(scores) - max(scores))
        cam = a[:, :, channels] @ (w / w.sum())
        maps.append(normalize(cam) if relu else _min_max(cam))
    return np.stack(maps)


def cam_maps(method, activations, gradients):
    """Per-image CAM maps, ReLU and min-max normalized, one formula per paper."""
    maps = []
    for a, g in zip(activations, gradients):
        if method == "gradcam":
            cam = a @ g.mean(axis=(0, 1))
        elif method == "gradcam++":
            channel_sums = a.sum(axis=(0, 1))
            denominator = 2 * g ** 2 + channel_sums * g ** 3
            alpha = np.divide(g ** 2, denominator, out=np.zeros_like(g), where=np.abs(denominator) > 1e-12)
            cam = a @ (alpha * np.maximum(g, 0)).sum(axis=(0, 1))
        elif method == "xgradcam":
            channel_sums = a.sum(axis=(0, 1))
            share = np.divide(a, channel_sums, out=np.zeros_like(a), where=np.abs(channel_sums) > 1e-12)
            cam = a @ (share * g).sum(axis=(0, 1))
        elif method == "layercam":
            cam = (np.maximum(g, 0) * a).sum(axis=-1)
        elif method == "hirescam":
            cam = (g * a).sum(axis=-1)
        elif method == "eigencam":
            return eigencam_maps(activations)
        else:
            raise ValueError(method)
        maps.append(normalize(cam))
    return np.stack(maps)


def input_gradients(images, model: Reference, classes):
    """d score_c / d x for the reference model, (N, H, W, C), by hand-written backpropagation."""
    _, _, _, layer_gradients = forward_and_gradients(images, model, classes)
    if model.relu:
        layer_gradients = layer_gradients * (pre_activation(images, model) > 0)
    result = np.zeros(images.shape)
    for kernel, _ in model.convs:
        kh, kw = kernel.shape[:2]
        for i in range(layer_gradients.shape[1]):
            for j in range(layer_gradients.shape[2]):
                result[:, i:i + kh, j:j + kw, :] += np.einsum("nk,abck->nabc", layer_gradients[:, i, j, :], kernel)
    return result


def saliency_maps(images, model: Reference, classes):
    return np.stack([normalize(m) for m in np.abs(input_gradients(images, model, classes)).max(axis=-1)])


def smoothgrad_maps(images, model: Reference, classes, noises):
    """noises: (N, samples, H, W, C), the noise each image gets."""
    total = sum(np.abs(input_gradients(images + noises[:, s], model, classes)).max(axis=-1)
                for s in range(noises.shape[1]))
    return np.stack([normalize(m) for m in total])


def integrated_gradients_maps(images, model: Reference, classes, baseline, steps):
    path = [baseline + (s + 0.5) / steps * (images - baseline) for s in range(steps)]
    average = sum(input_gradients(p, model, classes) for p in path) / steps
    attribution = (images - baseline) * average
    return np.stack([normalize(m) for m in np.abs(attribution.sum(axis=-1))])
