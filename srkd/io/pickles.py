"""State dicts from pickled PyTorch files, read without running the pickle's code.

Some weights (taming-transformers' VQGAN checkpoints) exist only as pickles that also hold
training objects (Lightning state, optimiser classes) which ``torch.load(weights_only=True)``
refuses. This reader resolves only tensor-rebuilding globals, turns every other global into an
inert placeholder, and so returns the tensors without importing or calling anything else.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import SrkdError


def _dtype_of_storage(name: str) -> torch.dtype | None:
    table = {
        "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
        "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
        "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    }
    return table.get(name)


class _Opaque:
    """Stands for any class or function a checkpoint names that we do not need: never imported,
    never called with effect; pickle's REDUCE/NEWOBJ/BUILD on it only make inert placeholders."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


class _LazyTensor:
    """A tensor's location in the archive; read only if DCKD needs it."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _LazyTensor(storage, offset, size, stride) if isinstance(storage, _StorageRef) else _Opaque()


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive without importing or running anything it names."""

    SAFE = {("collections", "OrderedDict"): OrderedDict}
    REBUILD = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    }

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        if (module, name) in self.REBUILD:
            return self.REBUILD[(module, name)]
        if module == "torch" and _dtype_of_storage(name) is not None:
            return _StorageType(_dtype_of_storage(name))
        return type(f"opaque:{module}.{name}", (_Opaque,), {})

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            storage_type, key = pid[1], str(pid[2])
            if isinstance(storage_type, _StorageType):
                return _StorageRef(key, storage_type.dtype)
            if isinstance(storage_type, torch.dtype):
                return _StorageRef(key, storage_type)
        return _Opaque()


def read_zip_restricted(path: Path, extract: Callable[[object], dict]) -> dict[str, torch.Tensor]:
    """Needed tensors from a torch zip checkpoint whose pickle names arbitrary classes."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SrkdError(f"{path} is neither a torch zip checkpoint nor safetensors ({exc}); is it truncated?") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise SrkdError(f"{path}: no data.pkl in the archive; not a torch checkpoint")
        root = pkl[0].rsplit("/", 1)[0]
        byteorder = zf.read(f"{root}/byteorder").decode().strip() if f"{root}/byteorder" in zf.namelist() else "little"
        if byteorder != "little":
            raise SrkdError(f"{path} was written on a big-endian machine; convert it there with torch.save")
        try:
            obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0]))).load()
        except Exception as exc:  # any malformed pickle is a user-file problem, reported on one line
            raise SrkdError(f"{path}: cannot read the checkpoint's pickle ({type(exc).__name__}: {exc})") from None
        out = {}
        for k, v in extract(obj).items():
            if not isinstance(v, _LazyTensor):
                continue
            raw = bytearray(zf.read(f"{root}/data/{v.storage.key}"))
            flat = torch.frombuffer(raw, dtype=v.storage.dtype) if raw else torch.empty(0, dtype=v.storage.dtype)
            out[k] = flat.as_strided(v.size, v.stride, v.offset).clone()
        return out


def read_pickle(path: Path, extract: Callable[[object], dict]) -> dict[str, torch.Tensor]:
    """The tensors of the state dict ``extract(obj)`` finds in the checkpoint ``path``: torch's
    ``weights_only`` reader first, the restricted reader for pickles that name classes."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-1.6) format
    except pickle.UnpicklingError:
        # weights_only refuses checkpoints that name classes (Lightning stores its callbacks'
        # types as dict keys); read the archive ourselves, still without running any of it.
        return read_zip_restricted(path, extract)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SrkdError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]}); is it truncated?") from None
    return {k: v for k, v in extract(obj).items() if isinstance(v, torch.Tensor)}
