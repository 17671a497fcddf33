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


def accelerate(model: nn.Module, *, int8: bool = False) -> nn.Module:
    """Packed Linear layers and `CPUOps` for `model` (a Whisper with `use_ops`), in place; returns it.

    int8: the products that go through the 2-byte-weight kernel (a decode step's, a prompt's, the output
    projection) read int8 weights instead, quantized per output row (packed.py); the parameters are unchanged."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear) and not isinstance(child, PackedLinear):
                setattr(module, name, PackedLinear.adopt(child))
    ops = CPUOps()
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.packed.int8 = m.stacked.int8 = int8
    ops.output.int8 = int8
    return model.use_ops(ops)
