"""The predictions table (_outputs/table.py) against golden files in tests/golden/."""

from __future__ import annotations

import io

import pytest

from xaicli._outputs.table import Layout, PredictionsWriter, Ranked, Row, top_columns

from ..conftest import matches_golden

def _hand_rows() -> list[Row]:
    top = (Ranked(2, "lesion, malignant", 0.8765435), Ranked(0, "naevus", 0.1234565))
    ok = Row(input="scans/ü 1.png", status="ok", error="", note="animated image: explained its first frame of 3",
             pred_index=2, pred_label="lesion, malignant",
             pred_prob=0.8765435, class_index=0, class_label="naevus", class_prob=0.1234565, class_score=-1.5,
             method="gradcam", layer="base/conv5", output="out/scans/ü 1.png.gradcam.png", top=top)
    error = Row(input='odd "name".jpg', status="error", error="cannot decode image: broken data stream", note="",
                pred_index=None, pred_label="", pred_prob=None, class_index=None, class_label="", class_prob=None,
                class_score=None, method="gradcam", layer="base/conv5", output="")
    return [ok, error]


@pytest.mark.parametrize("table_format", ["csv", "jsonl"])
def test_table_formats_match_golden(table_format):
    stream = io.StringIO()
    PredictionsWriter(stream, Layout(table_format, top_k=2)).write(_hand_rows())
    matches_golden(f"hand.{table_format}", stream.getvalue())


def test_top_columns_follow_rank_then_field():
    assert top_columns(0) == ()
    assert top_columns(2) == ("top1_index", "top1_label", "top1_prob", "top2_index", "top2_label", "top2_prob")
