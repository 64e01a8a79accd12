"""Named model families: ``mlp``, ``cnn`` and ``resnet-small``."""

from __future__ import annotations

from torch import nn

from kaon.nn.spec import FamilyModel


def mlp(cfg: FamilyModel, in_shape: tuple[int, int, int], out: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_shape[0] * in_shape[1] * in_shape[2]
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def cnn(cfg: FamilyModel, in_shape: tuple[int, int, int], out: int) -> nn.Module:
    """Stages of conv3x3 → BN → ReLU → maxpool(2), then a linear classifier."""
    layers: list[nn.Module] = []
    channels, h, w = in_shape
    for width in cfg.channels:
        layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not cfg.batchnorm))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm2d(width))
        layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels, h, w = width, h // 2, w // 2
    layers.append(nn.Flatten())
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(channels * h * w, out))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convs with a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def resnet_small(cfg: FamilyModel, in_shape: tuple[int, int, int], out: int) -> nn.Module:
    """A CIFAR-style ResNet: stem, stages doubling width and halving resolution, GAP, linear."""
    width = cfg.width
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    cin = width
    for stage, count in enumerate(cfg.blocks):
        cout = width * 2**stage
        for block in range(count):
            layers.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(cin, out))
    return nn.Sequential(*layers)


FAMILIES = {"mlp": mlp, "cnn": cnn, "resnet-small": resnet_small}
