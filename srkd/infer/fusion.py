"""Inference-only rewrites of a network that compute the same function with fewer memory passes.

Used by :class:`srkd.infer.Upscaler` on its private copy of the model (never on the caller's).
Three rewrites, found by looking at what the network does or declares rather than at its class:

* **Shuffle folding.** ``conv3x3(pixel_shuffle(z, 2))`` with a thin output (the last
  feature-to-RGB convolution of EDSR, RCAN and CARN) equals ``pixel_shuffle(conv3x3'(z), 2)``,
  where ``conv3x3'`` reads the ``4C`` channels of ``z`` and writes ``4 x out`` channels. The
  folded convolution has four times the multiply-adds (three quarters of its weights are zero)
  and takes the same time on oneDNN, whose kernels are slow for 3 output channels anyway; what
  goes away is the pixel shuffle of the widest tensor of the network (64 channels at the output
  resolution). Exact, also at the image border (a zero row at the
  output resolution is part of a zero cell before the shuffle). Only x2 shuffles: for x3 the
  folded convolution would have 9x the multiply-adds.
* **Conv + ReLU.** On CPU, a ``Conv2d`` directly followed by ``ReLU`` in an ``nn.Sequential``
  runs as one oneDNN convolution with a ReLU post-op (PyTorch's ``mkldnn._convolution_pointwise``,
  the kernel ``torch.compile`` uses), saving a pass over the output.
  Likewise a residual block that declares ``post_residual_relu`` (its forward is
  ``relu(body(x) + x)``, CARN's units) runs its last convolution with the addition and the ReLU
  as post-ops.
* **Cascades without concatenation.** On CPU, a cascade that ``srkd.models.carn.Cascade`` names
  (CARN's ``out_k = relu(W_k cat(x, m_1, ..., m_k) + b_k)``) runs as one 1x1 convolution per
  member accumulated in place (:class:`CatFreeCascade`), without the strided copies of
  ``torch.cat`` at every level.

A pair is found by running the model once with hooks: the convolution's input must be the very
tensor the shuffle returned. Whether the rewritten network still computes the same function is
checked by the caller against the original output (fp32, 1e-4), and the rewrite dropped if not.
What the rewrites save together: ``benchmarks/upscale_speed.py`` (srkd's defaults with and without
them; docs/upscale.md has the per-rewrite figures as measured when each was written).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.carn import Cascade


class FoldedShuffleConv(nn.Module):
    """``conv(pixel_shuffle(z, r))`` computed as ``pixel_shuffle(folded(z), r)``."""

    def __init__(self, conv: nn.Conv2d, r: int):
        super().__init__()
        o, c = conv.out_channels, conv.in_channels
        w = conv.weight.detach()
        folded = torch.zeros(o * r * r, c * r * r, 3, 3, dtype=w.dtype, device=w.device)
        for a in range(r):
            for b in range(r):
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        sy, sx = a + dy, b + dx  # where the tap lands at the output resolution
                        ky, kx = sy // r + 1, sx // r + 1  # which pre-shuffle cell (-1, 0, +1)
                        phase = (sy % r) * r + (sx % r)  # which sub-pixel of that cell
                        folded[a * r + b :: r * r, phase :: r * r, ky, kx] = w[:, :, dy + 1, dx + 1]
        self.conv = nn.Conv2d(c * r * r, o * r * r, 3, 1, 1, bias=conv.bias is not None)
        self.conv.to(device=w.device, dtype=w.dtype)
        self.conv.weight.data.copy_(folded)
        if conv.bias is not None:
            self.conv.bias.data.copy_(conv.bias.detach().repeat_interleave(r * r))
        self.conv.requires_grad_(False)
        self.r = r

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(z), self.r)


def _onednn_available() -> bool:
    """This PyTorch build has the fused oneDNN convolutions (torch.compile's CPU kernels)."""
    return hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The fused oneDNN ops take CPU tensors of the weights' dtype, outside autocast."""
    return x.device.type == "cpu" and x.dtype == weight.dtype and not torch.is_autocast_enabled("cpu")


def _conv_args(c: nn.Conv2d) -> tuple:
    return c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups


class ConvReLU(nn.Module):
    """A ``Conv2d`` and the ``ReLU`` after it as one oneDNN call on CPU (plain calls elsewhere)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_applies(x, self.conv.weight):
            return torch.ops.mkldnn._convolution_pointwise(x, *_conv_args(self.conv), "relu", [], "")
        return torch.relu(self.conv(x))


def _foldable(conv: nn.Conv2d) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and conv.out_channels * 4 <= 16
    )


class ResidualReLU(nn.Module):
    """``relu(body(x) + x)`` with the last convolution of ``body`` carrying the add and the ReLU."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.block.body
        if _onednn_applies(x, body[-1].weight):
            return torch.ops.mkldnn._convolution_pointwise.binary(
                body[:-1](x), x, *_conv_args(body[-1]), "add", None, "relu", [], ""
            )
        return self.block(x)


class CatFreeCascade(nn.Module):
    """A cascade (``srkd.models.carn.Cascade``) computed without its concatenations.

    ``fuse_k`` (a 1x1 convolution and a ReLU) over ``cat(m_0, ..., m_k)`` is the sum of one 1x1
    convolution per member. Each level keeps an accumulator: when a member appears, its
    contribution is added to every level that reads it, in place (oneDNN's sum post-op), and the
    level it completes gets its ReLU in the same call. Nothing is copied: on CPU the cascades of
    CARN-M take about half the time (concatenating channels_last tensors is a strided copy of
    the whole cascade at every level). In bf16 each partial sum is rounded once more.
    """

    def __init__(self, cascade: nn.Module):
        super().__init__()
        self.__dict__["original"] = cascade  # plain reference: run when oneDNN does not apply
        self.levels = len(cascade.fuses)
        for k, fuse in enumerate(cascade.fuses):
            conv = fuse.body[0]
            c = conv.out_channels
            w = conv.weight.detach()
            for j in range(k + 2):
                self.register_buffer(f"w{k}_{j}", w[:, j * c : (j + 1) * c].clone())
            self.register_buffer(f"b{k}", conv.bias.detach().clone())

    @staticmethod
    def applies(cascade: Cascade) -> bool:
        """Every fuse is ``Sequential(Conv2d 1x1, ReLU)`` over members of its output width."""
        fuses = cascade.fuses
        for k, fuse in enumerate(fuses):
            body = getattr(fuse, "body", None)
            if not (isinstance(body, nn.Sequential) and len(body) == 2 and isinstance(body[1], nn.ReLU)):
                return False
            conv = body[0]
            if not (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                    and conv.padding == (0, 0) and conv.groups == 1 and conv.bias is not None
                    and conv.in_channels == (k + 2) * conv.out_channels):
                return False
        return bool(fuses)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _onednn_applies(x, self.w0_0):
            return self.original(x)
        conv = torch.ops.mkldnn._convolution_pointwise
        one = ([0, 0], [1, 1], [1, 1], 1)
        acc = [conv(x, getattr(self, f"w{k}_0"), getattr(self, f"b{k}"), *one, "none", [], "")
               for k in range(self.levels)]
        out = x
        for j, unit in enumerate(self.original.units, start=1):  # by name: rewritten units apply
            m = unit(out)
            for k in range(j - 1, self.levels):
                torch.ops.mkldnn._convolution_pointwise_.binary(
                    acc[k], m, getattr(self, f"w{k}_{j}"), None, *one, "add", 1.0, "relu" if k == j - 1 else None, [], ""
                )
            out = acc[j - 1]
        return out


def _fusable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
        and conv.in_channels != 3  # image-reading convolutions keep their fp32 forward (srkd.infer)
    )


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def find_shuffle_conv_pairs(net: nn.Module, x: torch.Tensor) -> list[tuple[str, str, int]]:
    """``(shuffle name, conv name, r)`` where a conv reads exactly what an x2 shuffle returned."""
    names = {id(m): n for n, m in net.named_modules()}
    produced: dict[int, tuple[nn.PixelShuffle, torch.Tensor]] = {}  # the tensor is held so its id stays unique
    readers: dict[int, list[nn.Module]] = {}
    calls: dict[int, int] = {}

    def on_shuffle(module, inputs, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        produced[id(output)] = (module, output)

    def on_conv(module, inputs, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        if id(inputs[0]) in produced:
            readers.setdefault(id(inputs[0]), []).append(module)

    handles = []
    for m in net.modules():
        if isinstance(m, nn.PixelShuffle):
            handles.append(m.register_forward_hook(on_shuffle))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for key, (shuffle, _) in produced.items():
        convs = readers.get(key, [])
        # a module called at several places (a shared unit) cannot be rewritten for one of them
        if shuffle.upscale_factor == 2 and len(convs) == 1 and _foldable(convs[0]) \
                and calls[id(convs[0])] == 1 and calls[id(shuffle)] == 1:
            pairs.append((names[id(shuffle)], names[id(convs[0])], 2))
    return pairs


def fold_shuffles(net: nn.Module, x: torch.Tensor) -> int:
    """Rewrite every foldable shuffle -> conv pair of ``net`` in place; returns how many."""
    pairs = find_shuffle_conv_pairs(net, x)
    for shuffle, conv, r in pairs:
        _replace(net, conv, FoldedShuffleConv(net.get_submodule(conv), r))
        _replace(net, shuffle, nn.Identity())
    return len(pairs)


def fuse_conv_relu(net: nn.Module) -> int:
    """Merge ``Conv2d, ReLU`` neighbours of every ``nn.Sequential``, and the add + ReLU of residual
    blocks that declare it, in place; returns how many."""
    if not _onednn_available():
        return 0
    count = 0
    for name, m in list(net.named_modules()):
        body = getattr(m, "body", None)
        if getattr(m, "post_residual_relu", False) and isinstance(body, nn.Sequential) and _fusable(body[-1]):
            _replace(net, name, ResidualReLU(m))
            count += 1
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if _fusable(seq[i]) and isinstance(seq[i + 1], nn.ReLU):
                seq[i] = ConvReLU(seq[i])
                seq[i + 1] = nn.Identity()
                count += 1
    return count


def fuse_cascades(net: nn.Module) -> int:
    """Replace every cascade whose fuses are 1x1 conv + ReLU by a :class:`CatFreeCascade`, in
    place; returns how many. Run before :func:`fuse_conv_relu` (it reads the fuse convolutions)."""
    if not _onednn_available():
        return 0
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, Cascade) and CatFreeCascade.applies(m)]
    for name, m in found:
        _replace(net, name, CatFreeCascade(m))
    return len(found)


def apply_checked(net: nn.Module, device: torch.device, verify: bool = True) -> tuple[bool, dict]:
    """Every rewrite of ``net``, in place: (output unchanged in fp32 within 1e-4, counts per rewrite).

    ``verify=False``: a cached decision already says they hold; apply them without the check.
    False means the caller must discard ``net`` (it is partly rewritten).
    """
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        ref = net(x) if verify else None
        cpu = device.type == "cpu"  # the other two rewrites are oneDNN calls
        folded = fold_shuffles(net, x)
        cascades = fuse_cascades(net) if cpu else 0  # reads the fuse convs: before fuse_conv_relu
        fused = fuse_conv_relu(net) if cpu else 0
        counts = {"folded_shuffles": folded, "conv_relu": fused, "cat_free_cascades": cascades}
        if not verify or not (folded or fused or cascades):
            return True, counts
        try:
            out = net(x)
            same = out.shape == ref.shape and float((out - ref).abs().max()) <= 1e-4
        except RuntimeError:
            same = False
    return same, counts
