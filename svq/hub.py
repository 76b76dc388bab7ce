"""`save_pretrained` / `from_pretrained` for the project's models: huggingface_hub's mixin
(config.json + model.safetensors, local folders and hub ids) with strict, explained loading.

The stock `PyTorchModelHubMixin._from_pretrained` loads with `strict=False` and falls back to
pickles; here a weights file that does not match the model is an error naming every
mismatched tensor, and only safetensors are read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from safetensors.torch import load_file

# what a hub request can fail with (offline mode, no such repository or file, HTTP errors)
HUB_ERRORS = (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, EntryNotFoundError)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# owner/name: the only form looked up on the hub (a bare `name` is taken for a local folder)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_hub_id(name: str | Path) -> bool:
    """Whether `name` is looked up on the hub: only when it is `owner/name` (one slash;
    letters, digits, `-`, `_`, `.`) and no such local path exists. Anything else (`./x`, `/x`,
    `~/x`, `a/b/c`, a bare `x`, an existing path) is a local path and never reaches the hub."""
    text = str(name)
    return HUB_ID.match(text) is not None and not os.path.exists(os.path.expanduser(text))


def hub_failure(name: str, error: Exception) -> FileNotFoundError:
    """The error for an `owner/name` that is neither a local folder nor loadable from the hub:
    it says both what was tried locally and on the hub."""
    if isinstance(error, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        why = "was not looked up: offline (HF_HUB_OFFLINE=1)"
    elif isinstance(error, RepositoryNotFoundError):
        why = "was not found on the hub"
    elif isinstance(error, EntryNotFoundError):
        why = f"is on the hub but lacks a file ({error})".splitlines()[0]
    else:
        why = f"could not be fetched ({type(error).__name__}: {str(error).splitlines()[0]})"
    return FileNotFoundError(
        f"local path {name} does not exist (from {os.getcwd()}), and the hub id {name} {why}"
    )


def check_state_dict(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str
) -> None:
    """Raise ValueError naming missing, unexpected, mis-shaped and non-finite tensors."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    nonfinite = [
        k
        for k, v in found.items()
        if k in expected and v.is_floating_point() and not torch.isfinite(v).all()
    ]

    def show(title: str, names: list[str]) -> None:
        if names:
            more = f" ... and {len(names) - 8} more" if len(names) > 8 else ""
            problems.append(f"{title} ({len(names)}): " + ", ".join(names[:8]) + more)

    show("missing from the file", missing)
    show("unexpected in the file", unexpected)
    show("shape mismatch", shapes)
    show("non-finite values", nonfinite)
    if problems:
        raise ValueError(
            f"weights in {source} do not match this model's config:\n  " + "\n  ".join(problems)
        )


class HubMixin(PyTorchModelHubMixin):
    """Mixin for a model whose `__init__(self, config)` takes one config dataclass,
    named by the class attribute `config_class` (which provides `from_dict`)."""

    config_class: type

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):
        """Load from a local folder (config.json + model.safetensors) or a hub id `owner/name`
        (see `is_hub_id`: a path that does not exist is an error, never a hub request)."""
        model_id = str(pretrained_model_name_or_path)
        if is_hub_id(model_id):
            try:
                return super().from_pretrained(model_id, **kwargs)
            except HUB_ERRORS as error:
                raise hub_failure(model_id, error) from None
        model_id = os.path.expanduser(model_id)
        if not os.path.isdir(model_id):
            if os.path.exists(model_id):
                raise NotADirectoryError(f"{model_id} is a file; expected a model folder")
            raise FileNotFoundError(f"model folder {model_id} does not exist")
        if not os.path.isfile(os.path.join(model_id, CONFIG_NAME)):
            raise FileNotFoundError(f"{model_id} has no {CONFIG_NAME}: not a saved {cls.__name__}")
        return super().from_pretrained(model_id, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ):
        config = model_kwargs.get("config")
        if config is None:
            raise FileNotFoundError(f"{model_id}: no {CONFIG_NAME} found")
        if isinstance(config, dict):  # config.json as read; unknown keys are an error
            model_kwargs["config"] = cls.config_class.from_dict(config)
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{model_id} has no {WEIGHTS_NAME}")
        else:
            weights = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        state = load_file(weights, device=str(map_location))
        check_state_dict(model.state_dict(), state, weights)
        model.load_state_dict(state, strict=True)
        return model
