"""CPU speed for the network, applied from outside it at load: packed weights, C kernels, fp32 attention.

`accelerate(model)` swaps every `nn.Linear` of a model on the CPU for a `PackedLinear` holding the same
parameters and hands the model `CPUOps` (the two seams of model/network.py). The tokens are those of the plain
network (fp32: to fp32 rounding, other summation orders); `Whisper.use_plain()` undoes it. Nothing here knows Whisper:
it works on torch modules and tensors.
"""

from __future__ import annotations

from torch import nn

from . import amx, kernels, packed
from .ops import CPUOps
from .packed import PackedLinear

__all__ = ["CPUOps", "PackedLinear", "accelerate", "amx", "kernels", "packed"]


def accelerate(model: nn.Module) -> nn.Module:
    """Packed Linear layers and `CPUOps` for `model` (a Whisper with `use_ops`), in place; returns it."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear) and not isinstance(child, PackedLinear):
                setattr(module, name, PackedLinear.adopt(child))
    return model.use_ops(CPUOps())
