"""Independent numpy computations of the explanation formulas, for the tests to compare against.

The reference model is small enough to differentiate by hand:
    A      = ReLU(conv3x3_valid(x, K) + b)               (N, h, w, k)   the target layer
    hidden = ReLU(flatten(A) @ W1 + c1)                                 a nonlinear head
    logits = hidden @ W2 + c2
so d logit_c / d flatten(A) = W1 @ (1[hidden > 0] * W2[:, c]), different for every image, and
d logit_c / d x follows by passing that back through the ReLU mask and the convolution.
"""

import numpy as np


def conv_valid(images, kernel, bias):
    n, height, width, _ = images.shape
    kh, kw, _, k = kernel.shape
    out = np.zeros((n, height - kh + 1, width - kw + 1, k))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j, :] = np.einsum("nabc,abck->nk", images[:, i:i + kh, j:j + kw, :], kernel) + bias
    return out


def conv_valid_relu(images, kernel, bias):
    return np.maximum(conv_valid(images, kernel, bias), 0)


def forward_and_gradients(images, weights, classes=None):
    """Target activations, logits, explained classes and d logit / d activations."""
    (kernel, bias), (w1, c1), (w2, c2) = weights
    activations = conv_valid_relu(images.astype(np.float64), kernel, bias)
    flat = activations.reshape(len(images), -1)
    pre_hidden = flat @ w1 + c1
    logits = np.maximum(pre_hidden, 0) @ w2 + c2
    classes = logits.argmax(axis=1) if classes is None else np.asarray(classes)
    gradients = np.stack([
        (w1 @ ((pre_hidden[n] > 0) * w2[:, classes[n]])).reshape(activations.shape[1:])
        for n in range(len(images))
    ])
    return activations, logits, classes, gradients


def normalize(cam):
    cam = np.maximum(cam, 0)
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


def scorecam_maps(images, weights, classes, max_channels=None):
    """Each channel, upsampled and min-maxed, masks the image; softmax of the class scores weights it."""
    activations, _, _, _ = forward_and_gradients(images, weights, classes)
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
            _, logits, _, _ = forward_and_gradients((image * mask[:, :, None])[None], weights, [c])
            scores.append(logits[0, c])
        w = np.exp(np.array(scores) - max(scores))
        maps.append(normalize(a[:, :, channels] @ (w / w.sum())))
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


def input_gradients(images, weights, classes):
    """d logit_c / d x for the reference model, (N, H, W, C), by hand-written backpropagation."""
    (kernel, bias), _, _ = weights
    _, _, _, layer_gradients = forward_and_gradients(images, weights, classes)
    through_relu = layer_gradients * (conv_valid(images.astype(np.float64), kernel, bias) > 0)
    kh, kw = kernel.shape[:2]
    result = np.zeros(images.shape)
    for i in range(through_relu.shape[1]):
        for j in range(through_relu.shape[2]):
            result[:, i:i + kh, j:j + kw, :] += np.einsum("nk,abck->nabc", through_relu[:, i, j, :], kernel)
    return result


def saliency_maps(images, weights, classes):
    return np.stack([normalize(m) for m in np.abs(input_gradients(images, weights, classes)).max(axis=-1)])


def smoothgrad_maps(images, weights, classes, noises):
    """noises: (N, samples, H, W, C), the noise each image gets."""
    total = sum(np.abs(input_gradients(images + noises[:, s], weights, classes)).max(axis=-1)
                for s in range(noises.shape[1]))
    return np.stack([normalize(m) for m in total])


def integrated_gradients_maps(images, weights, classes, baseline, steps):
    path = [baseline + (s + 0.5) / steps * (images - baseline) for s in range(steps)]
    average = sum(input_gradients(p, weights, classes) for p in path) / steps
    attribution = (images - baseline) * average
    return np.stack([normalize(m) for m in np.abs(attribution.sum(axis=-1))])
