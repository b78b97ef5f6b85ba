"""The math of JPEG, one module per piece, each formula written once for numpy arrays and torch
tensors alike (:mod:`~jdct_cli.jpegmath._array`), tested against libjpeg-turbo and Pillow:

- :mod:`~jdct_cli.jpegmath.blockdct`: the 8x8 DCT basis, block DCT/IDCT of planes, libjpeg's scaled
  IDCTs (decoding at M/8) and the coefficients each reads, its integer forward DCT, flip signs;
- :mod:`~jdct_cli.jpegmath.color`: JFIF YCbCr <-> RGB, libjpeg's integer formulas and the float ones;
- :mod:`~jdct_cli.jpegmath.chroma`: libjpeg's per-component decoding plans, fancy and box chroma
  upsampling, the encoder's biased 2x2 downsampling;
- :mod:`~jdct_cli.jpegmath.resize`: Pillow's antialiased bilinear resize as per-sample weight
  matrices (bit-exact with its two rounded passes);
- :mod:`~jdct_cli.jpegmath.quant`: the IJG quantization tables and quality estimates, hard
  quantization (round half away from zero) and dequantization;
- :mod:`~jdct_cli.jpegmath.sample`: a stored 4:2:0 sample and its pixels (numpy);
- :mod:`~jdct_cli.jpegmath.augment`: the images layout's device step, the re-encode augmentation as
  batched torch ops (imports torch; the others never do).
"""
