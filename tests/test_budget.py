"""budget.py without TensorFlow: kept originals take at most half, work waits its turn but never
deadlocks, and the peak is what was accounted."""

import threading
import time

from xaicli._budget import MemoryBudget


def test_originals_are_kept_within_half_the_budget():
    budget = MemoryBudget(100)
    assert budget.try_keep(30) and budget.try_keep(20)
    assert not budget.try_keep(1) and budget.dropped == 1  # 51 > 50
    budget.release(20)
    assert budget.try_keep(20) and budget.kept == 50 and budget.peak == 50


def test_work_waits_until_it_fits_and_is_done_alone_when_larger_than_everything():
    budget = MemoryBudget(100)
    order = []
    first_inside, release_first = threading.Event(), threading.Event()

    def first():
        with budget.working(80):
            order.append("first in")
            first_inside.set()
            release_first.wait(5)
        order.append("first out")

    def second():
        first_inside.wait(5)
        with budget.working(40):  # 80 + 40 > 100: waits for the first
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_inside.wait(5)
    time.sleep(0.05)
    assert order == ["first in"]
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"] and budget.peak == 80
    with budget.working(500):  # larger than the budget, and nothing else under way: admitted
        assert budget.work == 500
    assert budget.work == 0 and budget.peak == 500


def test_large_blocks_go_back_to_the_system_on_glibc():
    import platform

    from xaicli._budget import return_large_blocks_to_the_system

    applied = return_large_blocks_to_the_system()
    assert applied == (platform.libc_ver()[0] == "glibc")


def test_render_estimates_count_strips_for_png_and_the_whole_picture_for_lossy_formats():
    from xaicli._budget import STRIP_BYTES_PER_PIXEL, render_estimate
    from xaicli._outputs.render import strip_rows

    photo = (4000, 6000)
    strip = strip_rows(6000) * 6000 * STRIP_BYTES_PER_PIXEL
    assert render_estimate(photo, ["overlay"], "png") == strip < 16 << 20  # a strip, not the photo
    assert render_estimate(photo, ["overlay"], "jpeg") == strip + 24_000_000 * 5
    assert render_estimate(photo, ["overlay", "panel"], "webp") == 3 * (strip + 24_000_000 * 10)
    assert render_estimate(photo, ["overlay"], "png", reread_bytes=96_000_000) == strip + 96_000_000
    assert render_estimate((3, 5), ["heatmap"], "png") == 15 * STRIP_BYTES_PER_PIXEL  # a small image is one strip
