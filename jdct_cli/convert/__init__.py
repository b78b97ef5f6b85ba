"""``jdct convert``: ImageNet-style JPEG folders into a sharded Zarr v3 store of DCT coefficients.

- :mod:`.options`: :class:`ConvertOptions`, everything that determines a store's content;
- :mod:`.plan`: phase 1, listing the source and checking every header; sample orders; shard tasks;
- :mod:`.worker`: what runs in worker processes (header checks, one whole shard per task);
- :mod:`.runners`: in this process, a process pool, or a Dask cluster;
- :mod:`.reduce`: shard markers -> the store's metadata; the summary;
- :mod:`.lifeline`: workers that die with the conversion, one conversion per OUT;
- :mod:`.run`: :func:`convert`, the entry point (resume, overwrite, Ctrl-C).

The sample recipe itself (crop boxes, decoding, resize, coefficients) is
:func:`jdct_cli.transforms.convert_image`; the store format is :mod:`jdct_cli.store`.
"""
from .failures import failure_kind
from .options import ConvertOptions
from .plan import ProgressFn, plan_conversion, sample_order
from .reduce import summarize
from .run import convert
from .runners import default_workers

__all__ = ["ConvertOptions", "ProgressFn", "convert", "default_workers", "failure_kind", "plan_conversion",
           "sample_order", "summarize"]
