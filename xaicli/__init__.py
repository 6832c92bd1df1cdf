"""xaicli: batch heatmaps (Grad-CAM and friends) for Keras image classifiers."""

__version__ = "0.1.0"
