"""Device and precision: resolution, the autocast context, and fp32 image convolutions.

Training, distillation and inference all use this module:

* :func:`resolve_device` and :func:`resolve_precision` turn ``--device`` / ``--precision`` into a
  ``torch.device`` and one of fp32, bf16, fp16 (``auto``: what the device does well);
* :func:`autocast` is the context a precision runs under;
* one mechanism keeps the convolutions that read or write the 3-channel image in fp32 under
  autocast (bf16 keeps 8 significant bits: a pixel after the mean shift would be rounded by up to
  half an 8-bit level). Training uses it as a context (:func:`image_convs_fp32`: the student's
  and teacher's first and last layers, the first layer of every frozen encoder a loss compares
  images through: CSD's VGG-19, DCKD's VQGAN); inference installs it on its private copy
  (:func:`install_image_convs`), where the first convolution hands its output back in the low
  dtype and the mean shift is one fused pass.

The names (PRECISIONS, DEVICES) import without torch, so that configs and the CLI's ``--help``
stay fast; the functions import torch where they need it.
"""

from __future__ import annotations

import contextlib
import copy
import types
from typing import TYPE_CHECKING

from .errors import SrkdError

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def dtype(precision: str) -> torch.dtype:
    """The torch dtype of fp32, bf16 or fp16."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# --------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must be available."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise SrkdError(f"unknown device '{device}': use one of {', '.join(DEVICES)} (cuda:N for a given GPU)")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SrkdError(f"--device {name}: CUDA is not available here (PyTorch {torch.__version__}); use --device cpu or auto")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise SrkdError(f"bad CUDA device '{name}': use cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SrkdError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if kind == "mps":
        if not _mps_available():
            raise SrkdError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    if name != "cpu":
        raise SrkdError(f"bad device '{device}': use cpu")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AMX or AVX-512-BF16)."""
    import torch

    capability = ""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        pass
    if "AMX" in capability.upper():
        return True
    from srkd.provenance import cpu_info

    flags = cpu_info().get("flags", "").split()
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """The requested precision, or for ``auto`` the fastest one the device does well (unchecked)."""
    import torch

    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise SrkdError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if p == "fp16":
            raise SrkdError("--precision fp16 is not supported on CPU (no fast fp16 convolutions); use bf16 or fp32")
        if p == "auto":
            return "bf16" if cpu_native_bf16() else "fp32"
        return p
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        bf16_ok = torch.cuda.is_bf16_supported()
        if p == "bf16" and not bf16_ok:
            raise SrkdError("--precision bf16 is not supported by this GPU; use fp16 or fp32")
        if p == "auto":
            # bf16's fp32-sized exponent cannot overflow into the black images that fp16 gives on
            # some models; tensor cores run both at the same speed.
            if bf16_ok and major >= 8:
                return "bf16"
            return "fp16" if major >= 7 else "fp32"
        return p
    # MPS
    if p == "auto":
        return "fp16"
    return p


# ------------------------------------------------------------------------------------- autocast


def autocast(device: torch.device, precision: str):
    """The context ``precision`` runs under on ``device``: autocast off for fp32."""
    import torch

    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype(precision))


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast is running in on ``device_type`` now, or None outside autocast."""
    import torch

    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


# ----------------------------------------------------------------------- fp32 image convolutions


def _train_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Training: the whole convolution in fp32, its output fp32 (the loss reads it)."""
    import torch

    with torch.autocast(device_type=x.device.type, enabled=False):
        return self._conv_forward(x.float(), self.weight, self.bias)


@contextlib.contextmanager
def image_convs_fp32(model: nn.Module, enabled: bool):
    """Training: run the convolutions that read or write the 3-channel image outside autocast.

    They are a small share of the compute; the mean shift and the last convolution would
    otherwise round the image to about one 8-bit level near white.
    """
    from torch import nn

    patched = []
    if enabled:
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and (m.in_channels == 3 or m.out_channels == 3) and "forward" not in m.__dict__:
                m.forward = types.MethodType(_train_forward, m)
                patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


class ImageConv:
    """Inference: the forward of convolutions that read the 3-channel image, fp32 under autocast.

    A convolution that reads the image and writes features hands its output back in the autocast
    dtype, so that the features downstream (and concatenations of them, which would otherwise
    promote to fp32) stay in low precision. The last feature-to-RGB convolution stays in low
    precision: it runs at the output resolution, where fp32 is expensive and changes Set5 by
    thousandths of a dB (docs/upscale.md, "Precision and devices").
    """

    @staticmethod
    def forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        import torch

        device_type = x.device.type
        low = getattr(self, "_srkd_low", None) or autocast_dtype(device_type)
        scale = getattr(self, "_srkd_diagonal", None)
        if scale is not None:
            # A mean shift (1x1, diagonal weight) as one element-wise pass in fp32, not the
            # generic 3-channel convolution at the output resolution (docs/upscale.md).
            return torch.addcmul(self.bias.view(1, -1, 1, 1), x, scale)
        if low is None:
            return self._conv_forward(x, self.weight, self.bias)
        with torch.autocast(device_type=device_type, enabled=False):
            y = self._conv_forward(x.float(), self.weight, self.bias)
        return y if self.out_channels == 3 else y.to(low)

    @staticmethod
    def diagonal(conv: nn.Conv2d) -> torch.Tensor | None:
        """The per-channel scale of a 1x1 3->3 convolution whose weight is diagonal, else None."""
        import torch

        w = conv.weight.detach()
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.out_channels != 3 or conv.bias is None \
                or conv.padding not in ((0, 0), "valid") or conv.stride != (1, 1):
            return None
        d = torch.diagonal(w[:, :, 0, 0])
        if not torch.equal(w[:, :, 0, 0], torch.diag(d)):
            return None
        return d.float().view(1, 3, 1, 1).clone()


def install_image_convs(net: nn.Module) -> None:
    """Inference: give ``net``'s image-reading convolutions :class:`ImageConv`'s forward, for good."""
    from torch import nn

    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            m.forward = types.MethodType(ImageConv.forward, m)
            m._srkd_diagonal = ImageConv.diagonal(m)


def cast_copy(net: nn.Module, low: torch.dtype) -> nn.Module:
    """A copy of ``net`` with weights in ``low``, except the convolutions that read the image."""
    from torch import nn

    copied = copy.deepcopy(net).to(low)
    for m in copied.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            m.float()
            m._srkd_low = low
    return copied
