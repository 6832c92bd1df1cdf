"""Throughput and memory of `xai run`, as ratios against plain inference measured in the same run.

    python benchmarks/run.py                      # MobileNetV2, 160 generated JPEGs, batch 16
    python benchmarks/run.py --recipe --tf-keras-vis --scale 1000,10000

Every configuration runs in a fresh child process (so each peak RSS is its own) on the same
generated images and the same saved model; each images/s is the best of three passes. Model
loading, TensorFlow's import and the one-time tracing of compiled steps are excluded from
images/s for every configuration alike; the whole command's wall time, start-up included, is
printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
REPEATS = 3  # each timing is the best of this many passes: the machine is shared, noise only slows
MEASURES = ("inference", "gradcam-step", "saliency-step", "xai-gradcam", "xai-saliency", "recipe", "tf-keras-vis")


def main() -> None:
    args = _arguments()
    if args.measure:
        print(json.dumps(_measure(args)))
        return
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    images = _make_images(work / f"images-{args.images}", args.images, (400, 500))
    model = _make_model(work / f"{args.model}-{args.size}.keras", args.model, args.size)
    print(f"machine: {os.cpu_count()} CPUs; model {args.model} {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.images} JPEGs of 500x400", flush=True)
    wanted = ["inference", "gradcam-step", "saliency-step", "xai-gradcam", "xai-saliency"]
    wanted += ["recipe"] * args.recipe + ["tf-keras-vis"] * args.tf_keras_vis
    results = {name: _child(args, name, model, images) for name in wanted}
    cli = _cli_wall_time(args, model, images)
    _print_table(results, cli)
    _print_start_up()
    if args.scale:
        _print_scale(args, [int(n) for n in args.scale.split(",")])


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160, help="JPEGs of 500x400 to generate and explain")
    parser.add_argument("--batch-size", type=int, default=16, help="images per compiled step, for every configuration")
    parser.add_argument("--model", choices=["mobilenetv2", "tiny"], default="mobilenetv2",
                        help="MobileNetV2 with random weights (nothing is downloaded), or a tiny CNN")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--recipe", action="store_true",
                        help="also time the per-image GradientTape recipe most tutorials teach (on 32 images)")
    parser.add_argument("--tf-keras-vis", action="store_true",
                        help="also time tf-keras-vis Grad-CAM (pip install tf-keras-vis in this environment)")
    parser.add_argument("--scale", metavar="N,N",
                        help="also run `xai run` on N tiny images for each N and compare peak RSS, e.g. 1000,10000")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"),
                        help="where generated images, the model and outputs go (reused between runs)")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)  # one child's job
    parser.add_argument("--model-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--image-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def _make_images(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """Photo-like JPEGs: smooth gradients, a few shapes, blur and mild sensor noise (pure
    noise would be the worst case for PNG encoding, and no one's data looks like it)."""
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    height, width = size
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        base = rng.uniform(40, 200, 3)
        slope = rng.uniform(-0.2, 0.2, (2, 3))
        pixels = base + rows[..., None] * slope[0] + columns[..., None] * slope[1]
        picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        for _ in range(4):
            x, y = rng.integers(0, width - 80), rng.integers(0, height - 80)
            w, h = rng.integers(30, 160, 2)
            draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noisy = np.asarray(picture.filter(ImageFilter.GaussianBlur(2)), np.float32) + rng.normal(0, 4, (height, width, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)
    return folder


def _make_model(path: Path, kind: str, size: int) -> Path:
    if path.exists():
        return path
    import keras

    keras.utils.set_random_seed(0)
    if kind == "mobilenetv2":
        model = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None)
    else:
        inputs = keras.Input((size, size, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        for filters in (8, 16):
            x = keras.layers.Conv2D(filters, 3, strides=2, activation="relu", name=f"conv{filters}")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(path)
    return path


def _child(args: argparse.Namespace, name: str, model: Path, images: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", name, "--model-path", str(model),
               "--image-dir", str(images), "--batch-size", str(args.batch_size), "--workdir", str(args.workdir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    output = process.stdout.read()
    status, peak_rss_mb = _wait_with_peak_rss(process)
    if status != 0:
        print(f"  {name}: failed (exit {os.waitstatus_to_exitcode(status)}); skipped", flush=True)
        return {}
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak_rss_mb
    print(f"  {name}: {result['images'] / result['seconds']:.1f} images/s", flush=True)
    return result


def _wait_with_peak_rss(process: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``process``; its wait status and its own peak RSS in MB (not its siblings')."""
    _, status, usage = os.wait4(process.pid, 0)
    return status, usage.ru_maxrss / 1024  # Linux reports kilobytes


def _measure(args: argparse.Namespace) -> dict:
    """One configuration, in this (child) process: returns images and seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.measure.startswith("xai-"):
        return _measure_xai(args, args.measure.removeprefix("xai-"))
    import keras

    model = keras.models.load_model(args.model_path, compile=False)
    batches = _preprocessed_batches(args, model)
    if args.measure.endswith("-step"):
        return _time_step(args, batches, args.measure.removesuffix("-step"))
    timed = {"inference": _time_inference, "recipe": _time_recipe, "tf-keras-vis": _time_tf_keras_vis}[args.measure]
    return timed(model, batches)


def _preprocessed_batches(args: argparse.Namespace, model) -> list[np.ndarray]:
    """The images decoded, resized and scaled to -1..1 (MobileNetV2's preprocessing) once,
    outside any timing: the inference baseline sees ready model inputs."""
    height, width = model.input_shape[1:3]
    paths = sorted(args.image_dir.glob("*.jpg"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.Resampling.BILINEAR),
                                  np.float32) / 127.5 - 1.0 for p in paths])
    return [pixels[i:i + args.batch_size] for i in range(0, len(pixels) - args.batch_size + 1, args.batch_size)]


def _timed_batches(step, batches: list[np.ndarray]) -> dict:
    step(batches[0])  # trace and warm up, outside the timing

    def once() -> float:
        started = time.perf_counter()
        for batch in batches:
            step(batch)
        return time.perf_counter() - started

    return {"images": sum(len(b) for b in batches), "seconds": min(once() for _ in range(REPEATS))}


def _time_inference(model, batches: list[np.ndarray]) -> dict:
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    return _timed_batches(lambda batch: forward(tf.constant(batch)).numpy(), batches)


def _time_step(args: argparse.Namespace, batches: list[np.ndarray], method: str) -> dict:
    """xaicli's compiled explanation step alone: no decoding, rendering or writing."""
    from xaicli.config import RunConfig
    from xaicli.explainers.engine import TOP_CLASS
    from xaicli.pipeline import prepare

    config = RunConfig(model=args.model_path, inputs=(args.image_dir,), out_dir=args.workdir / "unused",
                       methods=(method,), batch_size=args.batch_size, preprocess="symmetric")
    explainer = prepare(config).explainer
    wanted = np.full(args.batch_size, TOP_CLASS)
    return _timed_batches(lambda batch: explainer.explain(batch, wanted), batches)


def _time_recipe(model, batches: list[np.ndarray]) -> dict:
    """The per-image recipe of the Keras Grad-CAM tutorial: a two-output model and one
    GradientTape per image, eager."""
    import keras
    import tensorflow as tf

    layer = model.get_layer("Conv_1")
    grad_model = keras.Model(model.inputs, [layer.output, model.output])

    def one_image(image: np.ndarray) -> np.ndarray:
        with tf.GradientTape() as tape:
            activations, predictions = grad_model(image[None])
            score = predictions[:, tf.argmax(predictions[0])]
        gradients = tape.gradient(score, activations)
        weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
        heatmap = tf.nn.relu(activations[0] @ weights[..., None])[..., 0]
        return (heatmap / (tf.reduce_max(heatmap) + 1e-12)).numpy()

    images = np.concatenate(batches)[:32]
    return _timed_batches(lambda batch: [one_image(image) for image in batch], [images[i:i + 8] for i in range(0, 32, 8)])


def _time_tf_keras_vis(model, batches: list[np.ndarray]) -> dict:
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def step(batch: np.ndarray) -> np.ndarray:
        classes = np.argmax(model(batch, training=False), axis=-1)
        return gradcam(CategoricalScore(list(classes)), batch, penultimate_layer="Conv_1")

    return _timed_batches(step, batches)


def _measure_xai(args: argparse.Namespace, method: str) -> dict:
    """``xai run`` end to end in this process: discovery, decoding, resizing, explaining,
    colouring and blending at full size, PNG writing and the CSV. A warm-up run on one batch
    traces the compiled steps first, as the other configurations' warm-up does."""
    import shutil

    from xaicli.config import RunConfig
    from xaicli.images import discover
    from xaicli.pipeline import prepare, run

    out = args.workdir / f"out-{method}"
    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(model=args.model_path, inputs=(args.image_dir,), out_dir=out, methods=(method,),
                       batch_size=args.batch_size, preprocess="symmetric", existing="overwrite")
    prepared = prepare(config)
    warm = list(discover([args.image_dir]))[:args.batch_size]
    for _ in run(prepared, warm):
        pass
    def once() -> tuple[float, int]:
        started = time.perf_counter()
        count = sum(1 for _ in run(prepared, discover([args.image_dir])))
        return time.perf_counter() - started, count

    seconds, count = min(once() for _ in range(REPEATS))
    return {"images": count, "seconds": seconds}


def _cli_wall_time(args: argparse.Namespace, model: Path, images: Path) -> float:
    """The whole `xai run` command, start-up, model loading and tracing included."""
    out = args.workdir / "out-cli"
    command = [sys.executable, "-m", "xaicli", "run", str(model), str(images), "-o", str(out), "-b",
               str(args.batch_size), "--preprocess", "symmetric", "--overwrite", "-q"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _print_table(results: dict[str, dict], cli_seconds: float) -> None:
    base = results.get("inference")
    if not base:
        print("plain inference failed; no ratios")
        return
    base_rate = base["images"] / base["seconds"]
    print(f"\n| configuration | images/s | × inference | peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    for name, result in results.items():
        if result:
            rate = result["images"] / result["seconds"]
            print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f} | {result['peak_rss_mb']:.0f} |")
    gradcam = results.get("xai-gradcam")
    for other in ("recipe", "tf-keras-vis"):
        if gradcam and results.get(other):
            speedup = (gradcam["images"] / gradcam["seconds"]) / (results[other]["images"] / results[other]["seconds"])
            print(f"xai-gradcam is {speedup:.1f}x {other}")
    images = base["images"]
    print(f"whole `xai run` command (start-up, model load, tracing, {images} images): {cli_seconds:.1f} s")


def _print_start_up() -> None:
    """`xai --help` and `xai methods` must not pay for importing TensorFlow."""
    for command in (["--help"], ["methods"]):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "xaicli", *command], check=True, stdout=subprocess.DEVNULL)
        print(f"`xai {command[0]}`: {time.perf_counter() - started:.2f} s")


def _print_scale(args: argparse.Namespace, counts: list[int]) -> None:
    """Peak RSS of the whole `xai run` command on N tiny PNGs, for each N."""
    model = _make_model(args.workdir / "tiny-32.keras", "tiny", 32)
    peaks = {}
    for count in counts:
        folder = _make_pngs(args.workdir / f"small-{count}", count)
        command = [sys.executable, "-m", "xaicli", "run", str(model), str(folder), "-o", str(args.workdir / "out-scale"),
                   "-b", "32", "--overwrite", "-q"]
        process = subprocess.Popen(command)
        _, peaks[count] = _wait_with_peak_rss(process)
        print(f"scale: {count} images, peak RSS {peaks[count]:.0f} MB", flush=True)
    low, high = min(peaks.values()), max(peaks.values())
    print(f"peak RSS spread across {', '.join(map(str, counts))} images: {100 * (high - low) / low:.1f}%")


def _make_pngs(folder: Path, count: int) -> Path:
    if folder.exists() and len(list(folder.glob("*.png"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"s{i:06d}.png")
    return folder


if __name__ == "__main__":
    main()
