"""JPEG and DCT math in numpy (and, where a model needs it, torch side by side).

- :mod:`jdct_cli.jpegmath.quant`: the IJG (libjpeg) quantization tables of any quality, and the
  quality estimate of a table: jdct's one source of quantization tables.

Never imports torch at module level.
"""
