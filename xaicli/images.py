"""Find image files, decode them to RGB, and turn them into model inputs (numpy and Pillow only)."""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, UsageError, first_line
from .dicom import DicomPixels, dicom_pixel_count, has_dicom_preamble, read_dicom, to_pictures
from .intensity import Intensity, to_8bit
from .nifti import NIFTI_SUFFIXES, is_nifti_name

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
IMAGE_SUFFIXES = frozenset({*PICTURE_SUFFIXES, *DICOM_SUFFIXES, *NIFTI_SUFFIXES})
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold


@dataclass(frozen=True)
class Part:
    """Where one image sits in a file that holds several (a multi-frame DICOM, a NIfTI volume).

    ``axis``: 'frame' (DICOM frames, counted from 1) or 'z', 'y', 'x' (NIfTI slices: the voxel
    index along that axis in RAS order, from 0). ``position``: this part's place among the
    ``count`` parts explained from the file. ``digits``: width of the number in file names.
    """

    axis: str
    index: int
    position: int
    count: int
    digits: int = 3

    @property
    def label(self) -> str:
        """'frame=3' or 'z=42', as the table's input column shows it after '#'."""
        return f"{self.axis}={self.index}"

    @property
    def name_suffix(self) -> str:
        """'f003' or 'z042', added to the file's name in output names."""
        return f"{'f' if self.axis == 'frame' else self.axis}{self.index:0{self.digits}d}"

    @property
    def last(self) -> bool:
        return self.position == self.count - 1


@dataclass(frozen=True)
class InputImage:
    """One image to explain: where it is, and where it sits in the mirrored output tree.

    ``part``: which frame or slice, for files that hold several images. ``error``: why a file
    could not be split into its images (its row says so).
    """

    path: Path
    relative: PurePosixPath
    part: Part | None = None
    error: str = ""

    @property
    def name(self) -> str:
        """The input as the table names it: the path, with '#frame=3' or '#z=42' for a part."""
        return f"{self.path}#{self.part.label}" if self.part else str(self.path)

    @property
    def output_relative(self) -> PurePosixPath:
        """``relative``, with the part's number added to the name ('scan.dcm.f003')."""
        return self.relative.with_name(f"{self.relative.name}.{self.part.name_suffix}") if self.part else self.relative


def image_suffix(name: str) -> str:
    """The suffix that says how a file is read, in lower case ('.nii.gz' counts as one)."""
    return ".nii.gz" if is_nifti_name(name) else os.path.splitext(name)[1].lower()


def is_image_name(name: str) -> bool:
    """True when the file name ends with a supported image suffix (any letter case)."""
    return image_suffix(name) in IMAGE_SUFFIXES


def is_dicom(path: Path) -> bool:
    """A DICOM file: named .dcm/.dicom, or with a name no other reader claims and the DICOM
    preamble inside (scanners often write files named by UIDs, without a suffix)."""
    suffix = image_suffix(path.name)
    return suffix in DICOM_SUFFIXES or (suffix not in IMAGE_SUFFIXES and has_dicom_preamble(path))


def expand_stdin(inputs: Sequence[Path], lines: Iterable[str]) -> list[Path]:
    """Replace an input '-' by the paths in ``lines`` (standard input), one per line; blank
    lines are skipped."""
    if Path("-") not in inputs:
        return list(inputs)
    listed = [Path(line.rstrip("\r\n")) for line in lines if line.strip()]
    return [path for entry in inputs for path in (listed if entry == Path("-") else [entry])]


def discover(inputs: Sequence[Path], exclude: Iterable[Path] = (), dicom: bool = False) -> Iterator[InputImage]:
    """Stream the images named by ``inputs``: files as given, folders searched recursively (for
    files with an image suffix and, when ``dicom``, any other file whose DICOM preamble is found).

    Relative paths are taken from the deepest folder that holds every input, so a single
    folder mirrors its own tree and several inputs never collide. Folders in ``exclude``
    (e.g. the output folder inside the input tree) are not entered. Symlinked folders are not
    followed, so link loops cannot trap the walk. Only one folder's listing is held at a time,
    so memory does not grow with the number of images.

    Returns:
        An iterator of images in sorted order of their relative paths' components (a folder's
        files and subfolders by name), each once. Missing inputs raise at once.
    """
    missing = [str(p) for p in inputs if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"input not found: {missing[0]} (give image files or folders)")
    base = Path(os.path.commonpath([_absolute(p) if p.is_dir() else _absolute(p).parent for p in inputs]))
    excluded = {p.resolve() for p in exclude}
    def located(path: Path) -> InputImage:
        return InputImage(path, PurePosixPath(_absolute(path).relative_to(base).as_posix()))

    wanted = (lambda path: is_image_name(path.name) or is_dicom(path)) if dicom else (lambda path: is_image_name(path.name))
    streams = [map(located, _walk_sorted(root, excluded, wanted) if root.is_dir() else [root]) for root in inputs]
    return _unique(heapq.merge(*streams, key=lambda item: item.relative.parts))


def _unique(items: Iterable[InputImage]) -> Iterator[InputImage]:
    """Drop repeats of a relative path; ``items`` are sorted, so repeats are neighbours."""
    previous = None
    for item in items:
        if item.relative != previous:
            yield item
        previous = item.relative


def _absolute(path: Path) -> Path:
    """Absolute and with '..' folded, without resolving symlinks (they name the tree we mirror)."""
    return Path(os.path.abspath(path))


def _walk_sorted(folder: Path, excluded: set[Path], wanted: Callable[[Path], bool]) -> Iterator[Path]:
    """Files under ``folder`` that are ``wanted``, depth first, each folder's entries in name order."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return  # an unreadable folder holds nothing we can explain
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if Path(entry.path).resolve() not in excluded:
                yield from _walk_sorted(Path(entry.path), excluded, wanted)
        elif wanted(Path(entry.path)):
            yield Path(entry.path)


# Bytes a pixel Pillow holds while decoding, by the file's mode: it keeps RGB in 4 bytes.
_DECODED_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 2, "I;16B": 2, "I;16L": 2}
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I", "F"})
PICTURE_BYTES_PER_PIXEL = 4  # an RGB picture as Pillow holds it
EXIF_ORIENTATION = 0x0112


def decode_bytes(path: Path) -> int:
    """Bytes that decoding ``path`` to an upright RGB picture holds at its peak, from the file's
    header without decoding: the decoded pixels, a turned copy when EXIF says the photo lies on
    its side, the RGB conversion, and the float working copy of 16-bit and float grayscale.
    0 when the header cannot be read (``open_image`` then says why)."""
    if is_dicom(path):  # float modality values, the 8-bit map, the RGB picture
        return dicom_pixel_count(path) * (8 + 4 + 1 + PICTURE_BYTES_PER_PIXEL)
    try:
        with Image.open(path) as img:
            pixels, mode = img.width * img.height, img.mode
            turned = img.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
    except Exception:  # noqa: BLE001 (any unreadable file: open_image reports it)
        return 0
    decoded = _DECODED_BYTES.get(mode, 4)
    per_pixel = decoded * (2 if turned else 1)
    if mode != "RGB":
        per_pixel += PICTURE_BYTES_PER_PIXEL + (12 if mode in _HIGH_DEPTH_MODES else 0)
    return pixels * per_pixel


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
               intensity: Intensity = Intensity("auto")) -> tuple[Image.Image, str]:
    """Decode the first frame of an image file, upright (EXIF orientation applied), as an RGB
    Pillow picture: the pipeline keeps originals in this form (4 bytes a pixel), without a
    numpy copy of the whole image. Images deeper than 8 bits (16-bit or float grayscale) are
    brought to 0..255 as ``intensity`` says.

    Returns:
        The (W x H) RGB picture, and a note for the user ('' when there is nothing to say; e.g.
        that only an animation's first frame was used, or how a 16-bit image's intensities
        were mapped).

    Raises:
        ImageError: with a one-line reason when the file cannot be used.
    """
    if is_dicom(path):
        return _dicom_picture(path, max_pixels, intensity)
    if is_nifti_name(path.name):
        raise ImageError("a NIfTI volume holds many images: xai run explains it slice by slice (xaicli.stacks)")
    try:
        # Our own file object: closing it leaves the decoded picture usable (closing a picture
        # Pillow opened by name would destroy its pixels).
        with open(path, "rb") as stream:
            img = Image.open(stream)  # reads the header only; the size check comes before decoding
            check_pixel_limit(img.width, img.height, max_pixels)
            frames = getattr(img, "n_frames", 1)
            img.seek(0)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy of a large photo when it is upright
        picture, mapped = _rgb_picture(img, intensity)
        animated = f"animated image: explained its first frame of {frames}" if frames > 1 else ""
        return picture, joined_notes(animated, mapped)
    except ImageError:
        raise
    except (FileNotFoundError, PermissionError) as exc:
        raise ImageError.unreadable(exc) from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image: the file is empty or not an image format") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image is over the pixel limit of {max_pixels} (--max-pixels raises it)") from None
    except Exception as exc:  # decoders raise many types on malformed bytes; one bad file must not end the run
        reason = first_line(exc)
        if "truncated" in reason.lower():
            reason = "the file is cut short (truncated)"
        raise ImageError(f"cannot decode image: {reason}") from None


def _dicom_picture(path: Path, max_pixels: int, intensity: Intensity) -> tuple[Image.Image, str]:
    """The first frame of a DICOM file as an RGB picture (``dicom.to_pictures``)."""
    pixels = read_dicom(path)
    count, height, width = pixels.frames.shape[:3]
    check_pixel_limit(width, height, max_pixels)
    several = f"multi-frame DICOM: explained its first frame of {count}" if count > 1 else ""
    first = DicomPixels(pixels.frames[:1], pixels.window, pixels.inverted, pixels.shallow)
    frames, mapped = to_pictures(first, intensity)
    return rgb_picture(frames[0]), joined_notes(several, mapped)


def rgb_picture(pixels: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, 3) uint8 as an RGB picture."""
    picture = Image.fromarray(pixels)
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def check_pixel_limit(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} pixels, over the limit of {max_pixels} (--max-pixels raises it)")


def joined_notes(*notes: str) -> str:
    """The notes that say something, as the table's one ``note``."""
    return "; ".join(note for note in notes if note)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
               intensity: Intensity = Intensity("auto")) -> tuple[np.ndarray, str]:
    """``open_image`` as a numpy array: (H, W, 3) uint8 RGB, and the note."""
    picture, note = open_image(path, max_pixels, intensity)
    return np.asarray(picture), note


def _rgb_picture(img: Image.Image, intensity: Intensity) -> tuple[Image.Image, str]:
    """The picture in RGB, and how a deep image's intensities were mapped ('' otherwise)."""
    if img.mode in _HIGH_DEPTH_MODES:
        gray, note = to_8bit(np.asarray(img), intensity)
        return Image.fromarray(gray).convert("RGB"), note
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return (img if img.mode == "RGB" else img.convert("RGB")), ""


def _scale(offset: Sequence[float], divisor: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    off = np.asarray(offset, dtype=np.float32)
    div = np.asarray(divisor, dtype=np.float32)
    return lambda pixels: (pixels - off) / div


_IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PRESETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _scale([0.0], [1.0]),
    "unit": _scale([0.0], [255.0]),
    "symmetric": _scale([127.5], [127.5]),
    "torch": _scale(_IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB),
    "caffe": lambda pixels: pixels[..., ::-1] - np.asarray(_CAFFE_MEAN_BGR, dtype=np.float32),
}
PRESET_HELP = {
    "none": "pixels 0..255 as they are (the model rescales inside)",
    "unit": "pixels / 255, range 0..1",
    "symmetric": "pixels / 127.5 - 1, range -1..1 (MobileNet, Inception, Xception, ResNetV2 style)",
    "torch": "0..1 then ImageNet mean/std per RGB channel",
    "caffe": "RGB to BGR, then ImageNet mean subtracted (ResNet, VGG style)",
}
PRESET_HELP["custom"] = "(pixels / 255 - --mean) / --std per channel, torchvision style"
COLOUR_ONLY_PRESETS = frozenset({"torch", "caffe"})
Scaling = Callable[[np.ndarray], np.ndarray]


def custom_scaling(mean: Sequence[float], std: Sequence[float]) -> Scaling:
    """``(pixels / 255 - mean) / std``: mean and std on the 0..1 scale, one value or one per channel."""
    return _scale([m * 255.0 for m in mean], [s * 255.0 for s in std])


RESIZE_MODES = {
    "stretch": "resize to the model's size, ignoring the aspect ratio",
    "letterbox": "keep the aspect ratio, pad the short side with black",
    "crop": "keep the aspect ratio, cut the long side to the centre",
}


@dataclass(frozen=True)
class View:
    """How a model input was cut from its image, so a map can be put back where it belongs.

    ``seen``: (left, top, right, bottom) of the part of the original image the model saw, in
    original pixels (the whole image unless it was centre-cropped).
    ``placed``: where that part sits inside the model input, as (left, top, right, bottom)
    fractions of its width and height ((0, 0, 1, 1) unless it was letterboxed).
    """

    seen: tuple[float, float, float, float]
    placed: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @staticmethod
    def whole(height: int, width: int) -> "View":
        """The view of a stretched image: all of it, filling the model input."""
        return View((0.0, 0.0, float(width), float(height)))


# Panels and heatmaps are for looking at: without --max-size, their long side (a panel's, each of
# its three panes') is at most this. A panel of three such panes is 3840 px wide, a 4K screen's
# width, and a heatmap holds nothing finer than the model's input. Overlays stay at full size.
VIEWING_SIDE = 1280


def output_size(image_size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(height, width) at which an image's outputs are drawn: its own size, or with its long
    side brought down to ``max_size`` and its aspect ratio kept."""
    height, width = image_size
    if max_size is None or max(height, width) <= max_size:
        return image_size
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def shown_at(picture: Image.Image, view: View, size: tuple[int, int]) -> tuple[Image.Image, View]:
    """The picture and its view at the output ``size`` (height, width): the same geometry, the
    seen part's corners scaled with the picture. Unchanged when the size is the picture's own."""
    width, height = picture.size
    if (height, width) == size:
        return picture, view
    # BOX reduction by whole factors first, then bilinear: fast and without aliasing.
    resized = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return resized, view_at(view, (height, width), size)


def view_at(view: View, image_size: tuple[int, int], size: tuple[int, int]) -> View:
    """``view`` of an image of ``image_size`` (height, width), for the same image drawn at
    ``size``: the seen part's corners scaled with it."""
    y_scale, x_scale = size[0] / image_size[0], size[1] / image_size[1]
    left, top, right, bottom = view.seen
    return View((left * x_scale, top * y_scale, right * x_scale, bottom * y_scale), view.placed)


def fit_view(image_size: tuple[int, int], size: tuple[int, int], resize: str = "stretch") -> View:
    """The geometry of fitting an image of ``image_size`` (height, width) into the model's
    ``size`` (height, width) with one of ``RESIZE_MODES``."""
    height, width = image_size
    target_height, target_width = size
    if resize == "stretch":
        return View.whole(height, width)
    if resize == "letterbox":
        left, top, inner_width, inner_height = _letterbox_box(image_size, size)
        return View((0.0, 0.0, float(width), float(height)),
                    (left / target_width, top / target_height,
                     (left + inner_width) / target_width, (top + inner_height) / target_height))
    if resize == "crop":
        aspect = target_width / target_height
        seen_width, seen_height = min(width, height * aspect), min(height, width / aspect)
        left, top = (width - seen_width) / 2, (height - seen_height) / 2
        return View((left, top, left + seen_width, top + seen_height))
    raise ValueError(f"unknown resize mode {resize!r}")


def _letterbox_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, width, height) in model-input pixels of the image scaled to fit inside
    ``size`` with its aspect ratio kept, centred."""
    scale = min(size[0] / image_size[0], size[1] / image_size[1])
    width, height = max(1, round(image_size[1] * scale)), max(1, round(image_size[0] * scale))
    return (size[1] - width) // 2, (size[0] - height) // 2, width, height


def to_model_input(
    image: np.ndarray | Image.Image, size: tuple[int, int], channels: int, scaling: Scaling, resize: str = "stretch"
) -> np.ndarray:
    """Resize (bilinear, as ``resize`` of ``RESIZE_MODES`` says) and preprocess one image.

    Args:
        image: (H, W, 3) uint8 RGB, or the RGB picture ``open_image`` gives.
        size: model (height, width).
        channels: 1 (converted to luma) or 3.
        scaling: a value of ``PRESETS`` or ``custom_scaling(...)``, applied to 0..255 pixels
            (letterbox padding is black, pixel 0, before scaling).
        resize: stretch, letterbox or crop; ``fit_view`` gives the matching geometry.

    Returns:
        (height, width, channels) float32.
    """
    height, width = size
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image_size = (pil.height, pil.width)
    if channels == 1:
        pil = pil.convert("L")
    if resize == "letterbox":
        left, top, inner_width, inner_height = _letterbox_box(image_size, size)
        resized = Image.new(pil.mode, (width, height), 0)
        resized.paste(pil.resize((inner_width, inner_height), Image.Resampling.BILINEAR), (left, top))
    else:
        box = fit_view(image_size, size, resize).seen
        resized = pil.resize((width, height), Image.Resampling.BILINEAR, box=box)
    pixels = np.asarray(resized, dtype=np.float32)
    if channels == 1:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(scaling(pixels), dtype=np.float32)
