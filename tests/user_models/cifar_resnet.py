"""Someone else's CIFAR ResNet, written as such repositories write it (not our code's style):
the head is called ``linear``, pooling is a function call in ``forward``, shortcuts are
option-A style lambdas, and a checkpoint is saved as ``{"state_dict": ..., "best_prec1": ...}``
with DataParallel's ``module.`` prefix. The tests use it as "a user's own model class"."""

import torch
import torch.nn.functional as F
from torch import nn


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks=(1, 1, 1), num_classes=10, width=8):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], 1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], 2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], 2)
        self.linear = nn.Linear(4 * width, num_classes)

    def _make_layer(self, planes, count, stride):
        layers = []
        for step in [stride] + [1] * (count - 1):
            layers.append(BasicBlock(self.in_planes, planes, step))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def resnet_tiny(num_classes=10):
    """A factory function, as such repositories export (``resnet20()``)."""
    return CifarResNet((1, 1, 1), num_classes=num_classes)


def save_like_them(model, path):
    """Save as their training scripts do: DataParallel keys, a dict with extras."""
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 200, "best_prec1": 91.7, "state_dict": state}, path)
