"""Inputs: finding image files, reading rasters, DICOM and NIfTI, stacks of slices, intensity
windows, and the geometry between an image and the model input. No TensorFlow."""
