"""DICOM files as pictures for the explainer, read with pydicom (the ``medical`` extra).

Only pixel data and the tags that say how to show it are read (rescale, window, photometric
interpretation, frames); nothing about the patient ever leaves this module.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import ImageError, first_line
from .intensity import Intensity, to_8bit

MEDICAL_EXTRA = "pip install 'xaicli[medical]'"
# The module each decoder package installs, by the name pip knows it by (pydicom names the
# packages it needs by pip name, but GDCM's by its module, 'gdcm', which pip calls python-gdcm).
DECODER_MODULES = {"pylibjpeg": "pylibjpeg", "pylibjpeg-libjpeg": "libjpeg", "pylibjpeg-openjpeg": "openjpeg",
                   "pylibjpeg-rle": "rle", "python-gdcm": "gdcm", "pillow": "PIL",
                   "pyjpegls": "jpeg_ls", "numpy": "numpy"}
GDCM_SCALARS = {"UINT8": np.uint8, "INT8": np.int8, "UINT12": np.uint16, "INT12": np.int16, "UINT16": np.uint16,
                "INT16": np.int16, "UINT32": np.uint32, "INT32": np.int32, "FLOAT32": np.float32,
                "FLOAT64": np.float64}
COLOUR_INTERPRETATIONS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"})


@dataclass(frozen=True)
class DicomPixels:
    """The pixels of one DICOM file, ready for intensity mapping.

    ``frames``: (F, H, W) float64 modality values (Rescale Slope/Intercept applied: Hounsfield
    units for CT) for grayscale, or (F, H, W, 3) uint8 RGB (YBR converted) for colour.
    ``window``: the first WindowCenter/WindowWidth, in modality units, when the file has one.
    ``inverted``: MONOCHROME1, where the lowest value is shown white.
    ``shallow``: 8-bit grayscale with no rescaling, which is shown as it is unless it carries a window.
    """

    frames: np.ndarray
    window: tuple[float, float] | None
    inverted: bool
    shallow: bool = False

    @property
    def colour(self) -> bool:
        return self.frames.ndim == 4


def read_dicom(path: Path) -> DicomPixels:
    """Read a DICOM file's pixels; a one-line ``ImageError`` says what to do when it cannot."""
    pydicom = _pydicom()
    try:
        dataset = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise ImageError("not a DICOM file (no DICOM header found)") from None
    except (FileNotFoundError, PermissionError) as exc:
        raise ImageError.unreadable(exc) from None
    except Exception as exc:  # pydicom raises assorted types on cut or malformed headers
        raise ImageError(f"cannot read the DICOM file: {first_line(exc)}") from None
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError("the DICOM file holds no image (no pixel data: a report, a structured document or a series header)")
    pixels = _decoded(dataset, path)
    frame_count = int(dataset.get("NumberOfFrames", 1) or 1)
    interpretation = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if interpretation in COLOUR_INTERPRETATIONS or int(dataset.get("SamplesPerPixel", 1)) == 3:
        frames = pixels.reshape(frame_count, *pixels.shape[-3:])
        return DicomPixels(_colour_8bit(frames, int(dataset.get("BitsStored", 8))), None, False)
    values, rescaled = _modality_values(pixels.reshape(frame_count, *pixels.shape[-2:]), dataset)
    shallow = int(dataset.get("BitsStored", 16)) <= 8 and not rescaled and np.issubdtype(pixels.dtype, np.integer)
    return DicomPixels(values, _first_window(dataset), interpretation == "MONOCHROME1", shallow)


def _modality_values(frames: np.ndarray, dataset) -> tuple[np.ndarray, bool]:
    """(F, H, W) float64 modality values, and whether a rescale changed them: the file's Modality
    LUT or Rescale Slope/Intercept, or, in an enhanced multi-frame file, each frame's from its
    Pixel Value Transformation functional group."""
    from pydicom.pixels import apply_rescale

    if "ModalityLUTSequence" in dataset or "RescaleSlope" in dataset:
        rescaled = float(dataset.get("RescaleSlope", 1) or 1) != 1 or float(dataset.get("RescaleIntercept", 0) or 0) != 0
        return np.asarray(apply_rescale(frames, dataset), dtype=np.float64), rescaled
    transforms = [(frame_value(dataset, n, "PixelValueTransformationSequence", "RescaleSlope"),
                   frame_value(dataset, n, "PixelValueTransformationSequence", "RescaleIntercept"))
                  for n in range(len(frames))]
    slopes = np.array([float(slope if slope is not None else 1) for slope, _ in transforms])
    intercepts = np.array([float(intercept if intercept is not None else 0) for _, intercept in transforms])
    rescaled = bool(np.any(slopes != 1) or np.any(intercepts != 0))
    values = frames.astype(np.float64)
    return (values * slopes[:, None, None] + intercepts[:, None, None] if rescaled else values), rescaled


def frame_value(dataset, frame: int, sequence: str, keyword: str):
    """``keyword`` of an enhanced multi-frame file's frame: from the frame's own functional group
    ``sequence`` (in PerFrameFunctionalGroupsSequence), else the shared one's; None when neither
    says."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    shared = dataset.get("SharedFunctionalGroupsSequence") or []
    for groups in ((per_frame[frame],) if frame < len(per_frame) else ()), tuple(shared[:1]):
        for group in groups:
            items = group.get(sequence) or []
            if items and keyword in items[0]:
                return items[0][keyword].value
    return None


def to_pictures(pixels: DicomPixels, intensity: Intensity) -> tuple[np.ndarray, str]:
    """Every frame in 8 bits, mapped together so that frames stay comparable: grayscale through
    ``intensity`` (the file's own window for ``auto``), MONOCHROME1 inverted, colour as it is.

    Returns:
        (F, H, W) uint8 grayscale or (F, H, W, 3) uint8 RGB, and what was done ('' for nothing).
    """
    if pixels.colour:
        return pixels.frames, ""
    if pixels.shallow and pixels.window is None:
        gray, mapped = to_8bit(pixels.frames, Intensity("range"))  # 8-bit values, shown as they are
    else:
        gray, mapped = to_8bit(pixels.frames, intensity, pixels.window)
    if pixels.inverted:
        gray = 255 - gray
        mapped = f"{mapped}, inverted (MONOCHROME1)" if mapped else "inverted (MONOCHROME1)"
    return gray, mapped


def dicom_frame_count(path: Path) -> int:
    """NumberOfFrames from the header alone (1 when absent, 0 when the header cannot be read)."""
    try:
        return int(_pydicom().dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 (read_dicom reports why)
        return 0


def has_dicom_preamble(path: Path) -> bool:
    """True when ``path`` holds 'DICM' after the 128-byte preamble, as DICOM files written to
    storage do (PS3.10 7.1), whatever their name."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def dicom_pixel_count(path: Path) -> int:
    """Rows x Columns x frames from the header alone (0 when it cannot be read)."""
    try:
        dataset = _pydicom().dcmread(path, stop_before_pixels=True)
        return int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 (read_dicom reports why)
        return 0


def _pydicom():
    try:
        import pydicom
        import pydicom.errors
    except ImportError:
        raise ImageError(f"reading DICOM files needs pydicom: {MEDICAL_EXTRA}") from None
    return pydicom


def _decoded(dataset, path: Path) -> np.ndarray:
    """The pixel array, YBR converted to RGB. Compressed pixels that none of pydicom's decoders
    can read are read by GDCM from the whole file when it is installed (it takes files that
    pydicom's per-frame plugins refuse, such as 12-bit JPEG Extended); otherwise one line names
    the decoders tried, why each failed, and what is missing. Cut data is one line too."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        if syntax is None or not syntax.is_compressed:
            raise ImageError(f"cannot decode the DICOM pixel data: {first_line(exc)}") from None
        tried = _plugin_failures(str(exc))
        try:
            return _read_by_gdcm(path, dataset)
        except ImportError:
            pass
        except ValueError as gdcm_failure:
            tried.append(f"GDCM on the whole file ({gdcm_failure})")
        raise ImageError(_codec_failure(syntax, tried)) from None
    except Exception as exc:  # truncated or inconsistent pixel data
        raise ImageError(f"cannot decode the DICOM pixel data: {first_line(exc)}") from None


def _plugin_failures(message: str) -> list[str]:
    """'pylibjpeg (reason)', one per decoder pydicom tried, from its message (its lines '  name: reason')."""
    failures = []
    for line in message.splitlines()[1:]:
        name, _, reason = line.strip().partition(": ")
        if name and reason:
            failures.append(f"{name} ({reason if len(reason) <= 110 else reason[:107] + '...'})")
    return failures


def _codec_failure(syntax, tried: list[str]) -> str:
    """One line: the decoders tried and why each failed, and the packages that are missing."""
    from pydicom.pixels import get_decoder

    wanted = _decoder_packages(get_decoder(syntax)) | {"python-gdcm"}
    missing = " ".join(sorted(p for p in wanted if importlib.util.find_spec(DECODER_MODULES.get(p, p)) is None))
    said = f"tried {', '.join(tried)}" if tried else "no decoder for it is installed"
    install = f"; not installed: {missing} (pip install {missing})" if missing else ""
    return f"cannot decode this DICOM's compression ({syntax.name}): {said}{install}"


def _decoder_packages(decoder) -> set[str]:
    """The packages, by pip name, that pydicom's decoder plugins which cannot run here need."""
    packages = set()
    for line in decoder.missing_dependencies:  # 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'
        _, _, needs = line.partition(" - requires ")
        for requirement in needs.replace(" and ", ", ").split(","):
            name = re.split(r"[<>=!~ ]", requirement.strip())[0]
            if name:
                packages.add("python-gdcm" if name == "gdcm" else name)
    return packages


def _read_by_gdcm(path: Path, dataset) -> np.ndarray:
    """Every frame of ``path`` decoded by GDCM's own reader, shaped as pydicom shapes pixels.

    Raises:
        ImportError: GDCM is not installed.
        ValueError: GDCM cannot decode the file, or gives pixels this reader does not take.
    """
    import gdcm

    for silence in (gdcm.Trace.WarningOff, gdcm.Trace.ErrorOff, gdcm.Trace.DebugOff):
        silence()  # its C++ notes would go to our stderr
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError("it cannot read the file")
    image = reader.GetImage()
    scalar = image.GetPixelFormat().GetScalarTypeAsString()
    if scalar not in GDCM_SCALARS:
        raise ValueError(f"it gives {scalar} samples")
    samples = image.GetPixelFormat().GetSamplesPerPixel()
    if samples == 3 and str(image.GetPhotometricInterpretation()).strip() != "RGB":
        raise ValueError(f"it gives {image.GetPhotometricInterpretation()} colour, not RGB")
    columns, rows = image.GetDimension(0), image.GetDimension(1)
    frames = image.GetDimension(2) if image.GetNumberOfDimensions() == 3 else 1
    data = np.frombuffer(image.GetBuffer().encode("utf-8", "surrogateescape"), dtype=GDCM_SCALARS[scalar])
    if data.size != frames * rows * columns * samples:
        raise ValueError(f"it gives {data.size} samples for {frames} x {rows} x {columns} x {samples}")
    shape = (frames, rows, columns, samples) if samples > 1 else (frames, rows, columns)
    pixels = data.reshape(shape)
    return pixels[0] if frames == 1 and int(dataset.get("NumberOfFrames", 1) or 1) == 1 else pixels


def _first_window(dataset) -> tuple[float, float] | None:
    """The first WindowCenter/WindowWidth pair (each may hold several values), if usable: the
    file's, or an enhanced file's first frame's."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:  # an enhanced file's first frame's window
        center, width = (frame_value(dataset, 0, "FrameVOILUTSequence", keyword) for keyword in ("WindowCenter", "WindowWidth"))
    if center is None or width is None:
        return None
    try:
        center_value, width_value = _first_number(center), _first_number(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center_value, width_value) if np.isfinite(center_value) and width_value >= 1 else None


def _first_number(value) -> float:
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def _colour_8bit(frames: np.ndarray, bits_stored: int) -> np.ndarray:
    """Colour frames as 8-bit RGB: deeper samples by their stored bit range."""
    if frames.dtype == np.uint8:
        return frames
    top = float(2 ** max(1, bits_stored) - 1)
    return np.clip(np.rint(frames.astype(np.float64) / top * 255.0), 0, 255).astype(np.uint8)
