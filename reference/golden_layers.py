"""Golden fixtures for the 3D layers: PyTorch's conv3d, batch norm and pooling, forward
and backward, on small seeded inputs. Writes tests/fixtures/golden/layers.safetensors.

    python3 -m pip install torch safetensors
    python3 reference/golden_layers.py

Tensors are in PyTorch's layout (N, C, D, H, W); the Rust tests move depth before
channels themselves. Each case stores its inputs, parameters, output, the upstream
gradient `g` used for the loss sum(out * g), and the gradients of that loss.
"""
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.set_default_dtype(torch.float32)
out = {}


def leaf(t):
    return t.clone().requires_grad_(True)


# conv3d: (name, in_channels, out_channels, kernel (d, hw), stride (d, hw), padding (d, hw), bias)
convs = [
    ("conv_k3_s1_p1_bias", 3, 4, (3, 3), (1, 1), (1, 1), True),
    ("conv_k3_s2_p1", 3, 5, (3, 3), (2, 2), (1, 1), False),
    ("conv_k1", 3, 6, (1, 1), (1, 1), (0, 0), True),
    ("conv_k3_s12_p01", 3, 4, (3, 3), (1, 2), (0, 1), False),
    ("conv_k23_s21_p01_bias", 3, 2, (2, 3), (2, 1), (0, 1), True),
]
for name, ci, co, (kd, k), (sd, s), (pd, p), bias in convs:
    x = leaf(torch.randn(2, ci, 5, 6, 7))
    conv = torch.nn.Conv3d(ci, co, (kd, k, k), stride=(sd, s, s), padding=(pd, p, p), bias=bias)
    y = conv(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    out[f"{name}.x"] = x.detach()
    out[f"{name}.weight"] = conv.weight.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.g"] = g
    out[f"{name}.dx"] = x.grad
    out[f"{name}.dweight"] = conv.weight.grad
    if bias:
        out[f"{name}.bias"] = conv.bias.detach()
        out[f"{name}.dbias"] = conv.bias.grad

# batch norm, training step then evaluation
bn = torch.nn.BatchNorm3d(4)
with torch.no_grad():
    bn.weight.copy_(torch.rand(4) + 0.5)
    bn.bias.copy_(torch.randn(4))
out["bn.weight"] = bn.weight.detach().clone()
out["bn.bias"] = bn.bias.detach().clone()
x = leaf(torch.randn(2, 4, 3, 5, 5) * 2 + 1)
bn.train()
y = bn(x)
g = torch.randn_like(y)
(y * g).sum().backward()
out["bn.x"] = x.detach()
out["bn.y_train"] = y.detach()
out["bn.g"] = g
out["bn.dx"] = x.grad
out["bn.dweight"] = bn.weight.grad
out["bn.dbias"] = bn.bias.grad
out["bn.running_mean"] = bn.running_mean.clone()
out["bn.running_var"] = bn.running_var.clone()
bn.eval()
with torch.no_grad():
    out["bn.y_eval"] = bn(x.detach())

# pooling with kernel = stride
for name, fn in [("maxpool", torch.nn.functional.max_pool3d), ("avgpool", torch.nn.functional.avg_pool3d)]:
    x = leaf(torch.randn(2, 3, 6, 8, 9))
    y = fn(x, kernel_size=(2, 2, 2), stride=(2, 2, 2))
    g = torch.randn_like(y)
    (y * g).sum().backward()
    out[f"{name}.x"] = x.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.g"] = g
    out[f"{name}.dx"] = x.grad

# trilinear resize (align_corners=False), forward only
x = torch.randn(1, 2, 3, 4, 5)
out["resize.x"] = x
out["resize.y"] = torch.nn.functional.interpolate(x, size=(6, 8, 10), mode="trilinear", align_corners=False)

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "golden", "layers.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path)
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})")
