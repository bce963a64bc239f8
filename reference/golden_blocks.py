"""Golden fixtures for a dense block and a MulPoolFusion block (training-mode forward and
backward). Writes tests/fixtures/golden/blocks.safetensors.

    python3 -m pip install torch safetensors
    python3 reference/golden_blocks.py
"""
import os

import torch
from safetensors.torch import save_file

from twin import DenseBlock, MulPoolFusion

torch.manual_seed(99)
out = {}
for name, module, shape in [
    ("dense", DenseBlock(4, 2, 3, 2), (2, 4, 4, 6, 6)),
    ("mpf", MulPoolFusion(6, 5), (2, 6, 4, 6, 8)),
]:
    # Non-trivial batch-norm affine parameters.
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.3)
    for k, v in module.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            out[f"{name}.param.{k}"] = v.clone()
    module.train()
    x = torch.randn(*shape).requires_grad_(True)
    y = module(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    out[f"{name}.x"] = x.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.g"] = g
    out[f"{name}.dx"] = x.grad
    for k, p in module.named_parameters():
        out[f"{name}.grad.{k}"] = p.grad

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "golden", "blocks.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path)
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
