"""bench: a benchmark harness for self-supervised pre-training in label-efficient segmentation."""

__version__ = "0.1.0"
