"""Reading an image file to an RGB picture (Pillow, DICOM, any bit depth), within the pixel limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._errors import ImageError, first_line
from .dicom import DicomPixels, dicom_pixel_count, read_dicom, to_pictures
from .discover import is_dicom
from .intensity import Intensity, to_8bit
from .nifti import is_nifti_name
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold


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
        raise ImageError("a NIfTI volume holds many images: xai run (or xaicli.run) explains it slice by slice")
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


def picture_of(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS,
               intensity: Intensity = Intensity("auto")) -> tuple[Image.Image, str]:
    """An image already open in Pillow as ``open_image`` makes a file's: upright, RGB, deep images
    through ``intensity``, with the same note. The caller's image is left as it is."""
    check_pixel_limit(img.width, img.height, max_pixels)
    frames = getattr(img, "n_frames", 1)
    picture, mapped = _rgb_picture(ImageOps.exif_transpose(img), intensity)  # a copy, turned upright
    animated = f"animated image: explained its first frame of {frames}" if frames > 1 else ""
    return picture, joined_notes(animated, mapped)


def array_picture(pixels: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS,
                  intensity: Intensity = Intensity("auto")) -> tuple[Image.Image, str]:
    """An array as an RGB picture, as a file of the same pixels would be read: (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4) (alpha dropped); uint8 as it is, deeper values (uint16, float, any
    range) brought to 0..255 by ``intensity`` over the whole array, channels together."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array is (H, W) or (H, W, C) with C of 1, 3 or 4; got {pixels.shape}")
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise ImageError(f"image arrays hold integers or floats, not {pixels.dtype}")
    check_pixel_limit(pixels.shape[1], pixels.shape[0], max_pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., :3]
    if pixels.dtype == np.uint8:
        return rgb_picture(np.ascontiguousarray(pixels)), ""
    eight, note = to_8bit(pixels, intensity)
    return rgb_picture(eight), note


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
