"""SwinIR (Liang et al., ICCVW 2021): classical and lightweight SR with the official key names.

Layout follows ``JingyunLiang/SwinIR`` ``models/network_swinir.py`` (spandrel loads the same
files): ``conv_first``, ``patch_embed.norm``, residual Swin transformer blocks
``layers.i.residual_group.blocks.j`` (``norm1``, ``attn.{qkv,proj,relative_position_bias_table,
relative_position_index}``, ``norm2``, ``mlp.fc1/fc2``; shifted blocks also store ``attn_mask``
for ``img_size``) each closed by ``layers.i.conv``, ``norm``, ``conv_after_body`` and the upsampler:
``conv_before_upsample.0`` + ``upsample.{0,2,..}`` + ``conv_last`` (classical, "pixelshuffle") or
``upsample.0`` (lightweight, "pixelshuffledirect").

As in the official code the model pads its input (reflect, bottom and right) to a multiple of the
window size and crops the output, so any input size works. Windows are partitioned from the
image origin; srkd.infer aligns tile windows to that grid (``ArchSpec.pad_multiple``), and the
attention's reach beyond the traced convolutions is covered by ``ArchSpec.min_tile_pad``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import keys
from .blocks import DIV2K_RGB_MEAN, check_scale
from .spec import ArchSpec, Family, Format, SRModel, ZooEntry


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // ws) * (w // ws), ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`; the batch size is inferred, never baked in."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N, N, 2
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def _exporting() -> bool:
    """Inside torch.export (torch >= 2.6 can tell; older versions export SwinIR with a fixed size)."""
    is_exporting = getattr(getattr(torch, "compiler", None), "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


def shift_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws, ws*ws): -100 between positions that the cyclic shift brought together."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).view(-1, ws * ws)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__()
        self.num_heads, self.ws = num_heads, ws
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)
            attn = attn.view(b_, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= ws:  # the official rule: one window, no shift
            ws, shift = resolution, 0
        self.ws, self.shift, self.resolution = ws, shift, resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # Stored for the training size (the official files hold it); other sizes compute theirs.
        self.register_buffer("attn_mask", shift_mask(resolution, resolution, ws, shift) if shift else None)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        mask = None
        if self.shift:
            # torch.export: no branch on the input size (it would bake the size into the program);
            # the mask computed for the stored resolution equals the buffer
            stored = not _exporting() and (h, w) == (self.resolution, self.resolution)
            mask = self.attn_mask if stored else shift_mask(h, w, self.ws, self.shift).to(x.device)
        parts = window_partition(x, self.ws)
        windows = self.attn(parts.view(parts.shape[0], self.ws * self.ws, c), mask)
        x = window_reverse(windows.view(parts.shape[0], self.ws, self.ws, c), self.ws, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, ws: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, num_heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio) for i in range(depth)
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size)
        return x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, HW, C), with the optional LayerNorm (``patch_embed.norm``)."""

    def __init__(self, dim: int | None):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


def unembed(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], -1, size[0], size[1])


def _residual_conv(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(dim // 4, dim // 4, 1),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(dim // 4, dim, 3, 1, 1))


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin layers, a conv on the unembedded map, a skip."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, ws: int, mlp_ratio: float, resi: str):
        super().__init__()
        self.residual_group = BasicLayer(dim, resolution, depth, num_heads, ws, mlp_ratio)
        self.conv = _residual_conv(dim, resi)
        self.patch_embed = PatchEmbed(None)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.patch_embed(self.conv(unembed(self.residual_group(x, size), size))) + x


class SwinIR(SRModel):
    """SwinIR for SR. ``upsampler``: "pixelshuffle" (classical) or "pixelshuffledirect" (lightweight)."""

    arch = "swinir"

    def __init__(self, scale: int = 4, img_size: int = 64, window_size: int = 8, depths: tuple[int, ...] = (6, 6, 6, 6),
                 embed_dim: int = 60, num_heads: tuple[int, ...] = (6, 6, 6, 6), mlp_ratio: float = 2.0,
                 upsampler: str = "pixelshuffledirect", resi_connection: str = "1conv", img_range: float = 1.0,
                 rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN, num_feat: int = 64):
        super().__init__()
        self.scale = check_scale(scale, (2, 3, 4, 8))
        self.scales = (self.scale,)
        self.img_size, self.window_size, self.embed_dim = int(img_size), int(window_size), int(embed_dim)
        self.depths, self.num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        self.mlp_ratio, self.img_range, self.num_feat = float(mlp_ratio), float(img_range), int(num_feat)
        self.upsampler, self.resi_connection = str(upsampler), str(resi_connection)
        self.rgb_mean = tuple(float(v) for v in rgb_mean)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        if self.upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise ValueError(f"upsampler must be 'pixelshuffle' or 'pixelshuffledirect', got {upsampler!r}")
        if self.resi_connection not in ("1conv", "3conv"):
            raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by every num_heads {self.num_heads}")
        self.register_buffer("mean", torch.tensor(self.rgb_mean).view(1, 3, 1, 1), persistent=False)
        d = self.embed_dim
        self.conv_first = nn.Conv2d(3, d, 3, 1, 1)
        self.patch_embed = PatchEmbed(d)
        self.layers = nn.ModuleList(
            RSTB(d, self.img_size, depth, heads, self.window_size, self.mlp_ratio, self.resi_connection)
            for depth, heads in zip(self.depths, self.num_heads)
        )
        self.norm = nn.LayerNorm(d)
        self.conv_after_body = _residual_conv(d, self.resi_connection)
        if self.upsampler == "pixelshuffle":
            f = self.num_feat
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(d, f, 3, 1, 1), nn.LeakyReLU(inplace=True))
            ups: list[nn.Module] = []
            if self.scale == 3:
                ups += [nn.Conv2d(f, 9 * f, 3, 1, 1), nn.PixelShuffle(3)]
            else:
                for _ in range(int(math.log2(self.scale))):
                    ups += [nn.Conv2d(f, 4 * f, 3, 1, 1), nn.PixelShuffle(2)]
            self.upsample = nn.Sequential(*ups)
            self.conv_last = nn.Conv2d(f, 3, 3, 1, 1)
        else:
            self.upsample = nn.Sequential(nn.Conv2d(d, 3 * self.scale**2, 3, 1, 1), nn.PixelShuffle(self.scale))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, size)
        return unembed(self.norm(t), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ws = self.window_size
        x = F.pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws), "reflect")  # the official check_image_size
        x = (x - self.mean.to(x.dtype)) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        x = x / self.img_range + self.mean.to(x.dtype)
        if _exporting():
            # a gather, not a slice: torch.export would specialise on whether the crop is a no-op
            rows, cols = torch.arange(h * self.scale, device=x.device), torch.arange(w * self.scale, device=x.device)
            return x.index_select(2, rows).index_select(3, cols)
        return x[:, :, : h * self.scale, : w * self.scale]


# ----------------------------------------------------------------------------- facts


def _read_config(sd: dict) -> dict:
    n_layers = keys.count(sd, r"layers\.(\d+)\.residual_group\.")
    depths = [keys.count(sd, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.") for i in range(n_layers)]
    heads = [sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(n_layers)]
    embed = sd["conv_first.weight"].shape[0]
    ws = math.isqrt(sd["layers.0.residual_group.blocks.0.attn.relative_position_index"].shape[0])
    mask = sd.get("layers.0.residual_group.blocks.1.attn_mask")
    img_size = math.isqrt(mask.shape[0]) * ws if mask is not None else 64
    cfg = {"img_size": img_size, "window_size": ws, "depths": depths, "embed_dim": embed, "num_heads": heads,
           "mlp_ratio": sd["layers.0.residual_group.blocks.0.mlp.fc1.bias"].shape[0] / embed,
           "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv", "img_range": 1.0}
    if "conv_before_upsample.0.weight" in sd:
        f = sd["conv_before_upsample.0.weight"].shape[0]
        convs = sorted(k for k in sd if k.startswith("upsample.") and k.endswith(".weight"))
        return {**cfg, "upsampler": "pixelshuffle", "num_feat": f, "scale": keys.pixelshuffle_scale(sd, convs, f)}
    return {**cfg, "upsampler": "pixelshuffledirect", "scale": keys.colour_upsampler_scale(sd, "upsample.0.weight")}


def _taps(m: SwinIR) -> dict[str, str]:
    n = len(m.depths)
    # The RSTB outputs are token sequences; their closing convs are the last 2-D feature maps.
    return {"body1": f"layers.{max(n // 3 - 1, 0)}.conv", "body2": f"layers.{max(2 * n // 3 - 1, 0)}.conv",
            "body3": "conv_after_body"}


_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
_CLASSICAL = {"img_size": 48, "depths": [6] * 6, "embed_dim": 180, "num_heads": [6] * 6, "upsampler": "pixelshuffle"}
_LIGHT = {"img_size": 64, "depths": [6] * 4, "embed_dim": 60, "num_heads": [6] * 4, "upsampler": "pixelshuffledirect"}

SPEC = ArchSpec(
    name="swinir",
    cls=SwinIR,
    families=(
        Family("swinir", _CLASSICAL, "SwinIR-M classical (DIV2K s48w8): 6 RSTB x 6, 180 dim"),
        Family("swinir-light", _LIGHT, "SwinIR-S lightweight (DIV2K s64w8): 4 RSTB x 6, 60 dim"),
    ),
    formats=(Format("swinir", keys.has_all("conv_first.weight", "layers.0.residual_group.blocks.0.norm1.weight",
                                            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
                                            "layers.0.residual_group.blocks.0.attn.relative_position_index")),),
    read_config=_read_config,
    upsampler=("conv_before_upsample.", "upsample.", "conv_last."),
    taps=_taps,
    no_slicing="attention heads, LayerNorms and the relative-position tables have no channel-prefix sub-network",
    context="global",  # shifted windows: the reach grows with depth, far beyond the traced convolutions
    pad_multiple=lambda m: m.window_size,
    min_tile_pad=32,
    supports_fp16=False,  # activations grow across RSTBs: fp16 overflows (JingyunLiang/SwinIR#103, #180)
    weights={
        **{f"swinir-x{s}": ZooEntry(f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
                                    _RELEASE + f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth", scale=s) for s in (2, 3, 4)},
        **{f"swinir-light-x{s}": ZooEntry(f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth",
                                          _RELEASE + f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth", scale=s) for s in (2, 3, 4)},
    },
    examples=("swinir:img_size=16,window_size=4,depths=[2,2],embed_dim=12,num_heads=[2,2],scale=2",
              "swinir:img_size=16,window_size=4,depths=[2],embed_dim=8,num_heads=[2],upsampler=pixelshuffle,num_feat=8,scale=3"),
    reference="JingyunLiang/SwinIR models/network_swinir.py (spandrel architectures/SwinIR)",
)
