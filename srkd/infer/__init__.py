"""Inference: device and precision choice, exact tiling, self-ensemble.

This module knows nothing about files or the command line (``srkd.upscale`` and ``srkd eval``
build on it). Stable API::

    up = Upscaler(model, device="auto", precision="auto", tile="auto", tile_pad=None,
                  batch_tiles="auto", channels_last=True, compile=False, fuse=True)
    sr = up.process(x, self_ensemble=False, progress=None, out_dtype=torch.float32)

``x`` is a float tensor (1, 3, h, w) with values in [0, 1] in host memory; ``sr`` is (1, 3, h*s, w*s)
in host memory, clamped to [0, 1] (or, with ``out_dtype=torch.uint8``, rounded to 0..255 on the
device). After construction ``up.device``, ``up.precision`` (``"fp32"|"bf16"|"fp16"``), ``up.tile``
(core size in LR px: an int for square cores, a (height, width) pair from the CPU planner, or
None for whole-image inference), ``up.tile_pad``, ``up.batch_tiles`` and
``up.scale`` say what was chosen; ``up.notes`` lists the decisions worth telling a user
(precision fallback, compile failure). The caller's model is never modified: the helper works on
a copy.

Why the results are trustworthy:

* **Tiles are cut from the image in host memory** and only one batch of tiles is on the device
  at a time, so the device never holds the whole image.
* **Tiling is exact.** Each tile is extended by ``tile_pad`` LR pixels of real image context; only
  its core is kept. Windows are shifted inward at the image border rather than padded, so the
  network sees the image border exactly where whole-image inference sees it (its own zero
  padding). With ``tile_pad`` at least the receptive radius, the stitched output equals
  whole-image inference up to float summation order. The radius is measured by tracing the
  convolutions the model actually runs (shared blocks count once per use, each conv weighted by
  the resolution it runs at), and the default pad is that radius plus a margin, capped at
  ``MAX_AUTO_PAD`` for very deep networks, whose far field is negligible (see docs/upscale.md).
* **Global context** (RCAN's channel attention pools over the whole image) cannot be tiled
  naively. Here every global average/max pool is synchronised across tiles: a first pass
  collects each pool's statistics over the tile *cores* (the whole image, once), later passes
  feed those image-wide statistics to every tile. ``tile="auto"`` avoids the extra passes by
  running such models on the whole image whenever it fits in memory.
* **Low precision never silently degrades output.** ``precision="auto"`` picks bf16 on CPUs with
  native bf16 (AMX or AVX-512-BF16) and bf16/fp16 on CUDA, then checks the model on a real image
  crop: the low-precision output must be finite and within ``PRECISION_MAX_ABS`` (max abs) and
  ``PRECISION_MIN_PSNR`` (dB) of fp32, else fp32 is used and a note says why. Convolutions that
  read the 3-channel image stay in fp32 (they are cheap, and bf16 has only 8 significant bits:
  not enough to carry 8-bit pixel values through a mean shift exactly).
* **Out of memory** (CUDA or host) during ``tile="auto"`` inference halves the tile and retries.
* **Rewrites are checked.** ``fuse=True`` applies srkd.infer.fusion's rewrites (shuffle folding;
  on CPU conv + ReLU and cat-free cascades) to the copy after tracing, and keeps them only if the fp32 output is unchanged;
  ``up.rewrites`` counts them.

Modules: :mod:`~srkd.infer.device` (memory, out-of-memory, scoped thread counts),
:mod:`~srkd.infer.trace` (receptive field), :mod:`~srkd.infer.tiles` (plans and the tiled run),
:mod:`~srkd.infer.poolsync` and :mod:`~srkd.infer.esasync` (image-wide context across tiles),
:mod:`~srkd.infer.fusion` (checked rewrites), :mod:`~srkd.infer.upscaler` (the Upscaler).
Device and precision resolution live in :mod:`srkd.precision`, shared with training.
"""

from ..errors import SrkdWarning
from ..precision import DEVICES, PRECISIONS, cpu_native_bf16, resolve_device, resolve_precision
from .device import (  # noqa: F401 - the constants, importable from here as before
    CPU_MEMORY_FRACTION, CUDA_MEMORY_FRACTION, available_memory, host_available_memory, is_out_of_memory, torch_threads,
)
from .tiles import CPU_WORKING_SET, MAX_AUTO_PAD, MIN_TILE, PAD_MARGIN, Tile, plan_cpu_grid, plan_tiles, tile_hw  # noqa: F401
from .trace import ModelTrace, trace_model
from .upscaler import PRECISION_MAX_ABS, PRECISION_MIN_PSNR, Upscaler, real_image_crop, to_tensor  # noqa: F401

__all__ = [
    "Upscaler",
    "SrkdWarning",
    "resolve_device",
    "resolve_precision",
    "cpu_native_bf16",
    "plan_tiles",
    "plan_cpu_grid",
    "trace_model",
    "Tile",
    "to_tensor",
    "DEVICES",
    "PRECISIONS",
    "ModelTrace",
    "available_memory",
    "host_available_memory",
    "is_out_of_memory",
    "torch_threads",
    "real_image_crop",
]
