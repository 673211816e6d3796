"""Checkpoints as safetensors plus JSON: loading one never runs code, and any fault is a clear ``CheckpointError``.

The tensors go to ``NAME.safetensors`` with the JSON metadata (config, step, format) embedded in its header, so the
file alone is complete; ``NAME.json`` beside it is the same metadata for people and chapters to read. Both are
written atomically (dgm.files), so a run killed at any moment leaves the previous checkpoint readable.
"""

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dgm.files import atomic_write_bytes

METADATA_KEY = "dgm"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, of another format, or does not fit the model."""


def checkpoint_path(path, name):
    """``path`` itself if it is a ``.safetensors`` file (or the one beside its ``.json`` sidecar), else
    ``path/name.safetensors`` (a run folder)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors")
    return path / f"{name}.safetensors"


def save_checkpoint(path, tensors, metadata):
    """Write tensors and JSON-able metadata to ``path`` (.safetensors) and ``path`` with suffix .json, atomically."""
    path = Path(path)
    text = json.dumps(metadata, indent=2, sort_keys=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={METADATA_KEY: text}))
    write_sidecar(path, metadata)


def write_sidecar(path, metadata):
    """Write ``path`` with suffix .json from a checkpoint's metadata unless it already says the same: a process
    killed between the two writes of ``save_checkpoint`` leaves the tensors' header, which this restores."""
    sidecar = Path(path).with_suffix(".json")
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    if not sidecar.is_file() or sidecar.read_text(errors="replace") != text:
        atomic_write_bytes(sidecar, text.encode())


def load_checkpoint(path, expected_format):
    """(tensors, metadata) from a .safetensors checkpoint whose metadata has ``format == expected_format``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = path.read_bytes()
        tensors = load_safetensors(data)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:  # KeyError: a dtype torch lacks
        raise unreadable(path, error) from None
    metadata = checkpoint_metadata(path, data)
    if metadata.get("format") != expected_format:
        raise CheckpointError(f"{path} has format {metadata.get('format')!r}, expected {expected_format!r}")
    return tensors, metadata


def unreadable(path, error):
    return CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                           f"{type(error).__name__}: {error}")


def checkpoint_metadata(path, data=None):
    """The metadata in a .safetensors checkpoint's header, read from ``data`` (the file's bytes) if given, else from
    the file without its tensors."""
    try:
        if data is None:
            with open(path, "rb") as file:
                data = file.read(8)  # the header's length, read no further than the file goes (a corrupt one is huge)
                data += file.read(min(int.from_bytes(data, "little"), os.fstat(file.fileno()).st_size))
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(json.loads(data[8:8 + header_length])["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise unreadable(path, error) from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} has metadata of type {type(metadata).__name__}, not a JSON object")
    return metadata


def load_into(module, tensors, prefix, path):
    """Load the tensors named ``prefix + key`` into ``module``, naming missing, unexpected or misshapen keys."""
    own = module.state_dict()
    given = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    misshapen = [f"{name} {tuple(given[name].shape)} vs model {tuple(own[name].shape)}"
                 for name in sorted(set(own) & set(given)) if given[name].shape != own[name].shape]
    mistyped = [f"{name} ({given[name].dtype})" for name in sorted(set(own) & set(given))
                if own[name].is_floating_point() and not given[name].is_floating_point()]
    if missing or unexpected or misshapen or mistyped:
        details = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                   for label, items in (("missing", missing), ("unexpected", unexpected),
                                        ("shape mismatch", misshapen), ("not floating point", mistyped))
                   if items]
        raise CheckpointError(f"{path} does not fit the model ({'; '.join(details)})")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(given[name])
