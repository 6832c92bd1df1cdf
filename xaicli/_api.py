"""The Python API for images in memory: ``Explainer`` (a model, its decisions made once and its steps
compiled once) and ``Explanation`` (what one call found: maps, the table's rows, the pictures).
They never print or exit; bad options and images raise ``XaiError`` subclasses with the command
line's one-line messages."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
from PIL import Image

from ._errors import ImageError, UsageError
from ._inputs.intensity import parse_intensity
from ._inputs.raster import array_picture, open_image, picture_of
from ._runs.config import ExplainOptions
from ._runs.options import as_fields

if TYPE_CHECKING:
    import keras

    from ._inputs.volumes import PlacedScan, Scan

    from ._explain.explainer import Explained
    from ._inputs.geometry import View
    from ._runs.decisions import Prepared

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
"""One image: a file (anything ``xai run`` reads as one image), a PIL image, or an array (H, W) or (H, W, C).
For a 3-D model, one volume: a NIfTI or multi-frame DICOM file, a folder holding one DICOM series,
a nibabel image, or an array (I, J, K) in RAS voxel order."""

# Options of ``explain`` that change neither the compiled steps nor the methods' settings.
PER_CALL = ("target_class", "target", "top_k", "threshold", "region", "alpha", "colormap", "resize", "intensity",
            "max_size", "max_pixels")


class Explainer:
    """A model ready to explain images: its decisions made once, its steps compiled on first use
    and kept for every later call.

    Args:
        model: a model file or SavedModel folder (anything ``xai run`` loads), or a ``keras.Model``
            in memory (used as it is, never changed).
        **options: ``xai run``'s options about explaining, in snake_case: ``methods`` ("gradcam",
            "gradcam,saliency" or a list), ``layer``, ``layer_regex``, ``target`` ("auto",
            "predicted", "topk" or "positive"), ``target_class`` (``--class``: an index or a
            label), ``top_k``, ``threshold`` and ``sign`` (multi-label and regression models),
            ``labels`` (a file, or the class names), ``batch_size``, ``preprocess``, ``mean``,
            ``std``, ``resize``, ``input_size`` ((height, width) or "HxW"), ``output``, ``kind``,
            ``unsafe``, ``custom_objects``, ``alpha``, ``colormap``, ``max_size``, ``max_pixels``,
            ``intensity``, and the methods' own (``smoothgrad_samples``, ``ig_steps``, ...).

    Raises:
        UsageError: an option out of range or not fitting the model, with the command line's message.
        ModelError: the model cannot be loaded or explained.

    Example:
        >>> explainer = xaicli.Explainer("model.keras", methods="gradcam,saliency")  # doctest: +SKIP
        >>> explanation = explainer.explain(["a.png", "b.png"])  # doctest: +SKIP
        >>> explanation.overlay(0, "gradcam").save("a.gradcam.png")  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike | keras.Model, **options: Any) -> None:
        from ._runs.decisions import prepare_model

        self._options = ExplainOptions(**as_fields(options))
        self._prepared = prepare_model(model if _is_model(model) else Path(model), self._options)

    @property
    def layer(self) -> str | None:
        """The explained layer's path (e.g. 'base/conv5_block3_out'); None when no method needs one."""
        return self._prepared.layer.path if self._prepared.layer else None

    @property
    def layer_reason(self) -> str:
        """Why that layer: 'auto: ...' (``layer="auto"``'s structural choice) or 'as requested'."""
        return self._prepared.layer_reason

    @property
    def preprocess(self) -> str:
        """The pixel scaling applied before the model: 'none', 'unit', 'symmetric', 'torch', 'caffe' or 'custom'."""
        return self._prepared.preprocess

    @property
    def preprocess_reason(self) -> str:
        """Why that scaling (e.g. the model's own Rescaling layer)."""
        return self._prepared.preprocess_reason

    @property
    def output(self) -> str:
        """The path of the layer whose output is explained."""
        return self._prepared.info.head_path

    @property
    def output_reason(self) -> str:
        """Why that output (the only one, the first classifier output, or as requested)."""
        return self._prepared.info.output_reason

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods every call computes, in order."""
        return self._options.methods

    @property
    def classes(self) -> int:
        """How many classes the explained output has."""
        return self._prepared.info.num_classes

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names given with ``labels``; () without them."""
        return self._prepared.labels

    @property
    def input_size(self) -> tuple[int, ...]:
        """(height, width) of the model input every image is fitted to; a 3-D model's (depth, height, width)."""
        return self._prepared.info.input_size

    @property
    def takes_volumes(self) -> bool:
        """Whether the model is a 3-D one, whose ``explain`` takes volumes."""
        return self._prepared.info.takes_volumes

    def explain(self, images: ImageLike | Sequence[ImageLike], **options: Any) -> Explanation:
        """Explain images with every method, ``batch_size`` at a time.

        Args:
            images: one image or several: file paths, PIL images, arrays (H, W) or (H, W, C)
                each, or one array (N, H, W, C). uint8 pixels are taken as they are; deeper ones
                (uint16, float) go through ``intensity``, as a 16-bit or float file's would.
                For a 3-D model (``takes_volumes``), one volume or several: NIfTI or multi-frame
                DICOM files, folders of one DICOM series each, nibabel images, arrays (I, J, K)
                in RAS voxel order with 1 mm voxels, or one array (N, I, J, K); read as
                ``xai run`` reads them (the ``medical`` extra).
            **options: for this call only, any of ``target_class``, ``target``, ``top_k``,
                ``alpha``, ``colormap``, ``resize``, ``intensity``, ``max_size``, ``max_pixels``.

        Returns:
            The maps, the table's rows and the pictures to draw them on, in the order given.

        Raises:
            UsageError: an option this call cannot change, or a bad value.
            ImageError: an image that cannot be read, named with its position.
        """
        fixed = sorted(set(options) - set(PER_CALL))
        if fixed:
            raise UsageError(f"{fixed[0]} is settled when the Explainer is made; make another Explainer for "
                             f"another value (each call may change {', '.join(PER_CALL)})")
        current = replace(self._options, **as_fields(options)) if options else self._options
        from ._runs.batch import explain_pictures, explain_volumes

        if self.takes_volumes:
            return explain_volumes(self._prepared, current, _scans(_listed_volumes(images), current, self.input_size))
        return explain_pictures(self._prepared, current, _pictures(_listed(images), current))


def _is_model(model: object) -> bool:
    """Whether ``model`` is a Keras model object rather than a path (without importing Keras for a path)."""
    return not isinstance(model, (str, os.PathLike))


@dataclass(frozen=True)
class Picture:
    """One image to explain: its name in the table, the RGB original and what to note of its reading."""

    name: str
    picture: Image.Image
    note: str = ""


def _listed(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """The images as a list: one image, a sequence of them, or a batch array (N, H, W, C)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
            return [images]
        raise ImageError(f"images array of shape {images.shape}: give (H, W), (H, W, C) with C of 1, 3 or 4, "
                         "or a batch (N, H, W, C)")
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


def _pictures(images: list[ImageLike], options: ExplainOptions) -> list[Picture]:
    """Each image read as ``xai run`` reads a file: upright RGB, deep values through ``intensity``."""
    intensity = parse_intensity(options.intensity)
    pictures = []
    for position, image in enumerate(images):
        try:
            if isinstance(image, (str, os.PathLike)):
                pictures.append(Picture(str(image), *open_image(Path(image), options.max_pixels, intensity)))
            elif isinstance(image, Image.Image):
                name = getattr(image, "filename", "") or f"<image {position}>"
                pictures.append(Picture(name, *picture_of(image, options.max_pixels, intensity)))
            elif isinstance(image, np.ndarray):
                pictures.append(Picture(f"<array {position}>", *array_picture(image, options.max_pixels, intensity)))
            else:
                raise ImageError(f"not an image: a {type(image).__name__}; give a path, a PIL image or an array")
        except ImageError as exc:
            raise ImageError(f"image {position} ({_shown_name(image)}): {exc}") from None
    if not pictures:
        raise UsageError("no images to explain")
    return pictures


@dataclass(frozen=True)
class ScanInput:
    """One volume to explain: its name in the table, the scan as a 3-D model sees it, and what to note."""

    name: str
    scan: Scan
    note: str = ""


def _listed_volumes(volumes: ImageLike | Sequence[ImageLike]) -> list[object]:
    """The volumes as a list: one volume, a sequence of them, or a batch array (N, I, J, K)."""
    if isinstance(volumes, np.ndarray):
        if _is_one_volume(volumes):
            return [volumes]
        if volumes.ndim in (4, 5):
            return list(volumes)
        raise ImageError(f"volumes array of shape {volumes.shape}: give (I, J, K) or a batch (N, I, J, K)")
    if isinstance(volumes, (str, os.PathLike)) or _is_nibabel_image(volumes):
        return [volumes]
    return list(volumes)


def _scans(volumes: list[object], options: ExplainOptions, size: tuple[int, ...]) -> list[ScanInput]:
    """Each volume read as ``xai run`` reads one: turned to RAS, intensities mapped over it whole."""
    from ._inputs.nifti import Volume, volume_of_image
    from ._inputs.volumes import scan_of_volume

    intensity = parse_intensity(options.intensity)
    scans = []
    for position, volume in enumerate(volumes):
        try:
            if isinstance(volume, (str, os.PathLike)):
                name, scan = _scan_at(Path(volume), intensity, size)
            elif _is_nibabel_image(volume):
                name, scan = f"<volume {position}>", scan_of_volume(volume_of_image(volume), intensity)
            elif isinstance(volume, np.ndarray) and _is_one_volume(volume):
                values = volume.reshape(volume.shape[:3])
                name, scan = f"<array {position}>", scan_of_volume(Volume(values, affine=np.eye(4),
                                                                           orientation=RAS_ORIENTATION), intensity)
            else:
                raise ImageError(f"not a volume: a {type(volume).__name__}; give a path, a nibabel image or an "
                                 "array (I, J, K)")
        except ImageError as exc:
            raise ImageError(f"volume {position} ({_shown_name(volume)}): {exc}") from None
        scans.append(ScanInput(name, scan, scan.note))
    if not scans:
        raise UsageError("no volumes to explain")
    return scans


RAS_ORIENTATION = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # stored axes already i, j, k of RAS


def _scan_at(path: Path, intensity, size: tuple[int, ...]) -> tuple[str, Scan]:
    """The volume a path names (a file, or a folder of one DICOM series) and its table name."""
    from ._inputs.discover import InputImage, discover, is_dicom
    from ._inputs.nifti import is_nifti_name
    from ._inputs.series import grouped_series
    from ._inputs.volumes import not_a_volume, read_scan

    if path.is_dir():
        series = [item for item in grouped_series(discover([path], dicom=True)) if item.series]
        if len(series) != 1:
            raise ImageError(f"the folder holds {len(series)} DICOM series; give a folder of one series, or each "
                             "series' files' folder")
        return series[0].name, read_scan(series[0], intensity)
    if not (is_nifti_name(path.name) or is_dicom(path)):
        raise ImageError(not_a_volume(path.name, size))
    return str(path), read_scan(InputImage(path, PurePosixPath(path.name)), intensity)


def _is_one_volume(array: np.ndarray) -> bool:
    """(I, J, K), or (I, J, K, 1): one volume, not a batch of them."""
    return array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 1)


def _is_nibabel_image(value: object) -> bool:
    return hasattr(value, "affine") and hasattr(value, "dataobj")


def _shown_name(image: object) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__


class Explanation:
    """What one ``Explainer.explain`` call found, in the order the images were given (made by
    ``explain``, not by hand).

    Attributes:
        maps: method -> float32 maps in [0, 1], exactly what ``--save raw`` writes: (N, h, w), or
            (N, K, h, w) with ``target="topk"`` (rank k at [:, k - 1]); (h, w) is the method's own
            grid (the layer's for the CAM family, the model input's for gradient methods). With
            ``target="positive"`` (a multi-label model's default) or a segmentation model, each
            image has its own number of labels or classes: a tuple of one (k_i, h, w) array per
            image, in class order (``classes_of``). A 3-D model's are (N, d, h, w), in the
            model's RAS axis order; ``scan_map`` puts one back on its volume.
        predictions: the rows the predictions table gets, as JSON Lines would hold them: image by
            image, then method, then explained class; ``input`` is the path, or '<array i>' /
            '<image i>' ('<volume i>' for a nibabel image).
        probabilities: (N, classes) float32, the explained output's probabilities (a regression
            model's values).
        names: each image's name, as in ``predictions``.
    """

    def __init__(self, prepared: Prepared, options: ExplainOptions, pictures: list[Picture] | list[ScanInput],
                 explained: list[list[Explained]], predictions: list[dict[str, object]],
                 views: list[tuple[Image.Image, View]] | list[PlacedScan], per_image: bool = False) -> None:
        """``per_image``: the classes explained were chosen from each image's prediction.
        ``views``: each original at its output size and the model's view of it; a 3-D model's
        scans and how each model input was cut from them."""
        self._prepared = prepared
        self._per_image = per_image
        self._options = options
        self._explained = explained  # per image, its explained classes (the predicted/given one, ranks, labels)
        self._views = views
        self.names = tuple(picture.name for picture in pictures)
        self.notes = tuple(picture.note for picture in pictures)
        self.predictions = predictions
        self.probabilities = np.stack([each[0].explanation.probabilities[each[0].index] for each in explained])
        self.maps = {method: self._maps_of(method) for method in options.methods}

    def _maps_of(self, method: str) -> np.ndarray | tuple[np.ndarray, ...]:
        per_image = [np.stack([e.explanation.maps[method][e.index] for e in each if e.target.explains])
                     if any(e.target.explains for e in each) else np.zeros((0, 0, 0), np.float32)
                     for each in self._explained]
        if self._per_image:
            return tuple(per_image)
        stacked = np.stack(per_image)
        return stacked if self._options.target == "topk" else stacked[:, 0]

    def __len__(self) -> int:
        return len(self.names)

    def classes(self, rank: int = 1) -> np.ndarray:
        """(N,) int: the class explained for each image (with ``target="topk"``, at ``rank``)."""
        return np.array([self._at(index, rank).explanation.classes[self._at(index, rank).index]
                         for index in range(len(self))])

    def classes_of(self, index: int) -> tuple[int, ...]:
        """The classes explained for image ``index``, in order (rank 1 first): with
        ``target="positive"``, its labels at or above the threshold (none when it has none)."""
        return tuple(int(e.explanation.classes[e.index]) for e in self._explained[index] if e.target.explains)

    def overlay(self, index: int, method: str, rank: int = 1) -> Image.Image:
        """Image ``index``'s map by ``method`` over the image, at the original size (or ``max_size``):
        pixel for pixel the overlay ``xai run`` writes. ``rank``: the image's ``rank``-th
        explained class (a top-K rank, or one of its present labels). For a 3-D model, the
        axial, coronal and sagittal planes through the map's peak: the ``.ortho.png``."""
        return self._drawn("overlay", index, method, rank)

    def heatmap(self, index: int, method: str, rank: int = 1) -> Image.Image:
        """The map alone, grayscale, at the original size (long side at most 1280 unless
        ``max_size``): pixel for pixel ``--save heatmap``'s file."""
        return self._drawn("heatmap", index, method, rank)

    def panel(self, index: int, method: str, rank: int = 1) -> Image.Image:
        """Image | heatmap | overlay with the caption below: pixel for pixel ``--save panel``'s file."""
        return self._drawn("panel", index, method, rank)

    def mosaic(self, index: int, method: str, rank: int = 1) -> Image.Image:
        """A 3-D model's volume ``index``: up to 30 axial slices with the map blended, pixel for
        pixel the ``.mosaic.png`` ``xai run`` writes."""
        from ._outputs.scans import axial_mosaic

        self._volume_only("mosaic")
        explained = self._at(index, rank, method)
        placed = self._views[index]
        return Image.fromarray(axial_mosaic(placed.scan, self._over_scan(index, explained, method), self._options.alpha,
                                            self._lut()))

    def scan_map(self, index: int, method: str, rank: int = 1) -> np.ndarray:
        """A 3-D model's map over volume ``index``'s own voxels: float32 in [0, 1] with the
        input's shape and voxel order (as stored in its file; an array's own), 0 where the model
        did not see the scan; the values of the ``.nii.gz`` ``xai run`` writes."""
        from ._inputs.volumes import in_stored_order

        self._volume_only("scan_map")
        placed = self._views[index]
        return np.ascontiguousarray(in_stored_order(self._over_scan(index, self._at(index, rank, method), method),
                                                    placed.scan))

    def affine(self, index: int) -> np.ndarray:
        """A 3-D model's volume ``index``: the 4x4 voxel-to-world (RAS, mm) matrix that places
        ``scan_map`` (a file's own; a DICOM series' from its geometry; identity for an array)."""
        self._volume_only("affine")
        return self._views[index].scan.affine.copy()

    def _drawn(self, kind: str, index: int, method: str, rank: int) -> Image.Image:
        from ._outputs.render import draw_kind
        from ._runs.rows import caption

        explained = self._at(index, rank, method)
        text = f"{caption(self._prepared, explained.explanation, explained.index)} | {method}"
        options = self._options
        if self._prepared.info.takes_volumes:
            if kind != "overlay":
                raise UsageError(f"{kind}: a 2-D picture; a 3-D model's map is shown by overlay (three planes through "
                                 "its peak), mosaic, and scan_map over the scan")
            from ._outputs.scans import ortho_picture

            placed = self._views[index]
            return Image.fromarray(ortho_picture(placed.scan, self._over_scan(index, explained, method), options.alpha,
                                                 self._lut(), text))
        image, view = self._views[index]
        drawing = draw_kind(kind, image, view, explained.explanation.maps[method][explained.index], options.alpha,
                            self._lut(), text, options.max_size, outline=explained.target.outline)
        return Image.fromarray(drawing.pixels())

    def _over_scan(self, index: int, explained: Explained, method: str) -> np.ndarray:
        """(I, J, K) float32: the map put back on volume ``index``'s voxels, RAS order."""
        from ._inputs.volumes import scan_map

        placed = self._views[index]
        return scan_map(explained.explanation.maps[method][explained.index], placed.view, placed.scan.shape)

    def _volume_only(self, what: str) -> None:
        if not self._prepared.info.takes_volumes:
            raise UsageError(f"{what} is a 3-D model's; this model takes 2-D images: use overlay, heatmap or panel")

    def _at(self, index: int, rank: int, method: str | None = None) -> Explained:
        """Image ``index``'s ``rank``-th explained class (``method`` checked to have been computed)."""
        if method is not None and method not in self.maps:
            raise UsageError(f"method {method!r} was not computed; this explanation has {', '.join(self.maps)}")
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        explained = [e for e in self._explained[index] if e.target.explains]
        if not explained:
            raise UsageError(f"image {index} has nothing explained: no label reached the threshold")
        if not 1 <= rank <= len(explained):
            raise UsageError(f"rank {rank}: image {index} has ranks 1..{len(explained)}")
        return explained[rank - 1]

    def _lut(self) -> np.ndarray:
        from ._outputs.render import COLORMAPS

        return COLORMAPS[self._options.colormap]()


@dataclass(frozen=True)
class LayerRow:
    """One layer of a model as ``xai layers`` lists it."""

    path: str  # 'base/conv5_block3_out' for a layer of a nested model
    type_name: str
    output_shape: tuple[int | None, ...] | None  # None when the layer has several outputs
    candidate: int | None  # its index among the candidates (``layer=INDEX``), None when it is not one
    picked: bool  # what ``layer="auto"`` takes


@dataclass(frozen=True)
class Layers:
    """A model's layers for choosing ``layer``: every layer in graph order, the candidates among
    them, ``layer="auto"``'s pick and why (``reason``), or why there is none (``missing``)."""

    rows: tuple[LayerRow, ...]
    picked: str | None
    reason: str
    missing: str = ""


def describe(model: str | os.PathLike | keras.Model, layer_regex: str = "conv", **model_options: Any) -> dict[str, Any]:
    """What ``xai info --json`` reports of a model: format, input, outputs, classes, activation,
    preprocessing, the layer ``layer="auto"`` takes and the methods that apply, JSON-ready.
    ``model_options``: ``input_size``, ``output``, ``kind``, ``unsafe``, ``custom_objects``."""
    from ._runs.decisions import describe as described, opened_model

    path = "(in memory)" if _is_model(model) else Path(model)
    return described(path, opened_model(_model_source(model), **_model_options(model_options))[1], layer_regex)


def layers(model: str | os.PathLike | keras.Model, layer_regex: str = "conv", **model_options: Any) -> Layers:
    """The model's layers as ``xai layers --all`` lists them, with ``layer="auto"``'s pick.
    ``model_options`` as ``describe``'s."""
    from ._models.layers import auto_layer, candidate_layers, no_candidates
    from ._runs.decisions import opened_model

    info = opened_model(_model_source(model), **_model_options(model_options))[1]
    candidates = candidate_layers(info, layer_regex)
    picked, reason = auto_layer(info, layer_regex) if candidates else (None, "")
    index = {layer.path: position for position, layer in enumerate(candidates)}
    rows = tuple(LayerRow(layer.path, layer.type_name, layer.output_shape, index.get(layer.path),
                          picked is not None and layer.path == picked.path) for layer in info.layers)
    return Layers(rows, picked.path if picked else None, reason, "" if candidates else no_candidates(info, layer_regex))


def sanity(model: str | os.PathLike, inputs: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
           methods: str | Sequence[str] = "gradcam", steps: int = 5, max_images: int = 16, **options: Any) -> list[str]:
    """``xai sanity``: randomize the model's weighted layers from the output down (in memory) and
    compare each image's maps with the trained model's (Spearman, SSIM), for the first
    ``max_images`` images of ``inputs``; writes ``out/sanity.csv`` and ``out/sanity.png`` and
    returns the verdict lines (Adebayo et al. 2018). ``options``: ``layer``, ``preprocess`` and
    the model options."""
    import itertools

    from ._evaluation.sanity import check
    from ._inputs.discover import discover
    from ._runs.config import RunConfig
    from ._runs.decisions import prepare

    if steps < 1 or max_images < 1:
        raise UsageError("--steps and --max-images must be at least 1")
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    config = RunConfig(**as_fields({**options, "model": model, "methods": methods}, RunConfig),
                       inputs=tuple(Path(p) for p in paths), out_dir=Path(out), existing="overwrite", report=False)
    items = list(itertools.islice(discover(config.inputs, exclude=[config.out_dir]), max_images))
    if not items:
        raise UsageError(f"no images found in {', '.join(map(str, config.inputs))}")
    prepared = prepare(config)
    if prepared.info.takes_volumes:
        raise UsageError("xai sanity on a 3-D model is not supported yet: it randomizes a 2-D model's layers over "
                         "images; run xai run on its volumes")
    return check(prepared, items, steps, config.out_dir)


def _model_source(model: str | os.PathLike | keras.Model) -> Any:
    return model if _is_model(model) else Path(model)


def _model_options(options: dict[str, Any]) -> dict[str, Any]:
    """How to read a model (``input_size``, ``output``, ``kind``, ``unsafe``, ``custom_objects``), as config values."""
    allowed = ("input_size", "output", "kind", "unsafe", "custom_objects")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; a model is read with {', '.join(allowed)}")
    return as_fields({key: value for key, value in options.items() if value is not None})


def report(out: str | os.PathLike, summary: str | os.PathLike | None = None) -> tuple[Path | str, Path | None]:
    """``xai report``: write ``out/index.html`` again from the run in ``out`` (thumbnails that are
    missing are made from the overlays) and, with ``summary``, the run's Markdown summary there.
    ``out`` may be a store's URL (the page is put there). Returns the page's path (or URL) and
    the summary's (or None)."""
    from ._outputs.report import write_report, write_summary
    from ._storage import as_location

    location = as_location(out)
    if isinstance(location, str):
        from ._runs.run import report_on_store

        return report_on_store(location, Path(summary) if summary is not None else None)
    page = write_report(Path(out))
    return page, (write_summary(Path(out), Path(summary)) if summary is not None else None)
