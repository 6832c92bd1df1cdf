"""Output names (_outputs/naming.py)."""

from __future__ import annotations

from pathlib import PurePosixPath

from xaicli._outputs.naming import output_path


def test_output_path_keeps_the_source_suffix_method_and_tag_inside_out(tmp_path):
    relative = PurePosixPath("sub/a.jpg")
    assert output_path(tmp_path, relative, "gradcam") == tmp_path / "sub" / "a.jpg.gradcam.png"
    assert output_path(tmp_path, relative, "gradcam++", "panel", "top2") == tmp_path / "sub" / "a.jpg.gradcam++.top2.panel.png"
    assert output_path(tmp_path, relative, "saliency", "raw") == tmp_path / "sub" / "a.jpg.saliency.npy"
    assert output_path(tmp_path, relative, "gradcam", image_format="jpeg") == tmp_path / "sub" / "a.jpg.gradcam.jpg"
    assert output_path(tmp_path, relative, "gradcam", "heatmap", image_format="webp") == (
        tmp_path / "sub" / "a.jpg.gradcam.heatmap.webp")
    assert output_path(tmp_path, relative, "gradcam", "raw", image_format="webp").suffix == ".npy"
