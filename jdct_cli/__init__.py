"""jdct: train neural networks straight from JPEG's DCT coefficients.

Importing ``jdct_cli`` is cheap: it does not import torch, zarr or the C extension.
"""
__version__ = "0.1.0"
