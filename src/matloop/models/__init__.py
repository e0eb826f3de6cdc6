"""Surrogates with calibrated uncertainty: graph backbones, pretrained featurizers, UQ heads,
training, metrics and checkpoints, one module each (import from the module that defines a name;
this package imports nothing, so that light modules such as :mod:`matloop.models.metrics` load
without torch)."""
