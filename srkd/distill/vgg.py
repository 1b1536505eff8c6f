"""A frozen VGG-19 feature extractor (relu1_1 ... relu5_1) for perceptual and contrastive losses.

The layers are laid out exactly as torchvision's ``vgg19().features`` (indices 0..29), so the
ImageNet weights load by name from either source:

* timm's ``vgg19.tv_in1k`` on the Hugging Face Hub (``model.safetensors``: the torchvision
  weights re-published as safetensors; keys ``features.N.weight``), downloaded on first use
  through ``huggingface_hub`` and cached there; ``HF_HUB_OFFLINE`` is respected;
* a local file given as ``vgg_weights=PATH``: a ``.safetensors`` file (timm layout, or any
  prefix before ``features.``) or torchvision's ``vgg19-dcbb9e9d.pth`` (read with
  ``weights_only=True``, no code executed);
* ``hf://owner/repo[/file][@rev]`` for another Hub copy.

``vgg_weights=random`` builds a randomly initialised network: for tests and smoke runs only, and
only when asked for by name. Nothing is downloaded at import time.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SrkdError

HUB_REPO = "timm/vgg19.tv_in1k"
HUB_FILE = "model.safetensors"
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# torchvision vgg19.features: end index (exclusive) of each tapped ReLU
_SLICE_ENDS = (2, 7, 12, 21, 30)
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# ImageNet statistics the torchvision weights were trained with (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OFFLINE_HINT = (
    "give --vgg-weights PATH (--set vgg_weights=PATH; a VGG-19 .safetensors such as timm/vgg19.tv_in1k model.safetensors, or "
    "torchvision's vgg19-dcbb9e9d.pth), run once online so the Hub copy is cached, or pass "
    "vgg_weights=random for a smoke test"
)


class VGG19Features(nn.Module):
    """VGG-19 convolutions up to relu5_1; ``forward`` returns the five ReLU outputs.

    The input is used as given: callers choose the range and normalisation (see
    :func:`prepare_input`). Parameters are frozen and the module stays in eval mode.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                # not in place: a tapped ReLU output must not be modified by the next layer
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*layers)
        assert len(self.features) == _SLICE_ENDS[-1]
        self.source = "random"
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # frozen: a parent's train() must not flip it

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, start = [], 0
        for end in _SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            feats.append(x)
            start = end
        return feats


def prepare_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Map an image in [0, 1] to VGG's input.

    ``imagenet``: ImageNet mean/std normalisation (what the weights were trained on).
    ``raw255``: ``x * 255`` with no normalisation, as the official CSD code feeds it.
    """
    if mode == "raw255":
        return x * 255.0
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std
    raise SrkdError(f"unknown VGG input mode '{mode}' (use raw255 or imagenet)")


def load_vgg19(weights: str | Path | None = "hub", seed: int = 0) -> VGG19Features:
    """A frozen :class:`VGG19Features` with ImageNet weights.

    ``weights``: ``hub``/None (timm's ``vgg19.tv_in1k`` from the Hub cache or the Hub), a local
    path, ``hf://owner/repo[/file][@rev]``, or ``random`` (seeded random init, explicit only).
    """
    net = VGG19Features()
    spec = "hub" if weights is None else str(weights).strip()
    if spec == "random":
        gen = torch.Generator().manual_seed(seed)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.normal_(0, (2.0 / fan_out) ** 0.5, generator=gen)
                    m.bias.zero_()
        net.source = "random"
        return net
    if spec in ("hub", "imagenet", "default"):
        path, source = _hub_file(HUB_REPO, HUB_FILE, None), f"hf://{HUB_REPO}/{HUB_FILE}"
    elif spec.startswith("hf://"):
        m = re.match(r"^hf://([\w.-]+/[\w.-]+)(?:/([^@]+))?(?:@([\w./-]+))?$", spec)
        if not m:
            raise SrkdError(f"bad Hub reference '{spec}' for the VGG weights: expected hf://owner/repo[/file][@rev]")
        path, source = _hub_file(m[1], m[2] or HUB_FILE, m[3]), spec
    else:
        path, source = Path(spec).expanduser(), spec
        if not path.is_file():
            raise SrkdError(f"VGG weights file not found: {spec}; {OFFLINE_HINT}")
    state = _read_state(path)
    net.load_state_dict(_features_state(state, path, net), strict=True)
    net.source = source
    net.requires_grad_(False)
    return net


def _hub_file(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise SrkdError(f"the VGG-19 weights (hf://{repo}/{filename}) are not cached and the Hub cannot be reached; "
                        f"{OFFLINE_HINT}") from None
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise SrkdError(f"VGG-19 weights hf://{repo}/{filename}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise SrkdError(f"cannot fetch the VGG-19 weights hf://{repo}/{filename} ({exc}); {OFFLINE_HINT}") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise SrkdError(f"cannot read VGG weights {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SrkdError(f"{path} does not hold a state dict of VGG weights")
    return state


def _features_state(state: dict, path: Path, net: nn.Module) -> dict[str, torch.Tensor]:
    """Pick ``features.N.{weight,bias}`` for N < 30 out of a full VGG-19 state dict."""
    out = {}
    for key, value in state.items():
        m = re.search(r"(?:^|\.)features\.(\d+)\.(weight|bias)$", key)
        if m and int(m[1]) < _SLICE_ENDS[-1]:
            out[f"features.{m[1]}.{m[2]}"] = value.float()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(out))
    if missing:
        raise SrkdError(f"{path} is not a VGG-19 checkpoint: no {missing[0]} (found {len(out)} of {len(expected)} tensors)")
    for key, ref in expected.items():
        if out[key].shape != ref.shape:
            raise SrkdError(f"{path} is not a VGG-19 checkpoint: {key} has shape {tuple(out[key].shape)}, "
                            f"expected {tuple(ref.shape)}")
    return {k: out[k] for k in expected}
