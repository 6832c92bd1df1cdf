"""Throughput and memory of `xai run`, as ratios against plain inference measured in the same run,
and as fractions of the bound its own measured parts set.

    python benchmarks/run.py                      # MobileNetV2, 160 generated JPEGs, batch 16
    python benchmarks/run.py --recipe --tf-keras-vis --scale 1000,10000 --large 40
    python benchmarks/run.py --ray 960             # also the Ray engine against the local one
    python benchmarks/run.py --volume 600          # also a 512x512x600 CT series through a 3-D model

Every configuration runs in a fresh child process (so each peak RSS is its own) on the same
generated images and the same saved model; each images/s is the best of three passes. Model
loading, TensorFlow's import and the one-time tracing of compiled steps are excluded from
images/s for every configuration alike; the whole command's wall time, start-up included, is
printed under the table.

The bound: the model step and the per-image work around it (decode, resize, draw, encode) share
the machine's cores. Each part is measured alone with its wall and CPU time per image; end to
end can go no faster than the step alone, nor than all the CPU time spread over every core:
    seconds per image >= max(step wall, (step CPU + image CPU) / cores)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
REPEATS = 3  # each timing is the best of this many passes: the machine is shared, noise only slows
METHODS = ("gradcam", "saliency")
FORMATS = ("png", "jpeg")
MEASURES = ("inference", *(f"{m}-step" for m in METHODS), *(f"images-{f}" for f in FORMATS),
            *(f"xai-{m}-{f}" for m in METHODS for f in FORMATS), "recipe", "tf-keras-vis", "ray-gradcam-png")
LARGE_SIZE = (4000, 6000)  # a 24-MP phone photo, height x width


def main() -> None:
    args = _arguments()
    if args.measure:
        print(json.dumps(_measure(args)))
        return
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    images = _make_images(work / f"images-{args.images}", args.images, (400, 500))
    model = _make_model(work / f"{args.model}-{args.size}.keras", args.model, args.size)
    print(f"machine: {_cores()} CPUs; model {args.model} {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.images} JPEGs of 500x400", flush=True)
    wanted = ["inference", *(f"{m}-step" for m in METHODS), *(f"images-{f}" for f in FORMATS),
              *(f"xai-{m}-{f}" for m in METHODS for f in FORMATS)]
    wanted += ["recipe"] * args.recipe + ["tf-keras-vis"] * args.tf_keras_vis
    results = {name: _child(args, name, model, images) for name in wanted}
    cli = _cli_wall_time(args, model, images)
    _print_table(results, cli)
    _print_bounds(results, results)
    _print_start_up()
    if args.scale:
        _print_scale(args, [int(n) for n in args.scale.split(",")])
    if args.large:
        _print_large(args, model, images, results["inference"])
    if args.ray:
        _print_ray(args, model)
    if args.volume:
        _print_volume(args)
    if args.store:
        _print_store(args, model)


def _print_store(args: argparse.Namespace, model: Path) -> None:
    """``xai run`` of N photos from s3:// to s3:// on moto's S3 server (started here; its request
    log counts every request) against the same run from and to local disk."""
    import socket

    import fsspec

    folder = _make_images(args.workdir / f"images-{args.store}", args.store, (400, 500))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = args.workdir / "s3-requests.log"
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log, "w") as stream:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], env=env, stderr=stream,
                                  stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)
        os.environ.update({key: value for key, value in env.items() if key.startswith("AWS_")})
        fs = fsspec.filesystem("s3", use_listings_cache=False)
        fs.mkdir("bench")
        fs.put(str(folder), "bench/in", recursive=True)
        common = ["-b", str(args.batch_size), "--preprocess", "symmetric", "-q"]
        local_out = args.workdir / "out-store-local"
        subprocess.run([sys.executable, "-m", "xaicli", "run", str(model), str(folder), "-o", str(local_out),
                        "--overwrite", *common], check=True, env=env)
        on_disk = _wall(lambda: subprocess.run([sys.executable, "-m", "xaicli", "run", str(model), str(folder), "-o",
                                                str(local_out), "--overwrite", *common], check=True, env=env))
        before = log.read_text().count("\n")
        on_store = _wall(lambda: subprocess.run([sys.executable, "-m", "xaicli", "run", str(model), "s3://bench/in",
                                                 "-o", "s3://bench/out", *common], check=True, env=env))
        requests = _requests(log.read_text().splitlines()[before:])
        read = sum(p.stat().st_size for p in folder.glob("*.jpg"))
        written = sum(info["size"] for info in fs.find("bench/out", detail=True).values())
    finally:
        server.terminate()
        server.wait()
    n = args.store
    print(f"\n{n} JPEGs of 500x400 from s3:// to s3:// (moto on localhost), Grad-CAM, PNG outputs, whole commands:")
    print("| run | seconds | × local disk |\n| --- | ---: | ---: |")
    print(f"| local disk | {on_disk:.1f} | 1.00 |\n| S3 in and out | {on_store:.1f} | {on_disk / on_store:.2f} |")
    print("requests per image: " + ", ".join(f"{kind} {count / n:.3f}" for kind, count in sorted(requests.items())))
    print(f"bytes per image: {read / n / 1024:.0f} KB read, {written / n / 1024:.0f} KB written")


def _wall(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _requests(lines: list[str]) -> dict[str, int]:
    """Requests of moto's log lines ('"PUT /bench/out/a.png HTTP/1.1" 200') by kind: LIST for a
    bucket listing, else the HTTP method."""
    counts: dict[str, int] = {}
    for line in (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines):  # its terminal colours
        if '"' not in line or " HTTP/" not in line:
            continue
        method, target = line.split('"')[1].split(" ")[:2]
        kind = "LIST" if method == "GET" and ("list-type" in target or "delimiter" in target) else method
        counts[kind] = counts.get(kind, 0) + 1
    return counts


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
    parser.add_argument("--large", type=int, metavar="N", default=0,
                        help="also explain N generated JPEGs of 6000x4000 at xai's default batch size: images/s "
                             "and peak RSS with PNG, JPEG and --max-size 1024 outputs, e.g. 40")
    parser.add_argument("--ray", type=int, metavar="N", default=0,
                        help="also explain N generated JPEGs of 500x400 with `--engine ray` (a local Ray on this "
                             "machine) and with the local engine: images/s of each and their ratio")
    parser.add_argument("--store", type=int, metavar="N", default=0,
                        help="also explain N photos from and to S3 (moto's server on localhost): requests and bytes "
                             "per image, and the rate against the same run on local disk")
    parser.add_argument("--volume", type=int, metavar="SLICES", default=0,
                        help="also explain a generated DICOM series of SLICES slices of 512x512 with a small 3-D CNN "
                             "(needs the medical extra): wall time and peak RSS of the whole command, e.g. 600")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"),
                        help="where generated images, the model and outputs go (reused between runs)")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)  # one child's job
    parser.add_argument("--model-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--image-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=REPEATS, help=argparse.SUPPRESS)
    parser.add_argument("--memory-budget", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def _child(args: argparse.Namespace, name: str, model: Path, images: Path, batch_size: int | None = None,
           max_size: int | None = None, repeats: int = REPEATS, label: str = "", memory_budget: int | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", name, "--model-path", str(model),
               "--image-dir", str(images), "--batch-size", str(batch_size or args.batch_size), "--size", str(args.size),
               "--workdir", str(args.workdir), "--repeats", str(repeats)]
    command += ["--max-size", str(max_size)] if max_size else []
    command += ["--memory-budget", str(memory_budget)] if memory_budget else []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    output = process.stdout.read()
    status, peak_rss_mb = _wait_with_peak_rss(process)
    if status != 0:
        print(f"  {label or name}: failed (exit {os.waitstatus_to_exitcode(status)}); skipped", flush=True)
        return {}
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak_rss_mb
    print(f"  {label or name}: {result['images'] / result['seconds']:.2f} images/s, peak RSS {peak_rss_mb:.0f} MB",
          flush=True)
    return result


def _wait_with_peak_rss(process: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``process``; its wait status and its own peak RSS in MB (not its siblings')."""
    _, status, usage = os.wait4(process.pid, 0)
    return status, usage.ru_maxrss / 1024  # Linux reports kilobytes


def _measure(args: argparse.Namespace) -> dict:
    """One configuration, in this (child) process: returns images and seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.measure.startswith(("xai-", "images-")):
        from xaicli._budget import return_large_blocks_to_the_system

        return_large_blocks_to_the_system()  # as `xai run` does
    if args.measure == "ray-gradcam-png":
        return _measure_ray(args)
    if args.measure.startswith("xai-"):
        method, image_format = args.measure.removeprefix("xai-").split("-")
        return _measure_xai(args, method, image_format)
    if args.measure.startswith("images-"):
        return _measure_images(args, args.measure.removeprefix("images-"))
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

    def every_batch() -> int:
        for batch in batches:
            step(batch)
        return sum(len(batch) for batch in batches)

    return _best_pass(every_batch, REPEATS)


def _best_pass(work, repeats: int) -> dict:
    """``work`` (returning how many images it did) timed ``repeats`` times: the fastest pass's
    images, wall seconds and CPU seconds of the whole process (every thread)."""
    passes = []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        images = work()
        passes.append({"images": images, "seconds": time.perf_counter() - started,
                       "cpu_seconds": time.process_time() - cpu_started})
    return min(passes, key=lambda p: p["seconds"])


def _time_inference(model, batches: list[np.ndarray]) -> dict:
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    return _timed_batches(lambda batch: forward(tf.constant(batch)).numpy(), batches)


def _time_step(args: argparse.Namespace, batches: list[np.ndarray], method: str) -> dict:
    """xaicli's compiled explanation step alone: no decoding, rendering or writing."""
    from xaicli._runs.config import RunConfig
    from xaicli._explain.targets import BEST
    from xaicli._runs.decisions import prepare

    config = RunConfig(model=args.model_path, inputs=(args.image_dir,), out_dir=args.workdir / "unused",
                       methods=(method,), batch_size=args.batch_size, preprocess="symmetric")
    explainer = prepare(config).explainer
    return _timed_batches(lambda batch: explainer.explain(batch, BEST), batches)


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


def _measure_images(args: argparse.Namespace, image_format: str) -> dict:
    """The per-image work around the model step, on one thread, as ``xai run`` does it: decode,
    model input, overlay drawn at the output size (``--max-size``) with a fixed map, encoded and
    written, and the report's thumbnail. No model: this is the image side of the bound."""
    from xaicli._inputs.scaling import PRESETS
    from xaicli._inputs.geometry import fit_view, output_size, shown_at, to_model_input
    from xaicli._inputs.raster import open_image
    from xaicli._outputs.writers import write_image
    from xaicli._outputs.render import draw_overlay, jet_lut, overlay
    from xaicli._outputs.report import thumbnail_size

    heatmap = np.random.default_rng(0).uniform(0, 1, (7, 7)).astype(np.float32)
    lut, size = jet_lut(), (args.size, args.size)
    out = args.workdir / f"out-images-{image_format}"
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(args.image_dir.glob("*.jpg"))

    def every_image() -> int:
        for path in paths:
            picture, _ = open_image(path)
            to_model_input(picture, size, 3, PRESETS["symmetric"])
            original = (picture.height, picture.width)
            shown, view = shown_at(picture, fit_view(original, size), output_size(original, args.max_size))
            write_image(out / f"{path.name}.{image_format}", draw_overlay(shown, heatmap, 0.4, lut, view), image_format)
            small, small_view = shown_at(shown, view, thumbnail_size((shown.height, shown.width)))
            write_image(out / f"{path.name}.thumb.jpg", overlay(small, heatmap, 0.4, lut, small_view), "jpeg")
        return len(paths)

    return _best_pass(every_image, args.repeats)


def _measure_xai(args: argparse.Namespace, method: str, image_format: str) -> dict:
    """``xai run`` end to end in this process: discovery, decoding, resizing, explaining,
    colouring and blending at full size (or ``--max-size``), writing the files and the CSV. A
    warm-up run on one image traces the compiled step first (batches have a fixed shape), as
    the other configurations' warm-up does."""
    import shutil

    from xaicli._runs.config import RunConfig
    from xaicli._inputs.discover import discover
    from xaicli._engines.local import run
    from xaicli._runs.decisions import prepare

    out = args.workdir / f"out-{method}-{image_format}"
    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(model=args.model_path, inputs=(args.image_dir,), out_dir=out, methods=(method,),
                       batch_size=args.batch_size, preprocess="symmetric", existing="overwrite",
                       image_format=image_format, max_size=args.max_size,
                       **({"memory_budget": args.memory_budget} if args.memory_budget else {}))
    prepared = prepare(config)
    for _ in run(prepared, list(discover([args.image_dir]))[:1]):
        pass
    return _best_pass(lambda: sum(1 for _ in run(prepared, discover([args.image_dir]))), args.repeats)


def _measure_ray(args: argparse.Namespace) -> dict:
    """``xai run --engine ray`` in this process, on a local Ray started first (as a cluster is up
    before a job joins it). Every pass starts its pool of replicas, which then import TensorFlow,
    load the model and trace its step, so images/s counts from the first block's return to the
    last (the others' tracing is excluded too); the start of the pool is reported beside it."""
    import logging
    import shutil

    import ray

    from xaicli._runs.config import RunConfig
    from xaicli._engines import ray as ray_engine
    from xaicli._inputs.discover import discover
    from xaicli._runs.decisions import prepare

    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    out = args.workdir / "out-ray"
    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(model=args.model_path, inputs=(args.image_dir,), out_dir=out, batch_size=args.batch_size,
                       preprocess="symmetric", existing="overwrite", engine="ray")
    prepared = prepare(config)
    passes = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        arrivals = [time.perf_counter() for _ in ray_engine.run(prepared, discover([args.image_dir]))]
        first_block = sum(1 for arrived in arrivals if arrived - arrivals[0] < 0.05)  # its rows come back together
        passes.append({"images": len(arrivals) - first_block, "seconds": arrivals[-1] - arrivals[first_block - 1],
                       "first_block": first_block, "first_block_seconds": arrivals[0] - started,
                       "whole_seconds": arrivals[-1] - started, "cpu_seconds": 0.0})
    return min(passes, key=lambda p: p["seconds"] / p["images"])


def _print_ray(args: argparse.Namespace, model: Path) -> None:
    """The Ray engine on one machine against the local engine, on the same N photos."""
    folder = _make_images(args.workdir / f"images-{args.ray}", args.ray, (400, 500))
    print(f"\n{args.ray} JPEGs of 500x400, Grad-CAM, PNG outputs, local engine and --engine ray:", flush=True)
    local = _child(args, "xai-gradcam-png", model, folder, repeats=1, label="local engine")
    on_ray = _child(args, "ray-gradcam-png", model, folder, repeats=1, label="ray engine (after its first block)")
    if not (local and on_ray):
        return
    start = on_ray["first_block_seconds"] - on_ray["first_block"] * on_ray["seconds"] / on_ray["images"]
    print("\n| engine | images/s | × local | driver's peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    print(f"| local | {_rate(local):.1f} | 1.00 | {local['peak_rss_mb']:.0f} |")
    print(f"| ray, 1 replica | {_rate(on_ray):.1f} | **{_rate(on_ray) / _rate(local):.2f}** | {on_ray['peak_rss_mb']:.0f} |")
    print(f"ray: the pool's start (Ray Data, the replica's TensorFlow import, model load, tracing) took {start:.1f} s; "
          f"the whole pass {on_ray['whole_seconds']:.1f} s for {on_ray['images'] + on_ray['first_block']} images")


def _cli_wall_time(args: argparse.Namespace, model: Path, images: Path) -> float:
    """The whole `xai run` command, start-up, model loading and tracing included."""
    out = args.workdir / "out-cli"
    command = [sys.executable, "-m", "xaicli", "run", str(model), str(images), "-o", str(out), "-b",
               str(args.batch_size), "--preprocess", "symmetric", "--overwrite", "-q"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _rate(result: dict) -> float:
    return result["images"] / result["seconds"]


def _print_table(results: dict[str, dict], cli_seconds: float) -> None:
    base = results.get("inference")
    if not base:
        print("plain inference failed; no ratios")
        return
    print("\n| configuration | images/s | × inference | peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    for name, result in results.items():
        if result and not name.startswith("images-"):
            print(f"| {name} | {_rate(result):.1f} | {_rate(result) / _rate(base):.2f} | {result['peak_rss_mb']:.0f} |")
    gradcam = results.get("xai-gradcam-png")
    for other in ("recipe", "tf-keras-vis"):
        if gradcam and results.get(other):
            print(f"xai-gradcam-png is {_rate(gradcam) / _rate(results[other]):.1f}x {other}")
    print(f"whole `xai run` command (start-up, model load, tracing, {base['images']} images): {cli_seconds:.1f} s")


def bound(step: dict, images: dict, cores: int) -> float:
    """Images/s no pipeline can pass: the step alone, or every part's CPU time over ``cores``."""
    per_image = max(step["seconds"] / step["images"],
                    (step["cpu_seconds"] / step["images"] + images["cpu_seconds"] / images["images"]) / cores)
    return 1.0 / per_image


def _print_bounds(ends: dict[str, dict], parts: dict[str, dict], max_size: int | None = None) -> None:
    """End to end against the bound from its parts: ``ends`` holds xai-METHOD-FORMAT results,
    ``parts`` the METHOD-step and images-FORMAT ones (at ``max_size``)."""
    print("\n| end to end | images/s | bound from the parts | × bound |\n| --- | ---: | ---: | ---: |")
    for method in METHODS:
        for image_format in FORMATS:
            end, step, images = ends.get(f"xai-{method}-{image_format}"), parts.get(f"{method}-step"), \
                parts.get(f"images-{image_format}")
            if end and step and images:
                limit = bound(step, images, _cores())
                print(f"| {method}, {image_format.upper()} outputs{_capped(max_size)} | {_rate(end):.2f} | {limit:.2f} "
                      f"| {_rate(end) / limit:.2f} |")
    for name in ("inference", *(f"{m}-step" for m in METHODS), *(f"images-{f}" for f in FORMATS)):
        if parts.get(name):
            part = parts[name]
            print(f"  {name}: {1000 * part['seconds'] / part['images']:.1f} ms wall, "
                  f"{1000 * part['cpu_seconds'] / part['images']:.1f} ms CPU per image")


def _capped(max_size: int | None) -> str:
    return f", --max-size {max_size}" if max_size else ""


def _print_large(args: argparse.Namespace, model: Path, small: Path, inference: dict) -> None:
    """24-MP photos at xai's default batch size: images/s against inference and the bound, and
    peak RSS, which must not grow with the number of images or the batch size."""
    from dataclasses import fields

    from xaicli._runs.config import RunConfig

    batch = next(f.default for f in fields(RunConfig) if f.name == "batch_size")
    folder = _make_images(args.workdir / f"large-{args.large}", args.large, LARGE_SIZE)
    few = _first_images(folder, args.workdir / f"large-{args.large}-first-{args.large // 4}", args.large // 4)
    print(f"\n{args.large} JPEGs of {LARGE_SIZE[1]}x{LARGE_SIZE[0]}, batch {batch}:", flush=True)
    step = _child(args, "gradcam-step", model, small, batch_size=batch)
    ends: dict[int | None, dict[str, dict]] = {}
    for max_size in (None, 1024):
        parts = {"gradcam-step": step}
        for image_format in FORMATS:
            parts[f"images-{image_format}"] = _child(args, f"images-{image_format}", model, folder, max_size=max_size,
                                                     repeats=1, label=f"images-{image_format}{_capped(max_size)}")
            ends.setdefault(max_size, {})[f"xai-gradcam-{image_format}"] = _child(
                args, f"xai-gradcam-{image_format}", model, folder, batch, max_size, repeats=1,
                label=f"xai-gradcam-{image_format}{_capped(max_size)}")
        _print_bounds(ends[max_size], parts, max_size)
    memory = {
        f"{args.large} photos, PNG": ends[None]["xai-gradcam-png"],
        f"{args.large} photos, JPEG": ends[None]["xai-gradcam-jpeg"],
        f"{args.large} photos, PNG, --max-size 1024": ends[1024]["xai-gradcam-png"],
        f"{args.large} photos, PNG, --memory-budget 1024": _child(args, "xai-gradcam-png", model, folder, batch, repeats=1,
                                                                  label="--memory-budget 1024", memory_budget=1024),
        f"{args.large // 4} photos, PNG": _child(args, "xai-gradcam-png", model, few, batch, repeats=1, label="first quarter"),
        **{f"{args.large} photos, PNG, batch {size}": _child(args, "xai-gradcam-png", model, folder, size, repeats=1,
                                                           label=f"batch {size}") for size in (batch // 2, 2 * batch)},
        **{f"{args.images} photos of 500x400, PNG, batch {size}": _child(
            args, "xai-gradcam-png", model, small, size, repeats=1, label=f"500x400, batch {size}") for size in (batch, 2 * batch)},
    }
    print("\n| Grad-CAM run | images/s | × inference | peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    for name, result in memory.items():
        if result:
            print(f"| {name} | {_rate(result):.2f} | {_rate(result) / _rate(inference):.3f} | {result['peak_rss_mb']:.0f} |")


def _first_images(folder: Path, into: Path, count: int) -> Path:
    """A folder of links to the first ``count`` images of ``folder``."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.jpg"))[:count]:
        link = into / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return into


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


VOLUME_MODEL_SIZE = 32  # the 3-D CNN's D = H = W


def _print_volume(args: argparse.Namespace) -> None:
    """One CT series of ``--volume`` slices of 512x512 through a small Conv3D classifier: the whole
    `xai run`'s wall time and peak RSS, against the scan's own sizes (8-bit scan, float32 map)."""
    series = _make_series(args.workdir / f"series-{args.volume}", args.volume)
    model = args.workdir / f"cnn3d-{VOLUME_MODEL_SIZE}.keras"
    if not model.exists():
        import keras

        size = VOLUME_MODEL_SIZE
        inputs = keras.Input((size, size, size, 1))
        x = keras.layers.Conv3D(8, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.MaxPooling3D()(x)
        x = keras.layers.Conv3D(16, 3, padding="same", activation="relu")(x)
        keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling3D()(x))).save(model)
    voxels = 512 * 512 * args.volume
    for save in ("overlay", "overlay,raw"):
        command = [sys.executable, "-m", "xaicli", "run", str(model), str(series), "-o", str(args.workdir / "out-volume"),
                   "--save", save, "--overwrite", "-q"]
        started = time.perf_counter()
        process = subprocess.Popen(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        status, peak = _wait_with_peak_rss(process)
        if status != 0:
            print(f"volume: --save {save} failed (exit {os.waitstatus_to_exitcode(status)})")
            continue
        print(f"volume: 512x512x{args.volume} series ({voxels / 1e6:.0f} M voxels: 8-bit scan {voxels / 2**20:.0f} MB, "
              f"float32 map {4 * voxels / 2**20:.0f} MB), --save {save}: {time.perf_counter() - started:.1f} s, "
              f"peak RSS {peak:.0f} MB", flush=True)


def _make_series(folder: Path, slices: int) -> Path:
    """A CT series of ``slices`` axial 512x512 slices, 0.625 mm apart, noise with a bright ball."""
    if folder.exists() and len(list(folder.glob("*.dcm"))) == slices:
        return folder
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    noise = rng.integers(900, 1100, (512, 512), dtype=np.uint16)
    rows, columns = np.ogrid[:512, :512]
    uid = generate_uid()
    for k in range(slices):
        depth = (k - slices / 2) / (slices / 6)
        ball = ((rows - 300) ** 2 + (columns - 200) ** 2) / 80.0 ** 2 + depth ** 2 <= 1
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = uid
        dataset.set_pixel_data(np.where(ball, 1400, np.roll(noise, k, axis=0)).astype(np.uint16), "MONOCHROME2", 12)
        dataset.ImagePositionPatient = [-200, -200, f"{k * 0.625:.3f}"]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.PixelSpacing = [0.78, 0.78]
        dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
        dataset.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


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
