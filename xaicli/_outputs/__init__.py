"""Outputs: file names (made only here), writers, the predictions table, rendering, mosaics
and the report page. No TensorFlow."""
