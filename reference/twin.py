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


class Stager(nn.Module):
    """3D-MulDenseNet (src/model/stager.rs), same weight names."""

    def __init__(self, cfg):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv = nn.Conv3d(cfg.get("in_channels", 1), cfg["stem_channels"], 3, padding=1, bias=False)
        self.stem.norm = nn.BatchNorm3d(cfg["stem_channels"])
        ch = cfg["stem_channels"]
        self.blocks = nn.ModuleList()
        self.fusions = nn.ModuleList()
        n = len(cfg["block_layers"])
        for i, layers in enumerate(cfg["block_layers"]):
            self.blocks.append(DenseBlock(ch, layers, cfg["growth"], cfg["bn_size"]))
            ch += layers * cfg["growth"]
            if i + 1 < n:
                out = max(1, int(ch * cfg["compression"]))
                self.fusions.append(MulPoolFusion(ch, out))
                ch = out
        self.final_norm = nn.BatchNorm3d(ch)
        self.classifier = nn.Linear(ch, cfg["classes"])

    def features(self, x):
        y = torch.relu(self.stem.norm(self.stem.conv(x)))
        for i, b in enumerate(self.blocks):
            y = b(y)
            if i < len(self.fusions):
                y = self.fusions[i](y)
        return torch.relu(self.final_norm(y))

    def classify(self, f):
        return self.classifier(f.mean(dim=(2, 3, 4)))


class Cbs(nn.Module):
    def __init__(self, cin, cout, k, s):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, stride=s, padding=k // 2, bias=False)
        self.norm = nn.BatchNorm3d(cout)

    def forward(self, x):
        return nn.functional.silu(self.norm(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.conv1 = Cbs(h, h, 1, 1)
        self.conv2 = Cbs(h, h, 3, 1)


class Csp(nn.Module):
    def __init__(self, cin, cout, depth):
        super().__init__()
        h = max(1, cout // 2)
        self.conv1 = Cbs(cin, h, 1, 1)
        self.conv2 = Cbs(cin, h, 1, 1)
        self.conv3 = Cbs(2 * h, cout, 1, 1)
        self.bottlenecks = nn.ModuleList(Bottleneck(h) for _ in range(depth))

    def forward(self, x):
        a = self.conv1(x)
        for b in self.bottlenecks:
            a = a + b.conv2(b.conv1(a))
        return self.conv3(torch.cat([a, self.conv2(x)], 1))


class Stage(nn.Module):
    def __init__(self, cin, cout, depth):
        super().__init__()
        self.down = Cbs(cin, cout, 3, 2)
        self.csp = Csp(cout, cout, depth)

    def forward(self, x):
        return self.csp(self.down(x))


class Detector(nn.Module):
    """3DC-YOLOX (src/model/detector.rs), same weight names and output layout
    (N, cells, 6 + 1 + classes)."""

    def __init__(self, cfg):
        super().__init__()
        w = cfg["widths"]
        d = cfg["csp_depth"]
        hc = cfg["head_channels"]
        self.stem = Cbs(1, w[0], 3, 1)
        self.stages = nn.ModuleList(Stage(w[i - 1], w[i], d) for i in range(1, len(w)))
        self.neck = nn.Module()
        self.neck.reduce = Cbs(w[-1], hc, 1, 1)
        self.neck.csp = Csp(hc + w[-2], hc, d)
        self.head = nn.Module()
        self.head.stem = Cbs(hc, hc, 1, 1)
        self.head.cls = nn.ModuleList([Cbs(hc, hc, 3, 1), Cbs(hc, hc, 3, 1)])
        self.head.cls_pred = nn.Conv3d(hc, cfg["classes"], 1)
        self.head.reg = nn.ModuleList([Cbs(hc, hc, 3, 1), Cbs(hc, hc, 3, 1)])
        self.head.box_pred = nn.Conv3d(hc, 6, 1)
        self.head.obj_pred = nn.Conv3d(hc, 1, 1)

    def forward(self, x):
        y = self.stem(x)
        feats = []
        for s in self.stages:
            y = s(y)
            feats.append(y)
        up = nn.functional.interpolate(self.neck.reduce(feats[-1]), scale_factor=2, mode="nearest")
        y = self.neck.csp(torch.cat([up, feats[-2]], 1))
        y = self.head.stem(y)
        c = self.head.cls_pred(self.head.cls[1](self.head.cls[0](y)))
        r = self.head.reg[1](self.head.reg[0](y))
        out = torch.cat([self.head.box_pred(r), self.head.obj_pred(r), c], 1)
        n, k = out.shape[:2]
        return out.permute(0, 2, 3, 4, 1).reshape(n, -1, k)


def load_model(manifest_path):
    """Build the twin of a model manifest and load its fp16 weights as f32."""
    import json
    import os
    from safetensors.torch import load_file

    with open(manifest_path) as f:
        m = json.load(f)
    arch = m["architecture"]
    net = Detector(arch["config"]) if arch["kind"] == "detector" else Stager(arch["config"])
    state = load_file(os.path.join(os.path.dirname(manifest_path), m["weights"]["file"]))
    state = {k: v.float() for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{manifest_path}: missing {missing}, unexpected {unexpected}")
    return net.eval(), m
