"""Evaluation: faithfulness curves, ground truth (labels, masks, boxes) and the sanity check."""
