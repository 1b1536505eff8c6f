"""Model references: the one function every command uses to get a model.

A reference is one of
  * ``None`` / ``"default"``: the bundled model (official CARN-M weights, x2/x3/x4 heads, x4 active);
  * a local ``.safetensors`` path written by srkd (``srkd convert`` imports anything else);
  * ``hf://owner/repo[/path/in/repo.safetensors][@revision]`` from the Hugging Face Hub, cached by
    huggingface_hub (``HF_HOME`` and ``HF_HUB_OFFLINE`` are respected);
  * a preset name with official weights (``edsr-baseline-x4``), fetched once through the model zoo.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SrkdError
from ..models.registry import PRESETS
from .checkpoint import ModelFile, load_model_file
from .files import sha256_file
from .zoo import bundled_model_path, preset_weights

HF_PATTERN = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:/(?P<file>[^@]+))?(?:@(?P<rev>[\w./-]+))?$")
DEFAULT_HF_FILE = "model.safetensors"


def resolve(ref: str | None, progress: bool = True) -> Path:
    """Turn a model reference into a local file path (downloading if needed)."""
    if ref is None or ref == "default":
        return bundled_model_path()
    if ref.startswith("hf://"):
        return _hf_download(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return path
    if ref.lower() in PRESETS:
        return preset_weights(ref.lower(), progress)
    if path.suffix or "/" in ref or "\\" in ref:
        raise SrkdError(f"model file not found: {ref}")
    raise SrkdError(f"unknown model '{ref}': not a file, an hf:// reference or a preset ({', '.join(PRESETS)})")


def load_model(ref: str | None = None, scale: int | None = None, progress: bool = True) -> ModelFile:
    """Load a model by reference; ``scale`` selects a head of a multi-scale model or must match."""
    path = resolve(ref, progress)
    return load_model_file(path, scale=scale)


def model_hash(path: Path) -> str:
    """sha256 of a model file (recorded as a teacher's identity in provenance)."""
    return sha256_file(path)


def _hf_download(ref: str) -> Path:
    match = HF_PATTERN.match(ref)
    if not match:
        raise SrkdError(f"bad Hub reference '{ref}': expected hf://owner/repo[/file.safetensors][@revision]")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, filename, revision = match["repo"], match["file"] or DEFAULT_HF_FILE, match["rev"]
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise SrkdError(
            f"{ref} is not in the Hub cache and the Hub cannot be reached (offline or HF_HUB_OFFLINE=1); "
            "download it once when online, or pass a local path"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise SrkdError(f"{ref}: {type(exc).__name__.replace('Error', '')} on the Hub ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise SrkdError(f"cannot fetch {ref} from the Hub ({exc})") from None
