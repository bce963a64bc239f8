"""PyTorch twin of the onfh-edge 3D-MulDenseNet blocks (src/model/blocks.rs), with the same
module names, so state_dict keys equal the Rust weight names."""
import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        mid = bn_size * growth
        self.norm1 = nn.BatchNorm3d(cin)
        self.conv1 = nn.Conv3d(cin, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(torch.relu(self.norm1(x)))
        y = self.conv2(torch.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class DenseBlock(nn.Module):
    def __init__(self, cin, layers, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(layers))

    def forward(self, x):
        for l in self.layers:
            x = l(x)
        return x


class MulPoolFusion(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm3d(cin)
        self.compress = nn.Conv3d(cin, cout, 1, bias=False)
        self.down = nn.Conv3d(cout, cout, 3, stride=2, padding=1, bias=False)
        self.fuse_norm = nn.BatchNorm3d(3 * cout)
        self.fuse = nn.Conv3d(3 * cout, cout, 1, bias=False)

    def forward(self, x):
        c = self.compress(torch.relu(self.norm(x)))
        avg = nn.functional.avg_pool3d(c, 2, 2)
        mx = nn.functional.max_pool3d(c, 2, 2)
        cv = self.down(c)
        return self.fuse(torch.relu(self.fuse_norm(torch.cat([avg, mx, cv], 1))))
