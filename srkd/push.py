"""Publish a model on the Hugging Face Hub in the layout people already load from.

The repository holds ``model.safetensors`` (the srkd model file, metadata included), ``config.json``
(architecture, constructor arguments and scale: what ``PyTorchModelHubMixin`` writes) and a model
card ``README.md`` whose YAML header carries ``library_name: srkd``, the tags, ``pipeline_tag:
image-to-image``, the licence and the datasets, followed by the provenance (method, teacher and
its hash, data, steps), the evaluation table when the file records one, and how to load it.
Uploads go through ``huggingface_hub`` (``HfApi.create_repo`` and ``upload_folder``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .errors import SrkdError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
TAGS = ["super-resolution", "knowledge-distillation", "image-to-image", "srkd"]


def _provenance_rows(prov: dict) -> list[tuple[str, str]]:
    method = prov.get("method")
    if isinstance(method, dict):
        method = method.get("name") or json.dumps(method, sort_keys=True)
    teacher = prov.get("teacher")
    if isinstance(teacher, dict):
        teacher = f"{teacher.get('ref', teacher.get('arch', ''))} (sha256 {str(teacher.get('sha256', ''))[:16]})".strip()
    data = prov.get("data")
    if isinstance(data, (list, tuple)):
        data = ", ".join(map(str, data))
    rows = [("method", method), ("teacher", teacher), ("data", data), ("steps", prov.get("steps")),
            ("converted from", prov.get("converted_from")), ("source sha256", prov.get("source_sha256")),
            ("srkd version", prov.get("srkd_version")), ("git commit", prov.get("git_commit"))]
    return [(k, str(v)) for k, v in rows if v not in (None, "", [])]


def _eval_rows(prov: dict) -> list[tuple[str, float, float]]:
    metrics = prov.get("metrics") or prov.get("eval") or {}
    rows = []
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            if isinstance(value, dict) and "psnr" in value:
                rows.append((name, float(value["psnr"]), float(value.get("ssim", float("nan")))))
    return rows


def model_card(repo_id: str, model, metadata: dict, provenance: dict, license: str, datasets: list[str]) -> str:
    arch, scale = model.arch, int(model.scale)
    lines = ["---", "library_name: srkd", "tags:"] + [f"- {t}" for t in TAGS] + [f"- {arch}", f"- x{scale}"]
    lines += ["pipeline_tag: image-to-image", f"license: {license}"]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    lines += ["---", "", f"# {repo_id.split('/')[-1]}", "",
              f"A x{scale} {arch} super-resolution model made with [srkd](https://pypi.org/project/srkd/).", ""]
    prov_rows = _provenance_rows(provenance)
    if prov_rows:
        lines += ["## Provenance", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in prov_rows] + [""]
    evals = _eval_rows(provenance)
    if evals:
        lines += ["## Evaluation", "", "Y-PSNR / SSIM, benchmark protocol (MATLAB-bicubic LR, shave = scale).", "",
                  "| set | PSNR | SSIM |", "|---|---|---|"] + [f"| {n} | {p:.2f} | {s:.4f} |" for n, p, s in evals] + [""]
    lines += ["## Use", "", "```bash", "pip install srkd", f"srkd upscale photo.png -o photo_x{scale}.png --model hf://{repo_id}",
              "```", "", "```python", "import srkd", "", f'image_x{scale} = srkd.upscale(image, model="hf://{repo_id}")', "```", "",
              f"Configuration: `{json.dumps(model.config(), sort_keys=True)}` (also in `config.json`).", ""]
    return "\n".join(lines)


def write_folder(model_file, folder: Path, repo_id: str, license: str = "apache-2.0", datasets: list[str] | None = None,
                 overwrite: bool = False) -> Path:
    """The repository's files in ``folder`` (what ``--dry-run`` leaves for inspection)."""
    if not REPO_ID.match(repo_id):
        raise SrkdError(f"bad repository id '{repo_id}': expected owner/name")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise SrkdError(f"{folder} already exists and is not empty; pass --overwrite to replace its files")
    folder.mkdir(parents=True, exist_ok=True)
    model = model_file.model
    shutil.copyfile(model_file.path, folder / "model.safetensors")
    config = {"arch": model.arch, "scale": int(model.scale), "config": model.config(), "library": "srkd",
              "format": model_file.metadata.get("format", "srkd")}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = model_card(repo_id, model, model_file.metadata, model_file.provenance, license, list(datasets or []))
    (folder / "README.md").write_text(card)
    return folder


def push(model_file, repo_id: str, private: bool = False, revision: str | None = None, token: str | None = None,
         endpoint: str | None = None, folder: Path | None = None, license: str = "apache-2.0",
         datasets: list[str] | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload the folder; returns the commit URL."""
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="srkd-push-") as tmp:
        target = write_folder(model_file, Path(folder or tmp), repo_id, license, datasets, overwrite=True)
        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(folder_path=str(target), repo_id=repo_id, revision=revision,
                                     commit_message=f"srkd push: {model_file.model.arch} x{model_file.model.scale}")
        except HfHubHTTPError as exc:
            raise SrkdError(f"the Hub refused the upload to {repo_id} ({str(exc).splitlines()[0][:200]}); check the token "
                            "(huggingface-cli login or HF_TOKEN) and the repository name") from None
        except Exception as exc:  # noqa: BLE001 - httpx/requests connection errors are not OSError
            raise SrkdError(f"cannot reach the Hub to push {repo_id} ({type(exc).__name__}: {str(exc)[:200]}); "
                            "check the connection and HF_ENDPOINT") from None
    return str(getattr(info, "commit_url", info))
