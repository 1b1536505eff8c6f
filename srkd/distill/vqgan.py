"""The frozen VQGAN encoder DCKD measures distances in: taming-transformers' ImageNet VQGAN f16 n1024.

Only the parts DCKD uses are built -- the encoder, ``quant_conv`` and the codebook -- with the
module names of taming-transformers (``taming/modules/diffusionmodules/model.py::Encoder``,
``taming/models/vqgan.py::VQModel``), so the released checkpoint's ``state_dict`` loads as is:
``encoder.conv_in``, ``encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}``,
``encoder.down.{i}.attn.{j}.{norm,q,k,v,proj_out}``, ``encoder.down.{i}.downsample.conv``,
``encoder.mid.{block_1,attn_1,block_2}``, ``encoder.norm_out``, ``encoder.conv_out``,
``quant_conv`` and ``quantize.embedding.weight``.

What DCKD takes from it (``super-SSS/DCKD: basicsr/archs/vqgan_arch.py``):

* five feature levels: the output of the *first* ResnetBlock of each resolution level, before
  any attention (channels 128, 128, 256, 256, 512 at strides 1, 2, 4, 8, 16);
* the latent ``quant_conv(encoder(x))`` (256 channels at stride 16), whose soft assignment to the
  1024 codes is ``softmax(-||z - e||^2)`` per latent pixel.

The released checkpoint is a PyTorch Lightning pickle of the whole VQGAN (decoder, discriminator,
LPIPS, optimiser state). It is read with ``torch.load(weights_only=True, mmap=True)`` when that
is allowed, and otherwise with a restricted reader of the zip archive that never imports or calls
anything the file names: only the needed tensors are ever read from disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SrkdError
from ..io.pickles import read_pickle

OFFICIAL_URL = "https://heibox.uni-heidelberg.de/d/8088892a516d4e3baf92/"  # taming README: vqgan_imagenet_f16_1024
PREFIXES = ("encoder.", "quant_conv.", "quantize.embedding.")
RANDOM_REFS = ("random-small", "random")


@dataclass(frozen=True)
class VQGANConfig:
    """The ``ddconfig`` of a taming VQGAN plus ``embed_dim``/``n_embed`` (encoder side only)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    resolution: int = 256
    in_channels: int = 3

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# taming-transformers configs/imagenet_vqgan.yaml (= the DCKD config's network_vqgan); dropout 0.
F16_N1024 = VQGANConfig()
# Same five-level topology (so DCKD's taps and weights apply unchanged) at a fraction of the cost;
# only for tests and smoke runs, chosen explicitly with vqgan=random-small.
SMALL = VQGANConfig(ch=32, ch_mult=(1, 1, 2, 2, 2), num_res_blocks=1, z_channels=32, embed_dim=32, n_embed=64)
CONFIGS = {"f16-n1024": F16_N1024, "small": SMALL}


# ----------------------------------------------------------------------------- the network


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice, 1x1 ``nin_shortcut`` when the width changes (no time embedding)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj_out and a residual."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (b, hw, c)
        # softmax(q k^T / sqrt(c)) v, as taming computes it with two bmm calls
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel right and bottom (taming's asymmetric padding)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Encoder(nn.Module):
    """taming's ``Encoder`` with ``double_z=False``; see :meth:`features` for what DCKD reads."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c_in = cfg.resolution, cfg.ch
        # Attention placement follows the *configured* resolution (256), not the input size, as in
        # taming: with (1,1,2,2,4) only the last level (16 = 256/16) has attention blocks.
        for level, mult in enumerate(cfg.ch_mult):
            c_out = cfg.ch * mult
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(c_in, c_out))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(c_in))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(c_in)
                res //= 2
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c_in, c_in)
        self.mid.attn_1 = AttnBlock(c_in)
        self.mid.block_2 = ResnetBlock(c_in, c_in)
        self.norm_out = _norm(c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.z_channels, 3, padding=1)

    @property
    def feature_channels(self) -> list[int]:
        return [self.cfg.ch * m for m in self.cfg.ch_mult]

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The first ResnetBlock's output of every level, and that of the last level again.

        The last level's first block output is both DCKD's deepest feature and where
        :meth:`finish` resumes, so a caller that needs the latent of only some images (the
        teacher's, not the negatives') pays for the shared part once.
        """
        feats = []
        h = self.conv_in(x)
        last = len(self.down) - 1
        for level, stage in enumerate(self.down):
            h = stage.block[0](h)
            feats.append(h)
            if level == last:
                break
            if len(stage.attn):
                h = stage.attn[0](h)
            for j in range(1, len(stage.block)):
                h = stage.block[j](h)
                if len(stage.attn):
                    h = stage.attn[j](h)
            h = stage.downsample(h)
        return feats, h

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        """From the last level's first block output to ``conv_out``."""
        stage = self.down[-1]
        if len(stage.attn):
            h = stage.attn[0](h)
        for j in range(1, len(stage.block)):
            h = stage.block[j](h)
            if len(stage.attn):
                h = stage.attn[j](h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.features(x)[1])


class Codebook(nn.Module):
    """taming's ``VectorQuantizer`` reduced to its codebook (``quantize.embedding.weight``)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # taming's init

    def neg_sq_distances(self, z: torch.Tensor) -> torch.Tensor:
        """``-||z_m - e_k||^2`` for every latent pixel m and code k: shape (B*h*w, n_embed), float32.

        Computed as ``2 z.e - |z|^2 - |e|^2`` in float32: in bf16 the expansion cancels badly at
        the magnitudes of real VQGAN latents.
        """
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.embedding.weight.float()
        return 2 * flat @ e.t() - flat.pow(2).sum(1, keepdim=True) - e.pow(2).sum(1)


class VQGANEncoder(nn.Module):
    """Frozen encoder + ``quant_conv`` + codebook of a taming VQGAN.

    ``input_range`` says how SR images in [0, 1] are fed: ``"01"`` as they are (what DCKD's
    released code does) or ``"pm1"`` mapped to [-1, 1] (what the VQGAN was trained on).
    """

    def __init__(self, cfg: VQGANConfig = F16_N1024, input_range: str = "01", source: str = ""):
        super().__init__()
        if input_range not in ("01", "pm1"):
            raise SrkdError(f"VQGAN input range must be 01 or pm1, got '{input_range}'")
        self.cfg = cfg
        self.input_range = input_range
        self.source = source
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.quantize = Codebook(cfg.n_embed, cfg.embed_dim)

    @property
    def feature_channels(self) -> list[int]:
        return self.encoder.feature_channels

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.input_range == "pm1" else x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """DCKD's five feature levels of images ``x`` (B, 3, H, W) in [0, 1]."""
        return self.encoder.features(self._prep(x))[0]

    def features_and_latent(self, x: torch.Tensor, latent_of: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature levels of all of ``x`` and the latent ``quant_conv(encoder(x))`` of the first
        ``latent_of`` images (all when None)."""
        feats, h = self.encoder.features(self._prep(x))
        if latent_of is not None:
            h = h[:latent_of]
        return feats, self.quant_conv(self.encoder.finish(h))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(self._prep(x)))

    def code_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the soft code assignment of every latent pixel: ``-||z - e||^2``, (B*h*w, K)."""
        return self.quantize.neg_sq_distances(z)

    def describe(self) -> dict:
        return {"source": self.source, "input_range": self.input_range, "config": self.cfg.to_dict()}


# ----------------------------------------------------------------------------- weights


def needed_keys(cfg: VQGANConfig = F16_N1024) -> dict[str, tuple[int, ...]]:
    """Every key DCKD needs from a VQGAN state dict, with its shape."""
    return {k: tuple(v.shape) for k, v in VQGANEncoder(cfg).state_dict().items()}


def _unwrap(obj, path: Path) -> dict:
    """The flat state dict inside a checkpoint (Lightning ``state_dict``, BasicSR ``params``...)."""
    if not isinstance(obj, dict):
        raise SrkdError(f"{path} holds a {type(obj).__name__}, not a state dict; is it a taming-transformers VQGAN checkpoint?")
    for key in ("state_dict", "params_ema", "params", "model"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(k, str) and k.startswith(PREFIXES) for k in inner):
            return inner
    return obj


def _strip_wrappers(state: dict) -> dict:
    """Drop ``module.``/``model.`` prefixes added by DDP or wrapper modules."""
    out = {}
    for k, v in state.items():
        if not isinstance(k, str):
            continue
        for wrapper in ("module.", "model."):
            if k.startswith(wrapper) and k[len(wrapper):].startswith(PREFIXES):
                k = k[len(wrapper):]
        out[k] = v
    return out


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            wanted = {}
            for k in keys:
                name = k
                for wrapper in ("module.", "model."):
                    if k.startswith(wrapper) and k[len(wrapper):].startswith(PREFIXES):
                        name = k[len(wrapper):]
                if name.startswith(PREFIXES):
                    wanted[name] = f.get_tensor(k)
            return wanted
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SrkdError(f"{path} is not a readable safetensors file ({exc}); is it corrupt or truncated?") from None


def read_vqgan_state(path, cfg: VQGANConfig = F16_N1024) -> dict[str, torch.Tensor]:
    """The encoder/quant_conv/codebook tensors of a VQGAN file, checked against ``cfg``.

    Accepts the taming-transformers Lightning ``.ckpt``, any torch pickle of a VQGAN state dict
    (e.g. DCKD's ``VQGAN_f16_n1024.pth``) and ``.safetensors``; other entries are not read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SrkdError(f"VQGAN weights not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(9)
    # torch zip archives start with PK, legacy torch pickles with the pickle opcode 0x80;
    # safetensors with an 8-byte header length then '{'.
    if path.suffix.lower() == ".safetensors" or (magic[:2] != b"PK" and magic[:1] != b"\x80" and magic[8:9] == b"{"):
        state = _read_safetensors(path)
    else:
        state = read_pickle(path, lambda obj: {k: v for k, v in _strip_wrappers(_unwrap(obj, path)).items()
                                               if k.startswith(PREFIXES)})
    check_vqgan_state(state, cfg, path)
    return state


def check_vqgan_state(state: dict[str, torch.Tensor], cfg: VQGANConfig, where="state dict") -> None:
    """Refuse a state dict that is not this VQGAN, saying what is wrong in one line."""
    want = needed_keys(cfg)
    if not any(k.startswith(PREFIXES) for k in state):
        sample = ", ".join(list(state)[:3]) or "no tensors"
        raise SrkdError(
            f"{where} has no taming VQGAN keys (encoder.*, quant_conv.*, quantize.embedding.weight; found {sample}); "
            f"pass the vqgan_imagenet_f16_1024 checkpoint ({OFFICIAL_URL})"
        )
    missing = [k for k in want if k not in state]
    if missing:
        raise SrkdError(
            f"{where} lacks {len(missing)} of the {len(want)} VQGAN encoder tensors (first: {', '.join(missing[:3])}); "
            "is it a different taming model than f16 n1024?"
        )
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            hint = ""
            if k == "quantize.embedding.weight":
                hint = f" (a {state[k].shape[0]}-code VQGAN; DCKD uses the 1024-code f16 model)"
            raise SrkdError(f"{where}: {k} has shape {tuple(state[k].shape)}, expected {shape}{hint}")
        if not state[k].is_floating_point():
            raise SrkdError(f"{where}: {k} is {state[k].dtype}, expected floating point")


def _resolve(ref: str) -> Path:
    if ref.startswith("hf://"):
        from ..io.hub import resolve

        return resolve(ref)
    return Path(ref).expanduser()


def missing_weights_message() -> str:
    return (
        "dckd needs the taming-transformers VQGAN ImageNet f16 n1024 weights and none were given: "
        f"download last.ckpt from {OFFICIAL_URL} and pass --set vqgan=PATH (or hf://owner/repo/file.safetensors, "
        "or set SRKD_VQGAN); vqgan=random-small runs with an untrained small encoder for tests only"
    )


def load_vqgan(ref: str | None, input_range: str = "01", cfg: VQGANConfig = F16_N1024, seed: int = 0) -> VQGANEncoder:
    """Build the frozen VQGAN encoder from a reference.

    ``ref``: a path (``.ckpt``/``.pth``/``.safetensors``), ``hf://owner/repo/file[@rev]``,
    ``random-small`` (the small test encoder, random weights) or ``random`` (the full f16 n1024
    architecture, random weights: timing only). Empty or None falls back to ``$SRKD_VQGAN``.
    Random weights are only ever used when asked for by name.
    """
    ref = (ref or "").strip() or os.environ.get("SRKD_VQGAN", "").strip()
    if not ref:
        raise SrkdError(missing_weights_message())
    if ref in RANDOM_REFS:
        # A private RNG stream: choosing the test encoder must not shift the run's random numbers.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VQGANEncoder(SMALL if ref == "random-small" else cfg, input_range, source=ref)
            # Codes at the latent's scale, so that soft assignments are not all uniform (taming's
            # +-1/K init assumes the codebook is then trained).
            with torch.no_grad():
                z = model.latent(torch.rand(2, 3, 64, 64))
                model.quantize.embedding.weight.normal_().mul_(z.std()).add_(z.mean())
    else:
        path = _resolve(ref)
        state = read_vqgan_state(path, cfg)
        model = VQGANEncoder(cfg, input_range, source=ref)
        model.load_state_dict({k: state[k].float() for k in needed_keys(cfg)}, strict=True)
    model.requires_grad_(False)
    return model.eval()


def export_vqgan(src, dst, overwrite: bool = False, cfg: VQGANConfig = F16_N1024) -> Path:
    """Write the ~120 MB (29.6M float32 values) of a VQGAN checkpoint that DCKD needs as a
    standalone ``.safetensors`` (atomically; an existing file only with ``overwrite``)."""
    from safetensors.torch import save_file

    from ..io.files import atomic_path

    state = read_vqgan_state(src, cfg)
    dst = Path(dst)
    tensors = {k: state[k].float().contiguous() for k in needed_keys(cfg)}
    with atomic_path(dst, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "taming-vqgan-encoder", "config": json.dumps(cfg.to_dict())})
    return dst
