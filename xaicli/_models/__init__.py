"""Models, one module per step: ``load`` reads the file, ``inspect`` describes it (``ModelInfo``),
``graph`` finds what every path passes through, ``layers`` chooses the layer to explain,
``preprocessing`` the pixel scaling, and ``probe`` builds the model that gives logits and
activations. Import from the modules: this package imports nothing, so the pure-Python ones
(``graph``) load without TensorFlow."""
