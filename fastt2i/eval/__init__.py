"""Evaluation: image quality and text-image agreement (see the modules of this package)."""
