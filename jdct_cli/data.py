"""Streaming loader: a jdct store -> shuffled, distributed, resumable batches on a device.

:class:`DCTLoader` reads whole zarr chunks of int16 coefficients (crops layout; the images layout
is described below) with a pool of threads, assembles
batches ahead of the consumer (in pinned memory when the device is CUDA), and does everything that
is arithmetic on the device: int16 -> float, the DCT-domain horizontal flip, dequantization and
normalization, or the pixel reconstruction for the pixel baselines.

Order of an epoch (a pure function of ``seed``, ``epoch``, ``rank``, ``world_size`` and the store)
---------------------------------------------------------------------------------------------------
1. Epoch ``e`` reads view ``e mod V``. Samples whose label is -1 (failed conversions) are skipped.
2. ``shuffle=True``: the chunks of the split are permuted with ``default_rng([seed, e])``, grouped
   ``window_chunks`` at a time in that order, and the samples of each window are permuted; the
   concatenation is the epoch's *stream* (the same on every rank). ``shuffle=False``: store order.
3. Distributed split of the stream of ``T`` samples over ``W`` ranks with batch size ``B``: every rank
   yields ``L`` batches and takes one contiguous piece of the stream (so ranks read disjoint chunks,
   except the chunks where two pieces meet).

   - ``drop_last=True``: ``L = T // (W*B)`` full batches per rank; the stream's last
     ``T - L*W*B`` samples (random ones when shuffling) are not yielded this epoch.
   - ``drop_last=False``: ``L = ceil(T / (W*B))``; the ``R = T - (L-1)*W*B`` samples of the last
     round are spread as evenly as possible, rank ``r`` getting ``R//W + (r < R%W)`` of them as its
     (possibly smaller) last batch. Every sample of the epoch is yielded exactly once over all ranks.
     Only when ``R < W`` do some ranks have nothing left for their last batch: that batch then holds a
     single **padding sample** (all-zero coefficients, label **-1**, never flipped). Use
     ``F.cross_entropy(..., ignore_index=-1)`` / count ``labels >= 0`` so metrics count each sample
     once; :attr:`DCTLoader.num_samples` is the number of real samples a rank yields.
4. Flips (``flip``): sample ``n`` of epoch ``e`` is flipped when ``default_rng([seed, e, 1]).random(N)[n] < 0.5``.
   The exact DCT-domain flip is done in two free halves: the block columns are reversed by the
   copy that gathers the sample into its batch (host), and the coefficients of odd horizontal
   frequency ``u`` are negated by the per-sample dequantization scale (device). It equals the
   real-valued DCT of the mirrored crop exactly (see :data:`jdct_cli.jpegmath.blockdct.FLIP_SIGN`).

Resuming: ``state_dict()`` holds the epoch and the number of batches already yielded; a loader given
it by ``load_state_dict()`` yields exactly the remaining batches of that epoch (same samples, same
flips), provided seed, world size, batch size, shuffle, drop_last and window are the same.

Memory (CPU): every large buffer is reused rather than allocated afresh, because a fresh page costs a
page fault (that was a fifth of a sample's CPU time): zarr decodes into recycled chunk buffers (its
``out=``), the int16 batch buffers outlive an iteration, and the float batches come from
:class:`_OutputPool`, which hands a batch's memory out again only once no tensor refers to it.

Threads and forks: reads go through zarr's public API (``arr[v, c0:c1]`` on chunk boundaries) from
a ``ThreadPoolExecutor``; zarr >= 3.1 resets its event loop in forked children, and the loader
re-opens its arrays when it finds itself in another process, so loaders created (or iterated) after
a fork and several loaders iterating at once in one process are safe (both are tested). A store on
object storage is read through obstore, which is not fork-safe: such a loader works in spawned
processes (torchrun, spawn/forkserver pools; it pickles) but refuses to read in a forked child.

The images layout (:data:`LAYOUTS`; ``jdct convert --layout images``: each image once, as a JPEG)
-----------------------------------------------------------------------------------------------
Order, distribution over ranks, padding, flips and resuming are the same (a single view). What a
batch is made of differs: every sample gets a fresh crop in every epoch.

- Box: :meth:`DCTLoader.crop_boxes`, a pure function of ``(seed, epoch, sample)``: torchvision's
  RandomResizedCrop (``random_crop``, default on the train split) or the val Resize + CenterCrop,
  at the loader's ``size`` S (any multiple of 16, :meth:`DCTLoader.set_size` between epochs).
- Host (the producer thread): the chunks of JPEG bytes, read by the thread pool as the crops
  layout reads coefficient chunks; per sample its header (sampling factors) and
  :func:`jdct_cli.transforms.crop_geometry` (decoding scale, MCU rectangle); the batch laid out as
  a :class:`jdct_cli.jpegmath.augment.HostBatch` in reused memory (pinned on CUDA); then ONE
  :func:`jdct_cli.jpeg.read_coefficient_rects_batch` call entropy-decodes every sample's
  rectangle into it on ``threads`` C threads (GIL released, each file decoded only down to its
  crop's last MCU row, or only its crop's restart segments). A damaged JPEG is a
  StoreCorruptionError naming the store, the split, the sample and its source file.
- Device: :func:`~jdct_cli.jpegmath.augment.to_device` ->
  :func:`~jdct_cli.jpegmath.augment.reencode` at ``quality`` (default 100; the flip is folded into
  the resize) -> :func:`coefficients_to_inputs` with the IJG tables of that quality and the
  store's statistics: the same outputs as a crops store of size S and that quality would give.
  Padding samples are grey (all-zero coefficients), label -1.

Object storage (``s3://``, ``gs://``, ``az://`` stores, :mod:`jdct_cli.store.location`): each chunk is
one ranged GET per array (the three coefficient arrays of a chunk in flight at once, ``threads``
chunks at a time), the shard indexes are kept in memory, and with ``cache_dir`` every range read is
kept on local disk (bounded by ``cache_bytes``, least recently used out) for the next epochs
(:mod:`jdct_cli.store.cache`). Ranks read only the chunks of their own part of each epoch.
"""
from __future__ import annotations

import functools
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from . import jpeg
from .errors import CheckpointError, ConfigError, JdctError, StorageError, StoreCorruptionError, StoreError
from .jpegmath.augment import HostBatch, reencode, to_device
from .jpegmath.blockdct import FLIP_SIGN, coefficient_indices, idct_blocks, plane_stats_from_coefficients
from .jpegmath.chroma import component_plans, upsample
from .jpegmath.color import ycbcr_to_rgb
from .jpegmath.quant import ijg_tables
from .store import COEFFICIENT_ARRAYS, StoreInfo, array_problem, as_location, read_metadata, storage_error
from .store.read import quiet_zarr
from .transforms import DCT_EIGHTHS, DCT_EIGHTHS_VAL, center_crop_box, crop_geometry, random_resized_crop_box

#: Version of the dict returned by :meth:`DCTLoader.state_dict` (kept inside training checkpoints).
STATE_VERSION = 1
OUTPUTS = ("dct", "ycbcr", "rgb")
#: Store layouts the loader reads: fixed crops as coefficients, or whole JPEGs cropped afresh.
LAYOUTS = ("crops", "images")
#: Crop side of an images store whose metadata records none (no statistics).
DEFAULT_SIZE = 224
# The arrays of an images store the loader reads.
_IMAGES_READ = ("jpeg", "label", "width", "height", "image")
#: torchvision's ImageNet statistics of RGB in [0, 1]: used by ``output="rgb", normalize=True``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A standard deviation below this (a coefficient that never varies, e.g. always 0) is taken as 1.
_MIN_STD = 1e-6
_CACHE_BLOCK_BYTES = 1 << 19  # float output converted per slice of about this size (in L2)
_POLL_S = 0.1  # how often blocked queue operations look at the stop flag
_END = object()


@dataclass(frozen=True)
class EpochPlan:
    """What one rank yields in one epoch.

    ``indices``: int64 ``[sum of batch sizes]`` store sample indices in yield order, -1 = padding;
    ``bounds``: int64 ``[L+1]`` batch ``j`` is ``indices[bounds[j]:bounds[j+1]]``;
    ``flips``: bool ``[N]`` per store sample (all False without flip); ``view``: the view read;
    ``num_samples``: real samples of this rank; ``total_samples``: real samples over all ranks.
    """

    epoch: int
    view: int
    indices: np.ndarray
    bounds: np.ndarray
    flips: np.ndarray
    num_samples: int
    total_samples: int

    @property
    def num_batches(self) -> int:
        return len(self.bounds) - 1

    def batch(self, j: int) -> np.ndarray:
        return self.indices[self.bounds[j]:self.bounds[j + 1]]


@dataclass(frozen=True)
class RankShare:
    """One rank's part of an epoch's stream of ``T`` samples (see the module docstring, step 3).

    ``start``: its first position in the stream; ``num_batches``: batches every rank yields;
    ``last_batch``: real samples of its last batch (0: that batch is one padding sample);
    ``num_samples``: its real samples; ``total_samples``: real samples over all ranks.
    """

    start: int
    num_batches: int
    batch_size: int
    last_batch: int
    num_samples: int
    total_samples: int

    def sizes(self) -> list[int]:
        """Samples per batch, padding included."""
        if not self.num_batches:
            return []
        return [self.batch_size] * (self.num_batches - 1) + [max(self.last_batch, 1)]


def rank_share(total: int, world_size: int, batch_size: int, rank: int, drop_last: bool) -> RankShare:
    """The one split of ``total`` stream samples over ``world_size`` ranks in batches of ``batch_size``.

    ``drop_last``: ``T // (W*B)`` full batches each. Otherwise ``ceil(T / (W*B))`` batches, the
    last round's samples spread as evenly as possible (rank ``r`` gets ``R//W + (r < R%W)``), so
    every sample is taken exactly once.
    """
    w, b, r = world_size, batch_size, rank
    if drop_last:
        nb = total // (w * b)
        return RankShare(start=r * nb * b, num_batches=nb, batch_size=b, last_batch=b if nb else 0,
                         num_samples=nb * b, total_samples=nb * b * w)
    nb = -(-total // (w * b))
    if nb == 0:
        return RankShare(start=0, num_batches=0, batch_size=b, last_batch=0, num_samples=0, total_samples=0)
    q, extra = divmod(total - (nb - 1) * w * b, w)
    last = q + (1 if r < extra else 0)
    return RankShare(start=r * (nb - 1) * b + r * q + min(r, extra), num_batches=nb, batch_size=b, last_batch=last,
                     num_samples=(nb - 1) * b + last, total_samples=total)


def _default_rank_world(rank, world_size):
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))


class DCTLoader:
    """Batches of one split of a jdct store (see the module docstring for order, padding, resuming).

    Iterating yields ``(inputs, labels)`` on ``device``; ``labels`` int64 ``[B]`` (-1 = padding).

    - ``output="dct"``: ``inputs = (y, cb, cr)``, float ``[B,64,S/8,S/8]``, ``[B,64,S/16,S/16]`` x2,
      channel ``8*v+u``: coefficients dequantized with the store's quant tables, then (``normalize``)
      standardized per channel with the store's ``stats`` (``(c*q - mean)/std``).
    - ``output="rgb"``: ``inputs`` float ``[B,3,S,S]``, RGB clamped to [0, 1] (``normalize``: then
      standardized with torchvision's ImageNet mean/std), reconstructed from the same coefficients:
      block IDCT, bilinear (libjpeg "fancy") chroma upsampling, JFIF colour conversion.
    - ``output="ycbcr"``: the same before colour conversion, clamped to [0, 1] (``normalize``: minus
      the plane's pixel mean, over its std, both derived exactly from the coefficient ``stats``
      by Parseval, see :func:`jdct_cli.jpegmath.blockdct.plane_stats_from_coefficients`).

    Arguments: ``store`` path; ``split``; ``batch_size`` per rank; ``shuffle`` (default: train
    split only); ``seed``; ``rank``/``world_size`` (default: torch.distributed's when initialised,
    else 0/1); ``threads`` chunks read concurrently (zarr decompresses them in its own pool, sized
    by ``zarr.config`` ``threading.max_workers``); ``device``; ``drop_last`` (default: train
    split only); ``flip`` random horizontal flips (default: train split only); ``output``; ``dtype``
    of the inputs; ``normalize``; ``window_chunks`` chunks per shuffle window; ``prefetch_batches``
    batches assembled ahead; ``channels_last`` (default: on CUDA devices); ``stats``: the
    per-channel statistics ``normalize`` standardizes with (the store's ``stats`` layout), instead of
    the store's own: a network evaluated on another store must see its *training* store's
    normalization (dequantization always uses this store's quant tables). ``storage_options``:
    for a store given by URL (``s3://...``; see :mod:`jdct_cli.store.location`; credentials and
    endpoint otherwise come from the environment); ``cache_dir``: keep every byte range read on
    local disk, at most ``cache_bytes`` (default 32 GiB) for the whole folder.

    Images layout only (a crops store has both fixed: ConfigError when they differ from it):
    ``size`` S, the crop side in pixels (a multiple of 16; default: the size the store's
    statistics were computed at, else 224; :meth:`set_size` changes it between epochs);
    ``quality`` the IJG quality the fresh crops are quantized with (default 100); ``random_crop``
    (default: train split only): a RandomResizedCrop per sample and epoch, else the val
    Resize + CenterCrop. See "The images layout" in the module docstring.

    Raises SourceNotFoundError / StoreError / IncompleteStoreError / StoreVersionError for an unusable
    store or split, StorageError when an object store fails, ConfigError for bad arguments.
    """

    def __init__(self, store, split: str = "train", *, batch_size: int, shuffle: Optional[bool] = None,
                 seed: int = 0, rank: Optional[int] = None, world_size: Optional[int] = None,
                 threads: Optional[int] = None, device="cpu", drop_last: Optional[bool] = None,
                 flip: Optional[bool] = None, output: str = "dct", dtype: torch.dtype = torch.float32,
                 normalize: bool = True, window_chunks: int = 8, prefetch_batches: int = 4,
                 channels_last: Optional[bool] = None, stats: Optional[dict] = None,
                 storage_options: Optional[Mapping[str, Any]] = None, cache_dir=None,
                 cache_bytes: Optional[int] = None, size: Optional[int] = None, quality: Optional[int] = None,
                 random_crop: Optional[bool] = None):
        self.info: StoreInfo = read_metadata(as_location(store, storage_options))
        self.location = self.info.location
        self.path = self.info.path  # a Path, or the store's URL
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.cache_bytes = cache_bytes
        self.split = split
        self._split_meta = self.info.split(split)  # StoreError naming the store when absent
        self._layout = self.info.layout
        self.layout = self.info.layout_name
        is_train = split == "train"
        self.random_crop = is_train if random_crop is None else bool(random_crop)
        self.shuffle = is_train if shuffle is None else bool(shuffle)
        self.drop_last = is_train if drop_last is None else bool(drop_last)
        self.flip = is_train if flip is None else bool(flip)
        self.seed = int(seed)
        self.rank, self.world_size = _default_rank_world(rank, world_size)
        self.batch_size = int(batch_size)
        self.threads = int(threads) if threads is not None else max(1, min(4, os.cpu_count() or 1))
        self.window_chunks = int(window_chunks)
        self.prefetch_batches = int(prefetch_batches)
        self.output = output
        self.dtype = dtype
        self.normalize = bool(normalize)
        self.device = torch.device(device)
        self.channels_last = (self.device.type == "cuda") if channels_last is None else bool(channels_last)
        # normalization statistics: the store's own unless given (a model keeps its training store's)
        self.stats = stats
        self._check_args()
        self._set_size_quality(size, quality)

        self.classes = self.info.classes
        self.views = self._split_meta.views
        self.num_store_samples = self._split_meta.num_samples
        self.chunk_samples = self._layout.chunk_samples
        self._pid = None
        self._arrays = None
        self._open()
        self._check_layout()
        try:
            labels = np.asarray(self._arrays["label"][:], dtype=np.int64)
        except Exception as exc:  # zarr raises many types for damaged data
            mapped = None if self.location.is_local else storage_error(exc, self.location, op="read")
            if mapped is not None:
                raise mapped from None
            raise StoreCorruptionError(f"cannot read {split}/label ({exc})", self.path) from None
        if labels.size and (int(labels.max()) >= len(self.classes) or int(labels.min()) < -1):
            bad = int(labels.max()) if int(labels.max()) >= len(self.classes) else int(labels.min())
            raise StoreCorruptionError(f"{split}/label holds {bad}, not a class index of the store's "
                                       f"{len(self.classes)} classes nor -1 (failed sample)", self.path)
        self._labels = labels.astype(np.int32)  # half the memory of int64 for large stores
        if self.layout == "images":
            # per-sample facts the host needs before decoding (int32, a few bytes per sample)
            self._facts = {name: self._read_whole(name) for name in ("width", "height", "image")}
        self._valid = [np.flatnonzero(labels[v] >= 0) for v in range(self.views)]
        if self.drop_last and any(len(v) < self.world_size * self.batch_size for v in self._valid):
            raise ConfigError(
                f"split {split!r} has {min(len(v) for v in self._valid)} usable samples, fewer than one batch "
                f"per rank ({self.world_size} x {self.batch_size}); use a smaller batch size (jdct train --batch-size) or drop_last=False",
                self.path)
        if not self.drop_last and any(len(v) == 0 for v in self._valid):
            raise StoreError(f"split {split!r} has no usable samples (every conversion failed)", self.path)
        # Memory reused across batches and epochs instead of fresh allocations: freshly mapped pages
        # cost a page fault each (~0.1 ms of a sample's ~0.5 ms on the CPU without this reuse).
        self._reset_memory()
        self.epoch = 0
        self._resume_batch = 0   # first batch of the next iteration (set by load_state_dict)
        self._position = 0       # batches of self.epoch handed out so far

    # Reused memory and its lock stay with the process: a pickled loader (spawned workers) starts afresh,
    # and opens the store again there.
    _UNPICKLED = ("_pools_lock", "_idle_pools", "_outputs", "_free_chunks", "_chunk_pid", "_device_consts", "_arrays",
                  "_flat_pools")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._arrays, self._pid = None, None
        self._reset_memory()

    def _reset_memory(self):
        self._device_consts = None
        self._pools_lock = threading.Lock()
        self._idle_pools: list[_BufferPool] = []  # int16 batch buffers of finished iterations
        self._outputs = _OutputPool()
        self._free_chunks: list[dict[str, np.ndarray]] = []  # decoded chunks no longer needed
        self._chunk_pid = os.getpid()
        self._flat_pools: list["_FlatPool"] = []  # host batch buffers of the images layout

    # ---------------------------------------------------------------- set-up and validation
    def _check_args(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not in 0..world_size-1 (world_size {self.world_size})")
        if self.threads < 1 or self.window_chunks < 1 or self.prefetch_batches < 1:
            raise ConfigError("threads, window_chunks and prefetch_batches must be >= 1")
        if self.output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)} (got {self.output!r})")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ConfigError(f"dtype must be a floating torch dtype (got {self.dtype!r})")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device} requested but CUDA is not available")
        if self.cache_bytes is not None and int(self.cache_bytes) < 1:
            raise ConfigError(f"cache_bytes must be positive (got {self.cache_bytes})")

    def _set_size_quality(self, size: Optional[int], quality: Optional[int]) -> None:
        """``self.size`` and ``self.quality``: chosen here for an images store, the store's own for a
        crops store (ConfigError when asked for others)."""
        meta = self.info.metadata
        if self.layout == "images":
            stats = meta.stats
            self.quality = 100 if quality is None else int(quality)
            if not 1 <= self.quality <= 100:
                raise ConfigError(f"quality must be 1..100 (got {quality})")
            self.set_size(size if size is not None else (stats.size if stats is not None else DEFAULT_SIZE))
            return
        self.size = meta.size
        self.quality = meta.quality
        if size is not None and int(size) != meta.size:
            raise ConfigError(f"this crops-layout store holds crops of {meta.size} px; a size of {size} needs an "
                              "images-layout store (jdct convert --layout images), or convert again at that --size",
                              self.path)
        if quality is not None and int(quality) != meta.quality:
            raise ConfigError(f"this crops-layout store holds coefficients at quality {meta.quality}; a quality of "
                              f"{quality} needs an images-layout store (jdct convert --layout images)", self.path)

    def set_size(self, size: int) -> None:
        """The crop side S (pixels, a positive multiple of 16) of the next iterations: any size on an
        images store (progressive resizing), only the stored size on a crops store (ConfigError)."""
        size = int(size)
        if self.layout != "images":
            if size != self.info.metadata.size:
                raise ConfigError(f"this crops-layout store holds crops of {self.info.metadata.size} px, not {size} "
                                  "(only an images-layout store gives crops of any size)", self.path)
            return
        if size < 16 or size % 16:
            raise ConfigError(f"size must be a positive multiple of 16 (4:2:0 blocks), got {size}")
        self.size = size

    def _read_whole(self, name: str) -> np.ndarray:
        """The whole ``[view 0]`` of a per-sample array of an images store, int32."""
        try:
            return np.asarray(self._arrays[name][0, :], dtype=np.int32)
        except Exception as exc:  # zarr raises many types for damaged data
            mapped = None if self.location.is_local else storage_error(exc, self.location, op="read")
            if mapped is not None:
                raise mapped from None
            raise StoreCorruptionError(f"cannot read {self.split}/{name} ({exc})", self.path) from None

    def _zarr_target(self):
        """What zarr opens: the local path, or (object store, or any store with ``cache_dir``) the
        store wrapped with the shard-index memory and the disk cache (:mod:`jdct_cli.store.cache`)."""
        from .store.cache import DEFAULT_CACHE_BYTES, DiskCache, caching_store

        local = self.location.is_local
        if local and self.cache_dir is None:
            return self.location.zarr_target(read_only=True)
        disk = None
        if self.cache_dir is not None:
            disk = DiskCache(self.cache_dir, self.location.cache_namespace(self.info.zarr_json),
                             int(self.cache_bytes or DEFAULT_CACHE_BYTES))
        if local:
            from zarr.storage import LocalStore

            return caching_store(LocalStore(self.location.path, read_only=True), disk)
        return caching_store(self.location.zarr_target(read_only=True), disk)

    def _open(self):
        """(Re)open the split's arrays in this process (zarr objects are not carried across forks)."""
        import zarr

        names = COEFFICIENT_ARRAYS + ("label",) if self.layout == "crops" else _IMAGES_READ
        try:
            with quiet_zarr():
                group = zarr.open_group(self._zarr_target(), mode="r", zarr_format=3)
                self._arrays = {name: group[f"{self.split}/{name}"] for name in names}
        except KeyError as exc:
            raise StoreCorruptionError(f"split {self.split!r} lacks its array {exc}", self.path) from None
        except StorageError:
            raise
        except Exception as exc:
            mapped = storage_error(exc, self.location)
            if mapped is not None:
                raise mapped from None
            raise StoreError(f"cannot open the zarr arrays of split {self.split!r} ({exc})", self.path) from None
        self._pid = os.getpid()

    def _arrays_here(self):
        if self._pid != os.getpid():
            if self._pid is not None and not self.location.is_local:
                # obstore's client (threads, connections) does not survive fork: a child that uses
                # it, even through a new client, can hang or crash
                raise StoreError("a loader reading an object store cannot be used in a forked process (obstore is "
                                 "not fork-safe): create it in the child, or start children with spawn or "
                                 "forkserver (a loader pickles)", self.path)
            self._open()
        return self._arrays

    def _check_layout(self):
        """The arrays read are those the metadata describes (shape, dtype, chunking)."""
        for name, arr in self._arrays.items():
            problem = array_problem(self._layout, self._split_meta, name, arr)
            if problem is not None:
                raise StoreCorruptionError(f"{self.split}/{name} {problem}", self.path)

    # ---------------------------------------------------------------- order
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields (its view, order and flips)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._resume_batch = 0
            self._position = 0
        self.epoch = epoch

    def _stream(self, epoch: int) -> np.ndarray:
        """int64 store indices of every usable sample of view ``epoch % V`` in the epoch's global order."""
        valid = self._valid[epoch % self.views]
        if not self.shuffle:
            return valid
        rng = np.random.default_rng([self.seed, epoch])
        k = -(-self.num_store_samples // self.chunk_samples)
        position = np.empty(k, dtype=np.int64)
        position[rng.permutation(k)] = np.arange(k)
        window = position[valid // self.chunk_samples] // self.window_chunks
        key = rng.random(len(valid))
        return valid[np.lexsort((key, window))]

    def plan(self, epoch: Optional[int] = None) -> EpochPlan:
        """This rank's :class:`EpochPlan` for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        stream = self._stream(epoch)
        share = self._share(epoch)
        indices = stream[share.start:share.start + share.num_samples]
        if share.num_batches and share.last_batch == 0:  # nothing left for the last batch: one padding sample
            indices = np.concatenate([indices, np.array([-1], dtype=np.int64)])
        bounds = np.concatenate([[0], np.cumsum(share.sizes(), dtype=np.int64)]).astype(np.int64)
        if self.flip:
            flips = np.random.default_rng([self.seed, epoch, 1]).random(self.num_store_samples) < 0.5
        else:
            flips = np.zeros(self.num_store_samples, dtype=bool)
        return EpochPlan(epoch=epoch, view=epoch % self.views, indices=np.asarray(indices, dtype=np.int64),
                         bounds=bounds, flips=flips, num_samples=share.num_samples,
                         total_samples=share.total_samples)

    def crop_boxes(self, indices, epoch: Optional[int] = None, size: Optional[int] = None) -> np.ndarray:
        """float64 ``(n, 4)``: the crop box ``(x, y, w, h)`` (source pixels of the stored JPEG) of each
        store sample of ``indices`` in ``epoch`` (default: the current one) on an images store, for
        crops of ``size`` (default: the loader's; an iteration passes the size it started with).

        ``random_crop``: torchvision's RandomResizedCrop draw
        (:func:`jdct_cli.transforms.random_resized_crop_box`) from a generator that is a pure
        function of (seed, epoch, sample): Philox keyed by ``SeedSequence([seed, epoch, 2])``, its
        counter's second word the sample index; so a sample gets the same box on every rank and on
        resuming, and a new one every epoch. Else the val Resize + CenterCrop box at ``size``.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        size = self.size if size is None else int(size)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        width, height = self._facts["width"], self._facts["height"]
        out = np.empty((len(indices), 4), dtype=np.float64)
        if not self.random_crop:
            for i, n in enumerate(indices.tolist()):
                out[i] = center_crop_box(int(width[n]), int(height[n]), size)
            return out
        k0, k1 = np.random.SeedSequence([self.seed, epoch, 2]).generate_state(2, np.uint64).tolist()
        key = k0 | (k1 << 64)
        for i, n in enumerate(indices.tolist()):
            rng = np.random.Generator(np.random.Philox(key=key, counter=[0, n, 0, 0]))
            out[i] = random_resized_crop_box(rng, int(width[n]), int(height[n]))
        return out

    def _share(self, epoch: int) -> RankShare:
        """This rank's part of ``epoch`` (its stream length is known without building the order)."""
        return rank_share(len(self._valid[epoch % self.views]), self.world_size, self.batch_size, self.rank,
                          self.drop_last)

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (the same on every rank)."""
        return self._share(self.epoch).num_batches

    @property
    def num_samples(self) -> int:
        """Real (non-padding) samples this rank yields in the current epoch."""
        return self._share(self.epoch).num_samples

    @property
    def total_samples(self) -> int:
        """Real samples yielded by all ranks together in the current epoch."""
        return self._share(self.epoch).total_samples

    # ---------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches already yielded (plus what must match to resume); plain JSON-able dict."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "batches_done": self._position,
                "seed": self.seed, "world_size": self.world_size, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last, "window_chunks": self.window_chunks,
                "split": self.split, "flip": self.flip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch recorded in ``state``: the next iteration yields its remaining batches.

        CheckpointError when the state comes from a loader whose order would differ.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise CheckpointError(f"loader state of unknown version {getattr(state, 'get', lambda k: None)('version')!r}"
                                  f" (this jdct reads {STATE_VERSION})")
        mine = self.state_dict()
        for key in ("seed", "world_size", "batch_size", "shuffle", "drop_last", "window_chunks", "split", "flip"):
            if state.get(key) != mine[key]:
                raise CheckpointError(f"loader state has {key}={state.get(key)!r} but this loader has "
                                      f"{key}={mine[key]!r}: the remaining samples would not be the same")
        self.epoch = int(state["epoch"])
        done = int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise CheckpointError(f"loader state says {done} batches done of an epoch of {len(self)}")
        self._resume_batch = done
        self._position = done

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        start = self._resume_batch
        self._resume_batch = 0
        plan = self.plan(self.epoch)
        self._position = start
        if start >= plan.num_batches:
            return
        run = self._run(plan, start)
        try:
            for item in run:
                out = self._finish_images(*item) if self.layout == "images" else self._finish(*item)
                self._position += 1
                yield out
        finally:
            run.close()

    def host_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The host half of an iteration, without the device step: ``(y, cb, cr, labels, flips)``.

        ``y``/``cb``/``cr`` int16 ``[n, 64, ., .]`` with the flipped samples' block columns already
        reversed (their odd-u signs are not yet changed), ``labels`` int64 ``[n]``, ``flips`` bool
        ``[n]``. The arrays are reused buffers, valid until the next batch is requested. This is the
        CPU work a CUDA run does per batch (it then copies these to the device); it does not
        advance :meth:`state_dict`. Used by ``benchmarks/loader.py``.

        Images layout: ``(host_batch, labels)`` instead, a filled
        :class:`jdct_cli.jpegmath.augment.HostBatch` (each sample's block rectangle, entropy-decoded;
        valid until the next batch is requested) and int64 ``[n]`` labels.
        """
        plan = self.plan(self.epoch)
        run = self._run(plan, 0)
        if self.layout == "images":
            try:
                for hb, n, labels, slot in run:
                    try:
                        yield hb, labels
                    finally:
                        slot.release(None)
            finally:
                run.close()
            return
        try:
            for buf, n, labels, flips in run:
                try:
                    yield tuple(buf.arrays[name][:n] for name in COEFFICIENT_ARRAYS) + (labels, flips)
                finally:
                    buf.release(None)
        finally:
            run.close()

    def _run(self, plan: EpochPlan, start: int) -> "_EpochRun":
        return (_ImagesEpochRun if self.layout == "images" else _EpochRun)(self, plan, start)

    def _take_flat_pool(self, count: int, pin: bool) -> "_FlatPool":
        with self._pools_lock:
            for pool in self._flat_pools:
                if pool.count == count and pool.pin == pin and pool.pid == os.getpid():
                    self._flat_pools.remove(pool)
                    return pool
            self._flat_pools = [p for p in self._flat_pools if p.pid == os.getpid()]
        return _FlatPool(count, pin)

    def _give_flat_pool(self, pool: "_FlatPool") -> None:
        if pool.free.qsize() != pool.count or pool.pid != os.getpid():
            return
        with self._pools_lock:
            if len(self._flat_pools) < 2:
                self._flat_pools.append(pool)

    def _take_pool(self, count: int, shapes, pin: bool) -> "_BufferPool":
        """int16 batch buffers for one iteration: those of a finished iteration when they fit."""
        key = (count, tuple(sorted(shapes.items())), pin)
        with self._pools_lock:
            for pool in self._idle_pools:
                if pool.key == key and pool.pid == os.getpid():
                    self._idle_pools.remove(pool)
                    return pool
            self._idle_pools = [p for p in self._idle_pools if p.pid == os.getpid()]
        stream = torch.cuda.Stream(self.device) if pin else None
        return _BufferPool(count, shapes, pin=pin, stream=stream)

    def _give_pool(self, pool: "_BufferPool") -> None:
        """Keep ``pool`` for the next iteration, only when all its buffers are back (none still
        in the consumer's hands or in flight)."""
        if pool.free.qsize() != pool.count or pool.pid != os.getpid():
            return
        with self._pools_lock:
            if len(self._idle_pools) < 2:
                self._idle_pools.append(pool)

    def _take_chunk_buffers(self) -> dict[str, np.ndarray]:
        """int16 arrays of one chunk per plane (``[chunk_samples, 64, ., .]``), reused when possible."""
        with self._pools_lock:
            if self._chunk_pid == os.getpid() and self._free_chunks:
                return self._free_chunks.pop()
        c, s = self.chunk_samples, self.size
        return {"y": np.empty((c, 64, s // 8, s // 8), np.int16), "cb": np.empty((c, 64, s // 16, s // 16), np.int16),
                "cr": np.empty((c, 64, s // 16, s // 16), np.int16)}

    def _give_chunk_buffers(self, bufs: dict[str, np.ndarray]) -> None:
        with self._pools_lock:
            if self._chunk_pid != os.getpid():  # a forked child starts afresh
                self._free_chunks, self._chunk_pid = [], os.getpid()
            # as many as one iteration holds at once (window + read-ahead), not more
            if len(self._free_chunks) < self.window_chunks + 2 * self.threads + 1:
                self._free_chunks.append(bufs)

    # ---------------------------------------------------------------- device side
    def _consts(self):
        """Per-channel scale/shift (dct) or IDCT matrix, quant tables, pixel stats (pixels), on the device."""
        if self._device_consts is None or self._device_consts[0] != self.quality:
            meta = self.info.metadata
            stats = self.stats
            if stats is None and meta.stats is not None:
                stats = meta.stats.by_plane()
            if self.layout == "images":
                luma, chroma = ijg_tables(self.quality)
                quant = {"y": tuple(luma), "cb": tuple(chroma), "cr": tuple(chroma)}
            else:
                quant = meta.quant_tables.by_plane()
            self._device_consts = (self.quality, device_constants(
                quant, stats, output=self.output, normalize=self.normalize, device=self.device, path=self.path))
        return self._device_consts[1]

    def _finish_images(self, hb: HostBatch, n: int, labels: np.ndarray, slot: "_Slot"):
        """A filled host batch -> (inputs, labels) on the device: the re-encode augmentation
        (:func:`jdct_cli.jpegmath.augment.reencode`: decode the rectangles, crop + resize + flip,
        4:2:0, DCT, quantize at ``quality``), then :func:`coefficients_to_inputs` (flips are already
        in the crops). Hands the host memory back once the device no longer reads it."""
        consts = self._consts()
        cuda = self.device.type == "cuda"
        db = to_device(hb, self.device)
        planes = reencode(db, quality=self.quality)
        labels_t = torch.from_numpy(labels)
        if cuda:
            # non-blocking: a blocking copy would wait for the previous training step on the stream
            labels_t = labels_t.to(self.device, non_blocking=True)
            slot.release(db.copied)  # reused by the producer once the copies have completed
        inputs = coefficients_to_inputs(planes, consts, self.output, dtype=self.dtype,
                                        channels_last=self.channels_last)
        if not cuda:
            slot.release(None)  # reencode read the host memory synchronously
        return inputs, labels_t

    def _finish(self, buf: "_Buffer", n: int, labels: np.ndarray, flips: np.ndarray):
        """int16 batch in ``buf`` -> (inputs, labels) on the device; hands ``buf`` back to its pool."""
        consts = self._consts()
        buf.tensors["labels"][:n] = torch.from_numpy(labels)
        buf.tensors["flips"][:n] = torch.from_numpy(flips)
        names = COEFFICIENT_ARRAYS + ("labels", "flips")
        host = [buf.tensors[name][:n] for name in names]
        if self.device.type == "cuda":
            # Everything (labels and flips included) leaves pinned memory on a side stream, so the
            # host never waits for the training step queued on the current stream.
            stream = buf.pool.stream
            with torch.cuda.stream(stream):
                moved = [t.to(self.device, non_blocking=True) for t in host]
                event = torch.cuda.Event()
                event.record(stream)
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for t in moved:
                t.record_stream(current)
            buf.release(event)  # the pinned buffer is reused once the copy has finished
            released = True
        else:
            moved = host[:3] + [host[3].clone(), host[4].clone()]  # labels/flips outlive the reused buffer
            released = False
        planes, labels_t = moved[:3], moved[3]
        out = None
        if self.output == "dct" and self.device.type == "cpu":
            # float32 planes in reused memory (see _OutputPool); a batch the consumer still holds is
            # never overwritten. For another dtype they are scratch, cast afterwards.
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            full = [(self.batch_size,) + tuple(p.shape[1:]) for p in planes]
            out = [x[:p.shape[0]] for x, p in zip(self._outputs.take(full, fmt), planes)]
        # Flip, second half: the block columns were reversed while gathering; negating the odd-u
        # coefficients is folded into the per-sample dequantization scale (no extra pass).
        inputs = coefficients_to_inputs(planes, consts, self.output, flips=moved[4] if flips.any() else None,
                                        out=out, dtype=self.dtype, channels_last=self.channels_last)
        if not released:
            buf.release(None)
        return inputs, labels_t


def coefficients_to_inputs(planes, consts: dict[str, Any], output: str, *, flips=None, out=None,
                           dtype: torch.dtype = torch.float32, channels_last: bool = False):
    """Quantized coefficients -> model inputs: the one definition, used by :class:`DCTLoader` (both
    layouts) and by :func:`jdct_cli.evaluate.model_inputs` (predict), so all give the same tensors.

    ``planes``: ``(y, cb, cr)`` tensors ``[B, 64, S/8, S/8]``, ``[B, 64, S/16, S/16]`` twice, on the
    device, int16 or integer-valued float (quantized with the tables ``consts`` was built from).
    ``consts``: :func:`device_constants`. ``flips``: bool ``[B]`` (None: none) of samples whose block
    columns are already reversed and whose odd horizontal frequencies are to be negated here (the
    exact DCT-domain flip). ``out``: float32 tensors of the planes' shapes to write the ``"dct"``
    output into (the loader's reused CPU memory), else fresh ones.

    Returns for ``output="dct"`` ``(y, cb, cr)``: ``c*scale + shift`` per channel (dequantized,
    standardized when ``consts`` says so); for ``"rgb"``/``"ycbcr"`` one tensor ``[B, 3, S, S]``
    (:func:`dequantized_to_pixels`). In ``dtype``; ``channels_last`` memory format on request.
    """
    device = planes[0].device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    flip_t = None if flips is None else flips.view(-1, 1, 1, 1)
    if output == "dct":
        if out is None:
            out = [torch.empty(p.shape, dtype=torch.float32, device=device, memory_format=fmt) for p in planes]
        outs = []
        for name, p, x in zip(COEFFICIENT_ARRAYS, planes, out):
            scale, shift = consts[name]
            if flip_t is not None:
                scale = torch.where(flip_t, scale * consts["sign"], scale)
            # int16 -> float, dequantize (+ standardize): three passes, done a few samples at a
            # time on the CPU so that they run in the cache rather than three times through memory.
            step = max(1, _CACHE_BLOCK_BYTES // (4 * x[0].numel())) if device.type == "cpu" else len(x)
            for i in range(0, len(x), step):
                sc = scale[i:i + step] if scale.shape[0] > 1 else scale
                x[i:i + step].copy_(p[i:i + step]).mul_(sc).add_(shift)
            outs.append(x if dtype == torch.float32 else x.to(dtype))
        return tuple(outs)
    deq = []
    for name, p in zip(COEFFICIENT_ARRAYS, planes):
        scale = consts[name][0]
        scale = torch.where(flip_t, scale * consts["sign"], scale) if flip_t is not None else scale
        deq.append(p.to(torch.float32).mul_(scale))
    x = dequantized_to_pixels(deq, consts, output)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x if dtype == torch.float32 else x.to(dtype)


def device_constants(quant: dict, stats: Optional[dict], *, output: str, normalize: bool, device,
                     path=None) -> dict[str, Any]:
    """The per-channel constants that turn int16 coefficients into model inputs, on ``device``
    (the normalization of :func:`coefficients_to_inputs`).

    ``quant``: {"y", "cb", "cr"} -> 64 quantization steps of the coefficients to be converted;
    ``stats``: the store's ``stats`` ({plane: {"mean", "std"}}, 64 floats each, dequantized units).
    Returns {plane: (scale, shift)} float32 ``[1, 64, 1, 1]`` each, so that ``c*scale + shift`` is the
    dequantized (``output="dct"`` and ``normalize``: standardized, ``(c*q - mean)/std``)
    coefficient; ``"sign"`` float32 ``[1, 64, 1, 1]`` (-1 at odd horizontal frequency, for flips); for
    pixel outputs also ``"pix_mean"``/``"pix_std"`` float32 ``[1, 3, 1, 1]`` (in [0, 1] units).
    StoreError (naming ``path``) when normalizing needs statistics that are absent.
    """
    stats = stats or {}
    consts: dict[str, Any] = {}
    for name in COEFFICIENT_ARRAYS:
        q = np.asarray(quant[name], np.float64)
        scale, shift = q, np.zeros(64)
        if normalize and output == "dct":
            if name not in stats:
                raise StoreError(f"the store has no statistics for {name!r}: use normalize=False", path)
            mean = np.asarray(stats[name]["mean"], np.float64)
            std = np.asarray(stats[name]["std"], np.float64)
            std = np.where(std < _MIN_STD, 1.0, std)
            scale, shift = q / std, -mean / std
        consts[name] = (torch.as_tensor(scale, dtype=torch.float32, device=device).view(1, 64, 1, 1),
                        torch.as_tensor(shift, dtype=torch.float32, device=device).view(1, 64, 1, 1))
    if output != "dct":
        if output == "rgb":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            if normalize and not all(n in stats for n in COEFFICIENT_ARRAYS):
                raise StoreError("the store has no coefficient statistics: use normalize=False", path)
            pairs = [plane_stats_from_coefficients(stats[n]["mean"], stats[n]["std"])
                     if normalize else (0.0, 255.0) for n in COEFFICIENT_ARRAYS]
            mean = [m / 255.0 for m, _ in pairs]
            std = [s / 255.0 for _, s in pairs]
        if not normalize:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        consts["pix_mean"] = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        consts["pix_std"] = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    consts["sign"] = torch.as_tensor(FLIP_SIGN.astype(np.float32), device=device).view(1, 64, 1, 1)
    return consts


def dequantized_to_pixels(deq, consts: dict[str, Any], output: str) -> torch.Tensor:
    """Dequantized planes (y ``[B,64,S/8,S/8]``, cb, cr ``[B,64,S/16,S/16]``, float32) -> pixel inputs
    ``[B, 3, S, S]``: block IDCT, bilinear (libjpeg's fancy filter in float) chroma upsampling,
    (``"rgb"``) float JFIF colour conversion, clamp to [0, 1], then minus ``consts["pix_mean"]`` over
    ``consts["pix_std"]`` (see :func:`device_constants`)."""
    y, cb, cr = deq
    n = y.shape[0]
    luma = idct_blocks(y)[:, None]
    chroma = upsample(idct_blocks(torch.cat([cb, cr], dim=0))[:, None], (2, 2), exact=False)
    planes = (luma, chroma[:n], chroma[n:])
    if output == "rgb":
        planes = ycbcr_to_rgb(*planes)
    x = torch.cat(planes, dim=1).clamp_(0.0, 255.0).div_(255.0)
    return x.sub_(consts["pix_mean"]).div_(consts["pix_std"])


def read_planes(arrays: dict, selection, outs: list, *, executor=None) -> None:
    """Read ``selection`` of the coefficient arrays (``arrays[name]`` for y, cb, cr) into ``outs``
    (numpy arrays of the selection's shape, written in place). ``executor``: a thread pool on which
    the three reads are in flight at once (over a network each is a round trip: a chunk then costs
    one round trip of latency instead of three); None: one after the other, in this thread."""
    if executor is None:
        for name, out in zip(COEFFICIENT_ARRAYS, outs):
            arrays[name].get_basic_selection(selection, out=_nd_buffer(out))
        return
    futures = [executor.submit(arrays[name].get_basic_selection, selection, out=_nd_buffer(out))
               for name, out in zip(COEFFICIENT_ARRAYS, outs)]
    for fut in futures:
        fut.result()


def _nd_buffer(array: np.ndarray):
    """``array`` wrapped as the ``out=`` of zarr's selection methods (written in place)."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().nd_buffer.from_numpy_array(array)


class _Buffer:
    """One batch's int16 planes (pinned when the device is CUDA), reused through its pool."""

    def __init__(self, pool: "_BufferPool", shapes: dict[str, tuple[int, ...]], pin: bool):
        self.pool = pool
        self.tensors = {name: torch.empty(shape, dtype=torch.int16, pin_memory=pin) for name, shape in shapes.items()}
        self.arrays = {name: t.numpy() for name, t in self.tensors.items()}
        batch = shapes["y"][0]
        self.tensors["labels"] = torch.empty(batch, dtype=torch.int64, pin_memory=pin)
        self.tensors["flips"] = torch.empty(batch, dtype=torch.bool, pin_memory=pin)
        self.event = None

    def release(self, event) -> None:
        self.event = event
        self.pool.free.put(self)


class _BufferPool:
    def __init__(self, count: int, shapes, pin: bool, stream):
        self.free: "queue.Queue[_Buffer]" = queue.Queue()
        self.stream = stream
        self.count = count
        self.key = (count, tuple(sorted(shapes.items())), pin)
        self.pid = os.getpid()
        for _ in range(count):
            self.free.put(_Buffer(self, shapes, pin))


class _OutputPool:
    """float32 CPU batches handed out again once nothing refers to them any more.

    Each entry is a full-batch tensor per plane plus a handle on its storage; the loader only ever
    yields *views* of an entry, so every tensor the consumer holds (or derives: views, ``.numpy()``,
    autograd's saved tensors, DLPack) keeps a reference on the storage. An entry is reused only when
    its storage's use count is back to the pool's own two references (the approach of torch's own
    ``cudagraph_trees`` for its static outputs) and it was never moved to shared memory (a tensor
    sent to another process). If every entry is in use, a fresh batch is allocated and not kept.
    """

    MAX_ENTRIES = 3  # the consumer usually holds one batch while the next is made

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: list[tuple[tuple, list[torch.Tensor], list[Any]]] = []
        self.use_count = getattr(torch._C, "_storage_Use_Count", None)  # private: pool off if absent
        self.pid = os.getpid()

    def _free(self, storages) -> bool:
        return all(self.use_count(st._cdata) == 2 and not st.is_shared() for st in storages)

    def take(self, shapes: list[tuple[int, ...]], fmt) -> list[torch.Tensor]:
        """float32 tensors of ``shapes`` in memory format ``fmt`` (contents undefined); slice them
        before handing them out (the pool's own tensors must stay with the pool)."""
        key = (tuple(shapes), fmt)
        if self.use_count is not None:
            with self.lock:
                if os.getpid() != self.pid:  # a forked child starts afresh
                    self.entries, self.pid = [], os.getpid()
                for entry_key, tensors, storages in self.entries:
                    if entry_key == key and self._free(storages):
                        return tensors
                tensors = [torch.empty(s, dtype=torch.float32, memory_format=fmt) for s in shapes]
                if len(self.entries) < self.MAX_ENTRIES:
                    self.entries.append((key, tensors, [t.untyped_storage() for t in tensors]))
                return tensors
        return [torch.empty(s, dtype=torch.float32, memory_format=fmt) for s in shapes]


class _EpochRun:
    """One iteration over an :class:`EpochPlan` from batch ``start``: a producer thread assembling
    int16 batches from chunks read by a thread pool, ``prefetch_batches`` ahead of the consumer."""

    def __init__(self, loader: DCTLoader, plan: EpochPlan, start: int):
        self.loader = loader
        self.plan = plan
        self.start = start
        self.stop = threading.Event()
        self.out: "queue.Queue" = queue.Queue(maxsize=loader.prefetch_batches)
        b, s = loader.batch_size, loader.size
        shapes = {"y": (b, 64, s // 8, s // 8), "cb": (b, 64, s // 16, s // 16), "cr": (b, 64, s // 16, s // 16)}
        cuda = loader.device.type == "cuda"
        self.pool = loader._take_pool(loader.prefetch_batches + 2, shapes, pin=cuda)
        self.arrays = loader._arrays_here()
        self.remote = not loader.location.is_local
        self.executor = ThreadPoolExecutor(max_workers=loader.threads, thread_name_prefix="jdct-read")
        # object stores: each chunk's three arrays are read at once (see read_planes)
        self.io = (ThreadPoolExecutor(max_workers=3 * loader.threads, thread_name_prefix="jdct-io")
                   if self.remote else None)
        self.thread = threading.Thread(target=self._produce_guarded, name="jdct-loader", daemon=True)
        self.thread.start()

    # -- producer side
    def _read_chunk(self, view: int, chunk: int):
        c = self.loader.chunk_samples
        lo, hi = chunk * c, min((chunk + 1) * c, self.loader.num_store_samples)
        bufs = self.loader._take_chunk_buffers()
        try:
            # zarr decodes straight into reused buffers (its `out=`): no fresh 6 MB arrays to fault in.
            parts = [bufs[name][:hi - lo] for name in COEFFICIENT_ARRAYS]
            read_planes(self.arrays, (view, slice(lo, hi)), parts, executor=self.io)
            return bufs, tuple(parts)
        except StorageError:
            raise
        except Exception as exc:  # zarr/numcodecs raise many types for damaged data
            raise self._read_error(exc, f"samples {lo}..{hi - 1} of {self.loader.split} view {view}") from None

    def _read_error(self, exc: Exception, what: str) -> Exception:
        """The error a failed chunk read raises: the storage error it maps to on a remote store
        (network, credentials...), else damage in the store (StoreCorruptionError naming ``what``)."""
        mapped = None if not self.remote else storage_error(exc, self.loader.location, op="read")
        if mapped is not None:
            return mapped
        return StoreCorruptionError(f"cannot read {what} ({type(exc).__name__}: {exc})", self.loader.path)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _take_buffer(self):
        """The next free buffer of the pool (a :class:`_Buffer`, or a :class:`_Slot` for images
        stores) once the device has finished reading it; None when the run stops."""
        while not self.stop.is_set():
            try:
                buf = self.pool.free.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if buf.event is not None:
                buf.event.synchronize()
                buf.event = None
            return buf
        return None

    def _produce_guarded(self):
        try:
            self._produce()
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _produce(self):
        loader, plan = self.loader, self.plan
        c = loader.chunk_samples
        for idx, chunk_data in self._schedule():
            buf = self._take_buffer()
            if buf is None:
                return
            n = len(idx)
            real = idx >= 0
            rows = np.flatnonzero(real)
            chunk_ids = idx[rows] // c
            flips = np.zeros(n, dtype=bool)
            flips[rows] = plan.flips[idx[rows]]
            dst = [buf.arrays[name] for name in COEFFICIENT_ARRAYS]
            # One copy per sample straight from the chunk into the batch; for a flipped sample the
            # copy reads the block columns backwards (the flip's reversal costs nothing extra).
            for i, ch, local, flipped in zip(rows.tolist(), chunk_ids.tolist(),
                                             (idx[rows] % c).tolist(), flips[rows].tolist()):
                for out, part in zip(dst, chunk_data[ch][1]):
                    out[i] = part[local, :, :, ::-1] if flipped else part[local]
            pads = np.flatnonzero(~real)
            for name in COEFFICIENT_ARRAYS:
                buf.arrays[name][pads] = 0
            labels = np.full(n, -1, dtype=np.int64)
            labels[rows] = loader._labels[plan.view, idx[rows]]
            if not self._put((buf, n, labels, flips)):
                return
        self._put(_END)

    def _release_chunk(self, result) -> None:
        self.loader._give_chunk_buffers(result[0])

    def _schedule(self):
        """``(indices, chunks)`` per batch from ``start``: ``chunks`` {chunk: what :meth:`_read_chunk`
        returned} for every chunk the batch needs, read ahead on the thread pool (up to
        ``window_chunks + 2*threads`` chunks in memory); a chunk is released after its last batch."""
        loader, plan = self.loader, self.plan
        c = loader.chunk_samples
        batches = [plan.batch(j) for j in range(self.start, plan.num_batches)]
        chunks_of = [np.unique(idx[idx >= 0] // c) for idx in batches]
        first_use: list[int] = []
        first_batch: dict[int, int] = {}
        last_batch: dict[int, int] = {}
        for j, chunks in enumerate(chunks_of):
            for ch in chunks.tolist():
                if ch not in first_batch:
                    first_batch[ch] = j
                    first_use.append(ch)
                last_batch[ch] = j
        lookahead = loader.window_chunks + 2 * loader.threads
        futures: dict[int, Any] = {}
        submitted = 0
        for j, idx in enumerate(batches):
            # Every chunk batch j needs, plus read-ahead up to `lookahead` chunks held in memory.
            while submitted < len(first_use) and (first_batch[first_use[submitted]] <= j or len(futures) < lookahead):
                ch = first_use[submitted]
                futures[ch] = self.executor.submit(self._read_chunk, plan.view, ch)
                submitted += 1
            yield idx, {ch: futures[ch].result() for ch in chunks_of[j].tolist()}
            for ch in chunks_of[j].tolist():
                if last_batch[ch] == j:
                    self._release_chunk(futures.pop(ch).result())

    # -- consumer side
    def __iter__(self):
        while True:
            try:
                item = self.out.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.thread.is_alive() and self.out.empty():
                    raise StoreError("the loader's reading thread stopped unexpectedly", self.loader.path) from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.io is not None:
            self.io.shutdown(wait=False, cancel_futures=True)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loader._give_pool(self.pool)


class _Slot:
    """One int16 host buffer of the images layout (pinned when the device is CUDA), lent to one
    batch at a time; grown when a batch needs more."""

    def __init__(self, pool: "_FlatPool"):
        self.pool = pool
        self.array = np.empty(0, dtype=np.int16)
        self.event = None

    def take(self, elements: int) -> np.ndarray:
        """A flat int16 array of ``elements`` (contents undefined)."""
        if self.array.size < elements:
            grown = max(elements, int(self.array.size * 1.25))
            if self.pool.pin:
                self.array = torch.empty(grown, dtype=torch.int16, pin_memory=True).numpy()
            else:
                self.array = np.empty(grown, dtype=np.int16)
        return self.array[:elements]

    def release(self, event) -> None:
        self.event = event
        self.pool.free.put(self)


class _FlatPool:
    def __init__(self, count: int, pin: bool):
        self.count, self.pin, self.pid = count, pin, os.getpid()
        self.free: "queue.Queue[_Slot]" = queue.Queue()
        for _ in range(count):
            self.free.put(_Slot(self))


def _padding_geometry(size: int):
    """Where a padding sample sits in an images batch: a grey ``size`` x ``size`` grayscale image
    (zero coefficients, no decoding), whose crop is all-zero coefficients."""
    return crop_geometry(size, size, [(1, 1)], (0, 0, size, size), size)


class _ImagesEpochRun(_EpochRun):
    """An :class:`_EpochRun` over an images store: the producer reads chunks of JPEG bytes, draws
    each sample's box, lays the batch out (:meth:`HostBatch.allocate`) in a reused buffer and
    entropy-decodes every sample's block rectangle into it with ONE
    :func:`jdct_cli.jpeg.read_coefficient_rects_batch` call on ``threads`` C threads."""

    def __init__(self, loader: DCTLoader, plan: EpochPlan, start: int):
        self.loader = loader
        self.plan = plan
        self.start = start
        self.size = loader.size  # fixed for the whole iteration (set_size acts on the next one)
        self.stop = threading.Event()
        self.out: "queue.Queue" = queue.Queue(maxsize=loader.prefetch_batches)
        self.pool = loader._take_flat_pool(loader.prefetch_batches + 2, pin=loader.device.type == "cuda")
        self.arrays = loader._arrays_here()
        self.remote = not loader.location.is_local
        self.executor = ThreadPoolExecutor(max_workers=loader.threads, thread_name_prefix="jdct-read")
        self.io = None
        self.scalings = DCT_EIGHTHS if loader.random_crop else DCT_EIGHTHS_VAL
        self.thread = threading.Thread(target=self._produce_guarded, name="jdct-loader", daemon=True)
        self.thread.start()

    def _read_chunk(self, view: int, chunk: int):
        c = self.loader.chunk_samples
        lo, hi = chunk * c, min((chunk + 1) * c, self.loader.num_store_samples)
        try:
            with quiet_zarr():
                return None, self.arrays["jpeg"].get_basic_selection((view, slice(lo, hi)))
        except StorageError:
            raise
        except Exception as exc:  # zarr/numcodecs raise many types for damaged data
            raise self._read_error(exc, f"the JPEGs of samples {lo}..{hi - 1} of {self.loader.split}") from None

    def _release_chunk(self, result) -> None:
        pass

    def _sample_error(self, n: int, reason) -> StoreCorruptionError:
        loader = self.loader
        files = loader._split_meta.files
        image = int(loader._facts["image"][n])
        name = files[image] if 0 <= image < len(files) else f"image {image}"
        return StoreCorruptionError(f"sample {n} of split {loader.split!r} ({name}): its stored JPEG cannot be "
                                    f"decoded: {reason}", loader.path)

    def _produce(self):
        loader, plan = self.loader, self.plan
        c, size = loader.chunk_samples, self.size
        facts = loader._facts
        for idx, chunk_data in self._schedule():
            slot = self._take_buffer()
            if slot is None:
                return
            item = None
            try:
                item = self._assemble(idx, chunk_data, slot, c, size, facts, plan)
            finally:
                if item is None:
                    slot.release(None)
            if not self._put(item):
                return
        self._put(_END)

    def _assemble(self, idx, chunk_data, slot, c, size, facts, plan):
        loader = self.loader
        n = len(idx)
        real = idx >= 0
        rows = np.flatnonzero(real)
        boxes = loader.crop_boxes(idx[rows], plan.epoch, size)
        geometries = [None] * n
        datas = []
        for j, (i, sample) in enumerate(zip(rows.tolist(), idx[rows].tolist())):
            data = chunk_data[sample // c][1][sample % c]
            try:
                header = jpeg.read_header(data)
                factors = [(comp["h"], comp["v"]) for comp in header["components"]]
                geometries[i] = crop_geometry(header["width"], header["height"], factors, boxes[j], size,
                                              scalings=self.scalings)
            except (JdctError, ValueError) as exc:
                raise self._sample_error(sample, exc) from None
            datas.append(data)
        if len(rows) < n:
            pad = _padding_geometry(size)
            geometries = [pad if g is None else g for g in geometries]
        flips = np.zeros(n, dtype=bool)
        flips[rows] = plan.flips[idx[rows]]
        hb = HostBatch.allocate(geometries, flips)
        # The decoder writes the top-left k x k coefficients of each block; where the device reads
        # another subset (libjpeg's 2- and 4-point IDCTs skip some), it decodes all 64 into scratch
        # space after the batch and the subset is gathered from there.
        total = hb.coefs.size
        rects = np.zeros((len(rows), 3, 4), dtype=np.int64)
        offsets = np.zeros((len(rows), 3), dtype=np.int64)
        ks = np.full((len(rows), 3), 8, dtype=np.int64)
        gathers = []
        extra = 0
        for j, i in enumerate(rows.tolist()):
            g = geometries[i]
            for comp, (picked, k) in enumerate(_coefficients_read(g.scale, g.factors, min(g.width, 65))):
                r0, r1, c0, c1 = g.blocks(comp)
                rects[j, comp] = (r0, c0, r1, c1)
                if k:
                    ks[j, comp] = k
                    offsets[j, comp] = hb.offsets[i, comp]
                else:
                    offsets[j, comp] = total + extra
                    gathers.append((i, comp, total + extra, picked))
                    extra += (r1 - r0) * (c1 - c0) * 64
        buf = slot.take(total + extra)
        hb.coefs = buf[:total]
        if len(rows):
            result = jpeg.read_coefficient_rects_batch(datas, rects, buf, offsets, ks=ks, threads=loader.threads,
                                                       strict=True, tolerate=jpeg.HARMLESS_WARNINGS)
            for j, exc in enumerate(result.errors):
                if exc is not None:
                    raise self._sample_error(int(idx[rows[j]]), exc)
            hb.quant[rows] = result.quant[:, :3]
        for i, comp, start, picked in gathers:
            view = hb.component(i, comp)
            rows_, cols_, _ = view.shape
            view[...] = buf[start:start + rows_ * cols_ * 64].reshape(rows_, cols_, 64)[..., picked]
        for i in np.flatnonzero(~real).tolist():
            hb.component(i, 0)[...] = 0
        labels = np.full(n, -1, dtype=np.int64)
        labels[rows] = loader._labels[plan.view, idx[rows]]
        return hb, n, labels, slot

    def close(self):
        self.stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loader._give_flat_pool(self.pool)


@functools.lru_cache(maxsize=1024)
def _coefficients_read(scale: int, factors: tuple, width: int) -> tuple:
    """Per component ``(indices, k)``: the coefficients the device reads at this decoding scale
    (:func:`jdct_cli.transforms.CropGeometry.coefficient_indices`) and the side of the top-left
    square they form (0: not a square). ``width`` matters only below 66 px (libjpeg's fancy
    upsampling needs more than 2 chroma samples), so callers pass ``min(width, 65)``."""
    out = []
    for plan in component_plans(scale, factors, width):
        picked = coefficient_indices(plan.idct_size)
        out.append((picked, _square_side(picked)))
    return tuple(out)


def _square_side(indices: np.ndarray) -> int:
    """k when ``indices`` (natural order) are the top-left k x k coefficients in row-major order, else 0."""
    k = int(round(len(indices) ** 0.5))
    if k * k == len(indices) and np.array_equal(indices, (np.arange(k)[:, None] * 8 + np.arange(k)).reshape(-1)):
        return k
    return 0
