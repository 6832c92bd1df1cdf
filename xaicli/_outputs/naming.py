"""Output names: the only place the paths of a run's files are made (per image, method,
kind and explained class; thumbnails, mosaics, the table and run.json)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # naming is what the run's configuration and inputs ask for; they import names from here
    from .._inputs.discover import InputImage
    from .._runs.config import RunConfig

MANIFEST_NAME = "run.json"


def table_path(out_dir: Path, table_format: str, predictions: str | None) -> Path:
    """Where a run's table can be read back: ``--predictions PATH``, ``OUT/predictions.<format>``,
    or, when the table went to standard output, the copy kept for the page and ``--resume``,
    ``OUT/.predictions.<format>``."""
    if predictions == "-":
        return out_dir / f".predictions.{table_format}"
    return Path(predictions) if predictions else out_dir / f"predictions.{table_format}"


SAVE_KINDS = {  # kind -> what its file name adds before the suffix
    "overlay": "",  # heatmap coloured and blended over the image
    "heatmap": ".heatmap",  # the map alone, grayscale 0..255, at the image's size
    "raw": "",  # the map as float32 in [0, 1] at the method's own resolution (.npy)
    "panel": ".panel",  # original | heatmap | overlay with the prediction written below
}
FILE_KINDS = {**SAVE_KINDS, "mosaic": ".mosaic"}  # a volume's slices in one grid, besides --save's kinds
VOLUME_KINDS = {  # a 3-D model's files: kind -> what its name adds before the suffix
    "scan": "",  # the map in the scan's own voxels and affine (.nii.gz), always written
    "ortho": ".ortho",  # three orthogonal planes through the map's peak, the map blended
    "mosaic": ".mosaic",  # axial slices across the volume, the map blended
    "raw": "",  # the map as float32 in [0, 1] at the method's own (d, h, w) resolution (.npy)
}
FILE_KINDS.update({kind: infix for kind, infix in VOLUME_KINDS.items() if kind not in FILE_KINDS})
IMAGE_FORMATS = {  # --image-format -> suffix of the overlay, heatmap and panel files
    "png": ".png",  # lossless: our own encoder (Up filter, ISA-L deflate)
    "jpeg": ".jpg",  # quality 90, 4:2:0: a 500x400 overlay in 35 KB where PNG takes 258 KB
    "webp": ".webp",  # lossy quality 80, fastest method: the same overlay in 9 KB
}


def output_stem(relative: PurePosixPath, method: str, tag: str = "") -> PurePosixPath:
    """``<relative path>.<method>[.<tag>]``, inside OUT: what every file of one image, method and
    explained class is named from. The source suffix stays in the name so a.jpg and a.png never
    collide, and ``tag`` (e.g. 'top2') tells apart the classes of one image. ``relative`` never
    holds '..', so the names stay inside OUT."""
    tagged = f"{method}.{tag}" if tag else method
    return relative.with_name(f"{relative.name}.{tagged}")


def kind_name(stem: PurePosixPath, kind: str, image_format: str = "png") -> PurePosixPath:
    """The file of a kind of ``FILE_KINDS`` for ``stem``: ``<stem>[.<kind>].<png|jpg|webp|npy|nii.gz>``."""
    suffix = {"raw": ".npy", "scan": ".nii.gz"}.get(kind) or IMAGE_FORMATS[image_format]
    return stem.with_name(f"{stem.name}{FILE_KINDS[kind]}{suffix}")


def stem_of(name: PurePosixPath, kind: str, image_format: str = "png") -> PurePosixPath:
    """``kind_name``'s inverse: the stem of a file of ``kind`` (the table's output column names the
    first ``--save`` kind's file); the name itself when it is not such a file."""
    ending = kind_name(PurePosixPath("x"), kind, image_format).name[1:]
    return name.with_name(name.name[: -len(ending)]) if name.name.endswith(ending) and name.name != ending else name


def thumbnail_name(stem: PurePosixPath) -> PurePosixPath:
    """``.thumbs/<stem>.jpg``: the page's small overlay, named from the stem alone so that it is
    found from any of the image's files."""
    return PurePosixPath(THUMBNAIL_DIR, *stem.parts[:-1], f"{stem.name}.jpg")


def output_path(out_dir: Path, relative: PurePosixPath, method: str, kind: str = "overlay", tag: str = "",
                image_format: str = "png") -> Path:
    """``OUT/<relative path>.<method>[.<tag>][.<kind>].<png|jpg|webp|npy>`` (see ``output_stem``)."""
    return out_dir / kind_name(output_stem(relative, method, tag), kind, image_format)


THUMBNAIL_DIR = ".thumbs"  # small overlays for the report page, mirroring OUT's tree


def thumbnail_path(out_dir: Path, relative: PurePosixPath, method: str, tag: str = "") -> Path:
    """``OUT/.thumbs/<relative path>.<method>[.<tag>].jpg`` (see ``thumbnail_name``)."""
    return out_dir / thumbnail_name(output_stem(relative, method, tag))


def planned_outputs(config: RunConfig, item: InputImage, tags: Sequence[str] = ("",)) -> list[Path]:
    """Every file the run may write for ``item`` whose explained targets are named by ``tags``
    (e.g. top1, top2), in ``--method``, tag, then ``--save`` order; for a part of a volume,
    its file's mosaics too."""
    own = [output_path(config.out_dir, item.output_relative, method, kind, tag, config.image_format)
           for method in config.methods for tag in tags for kind in config.save]
    mosaics = [mosaic_path(config, item, method, tag)
               for method in config.methods for tag in tags] if wants_mosaic(config, item) else []
    return own + mosaics


def recorded_outputs(config: RunConfig, records: Iterable[dict[str, object]]) -> list[Path]:
    """The files an earlier run's table rows say it wrote: each ``--save`` kind of every
    ``ok`` row's output (the first kind's file)."""
    stems = [stem_of(PurePosixPath(config.local(str(record["output"]))), config.save[0], config.image_format)
             for record in records if record.get("status") == "ok" and record.get("output")]
    return [Path(kind_name(stem, kind, config.image_format)) for stem in stems for kind in config.save]


def volume_kinds(save: Sequence[str]) -> tuple[str, ...]:
    """A 3-D model's files for ``--save``'s kinds, in ``VOLUME_KINDS`` order: the map in the
    scan's space always; for overlay, the orthogonal planes and the axial mosaic (each may be
    asked for alone); for raw, the model-space map."""
    wanted = set(save) | ({"ortho", "mosaic"} if "overlay" in save else set())
    return tuple(kind for kind in VOLUME_KINDS if kind == "scan" or kind in wanted)


def wants_mosaic(config: RunConfig, item: InputImage) -> bool:
    """A mosaic is drawn for files of several explained parts, when any image output is saved."""
    return item.part is not None and item.part.count > 1 and any(kind != "raw" for kind in config.save)


def mosaic_path(config: RunConfig, item: InputImage, method: str, tag: str) -> Path:
    """``OUT/<relative path of the file>.<method>[.<tag>].mosaic.<png|jpg|webp>``."""
    return output_path(config.out_dir, item.relative, method, "mosaic", tag, config.image_format)
