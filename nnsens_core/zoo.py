"""Architectures, model metadata and block detection.

Architectures:
  * ``paper-mlp``: Linear(d, h) -> BatchNorm1d -> ReLU -> Linear(h, 1) -> BatchNorm1d -> Sigmoid
    (the Sobol paper's Pima network, sizes configurable).
  * ``vgg16`` / ``resnet18``: torchvision's ImageNet-size models (weights are never downloaded here).
  * ``vgg16-small`` / ``resnet18-small``: CIFAR-size variants with a width multiplier, keeping the
    5-block (VGG) / 4-layer (ResNet) structure and torchvision's attribute names, so blocks are found
    the same way and torchvision tooling (e.g. grad-cam target layers) works on both.
  * ``cnn3d-small``: a 3-D CNN for volumes (N, C, D, H, W) in the style of Thibeau-Sutre et al.'s
    grey-matter MRI classifier: blocks of Conv3d + BatchNorm3d + LeakyReLU + MaxPool3d, then
    dropout and fully connected layers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import NnsensError

TABULAR, IMAGE = "tabular", "image"


class PaperMLP(nn.Module):
    """The Sobol paper's network: ``d -> h (BatchNorm, ReLU) -> 1 (BatchNorm) -> sigmoid``."""

    def __init__(self, n_inputs: int = 8, hidden: int = 10, batchnorm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, hidden)
        self.bn1 = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 1)
        self.bn2 = nn.BatchNorm1d(1) if batchnorm else nn.Identity()
        self.out = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn2(self.fc2(self.act1(self.bn1(self.fc1(x)))))).squeeze(-1)


def _vgg_features(width: float, in_channels: int) -> nn.Sequential:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = max(4, int(round(v * width)))
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=False)]
            c = out
    return nn.Sequential(*layers)


class VGG16Small(nn.Module):
    """VGG-16 (configuration D, with BatchNorm) for small inputs: ``features`` has 5 max-pools."""

    def __init__(self, num_classes: int = 3, width: float = 0.125, in_channels: int = 3):
        super().__init__()
        self.features = _vgg_features(width, in_channels)
        c = self.features[-3].num_features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


class CNN3DSmall(nn.Module):
    """Conv3d(3) + BatchNorm3d + LeakyReLU + MaxPool3d(2) blocks of ``width * 2**i`` channels
    (``features``), adaptive average pooling to 3^3, then Dropout, Linear(., 4 * width),
    LeakyReLU, Dropout and Linear(., num_classes) (``classifier``). Any input of at least
    ``2**blocks`` voxels per side is accepted."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, width: int = 8, blocks: int = 4,
                 dropout: float = 0.5):
        super().__init__()
        if not 1 <= int(blocks) <= 6:
            raise NnsensError(f"blocks={blocks!r} must lie in [1, 6]")
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(int(blocks)):
            out = int(width) * 2 ** i
            layers += [nn.Conv3d(c, out, 3, padding=1), nn.BatchNorm3d(out),
                       nn.LeakyReLU(0.01), nn.MaxPool3d(2, 2)]
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool3d(3)
        hidden = 4 * int(width)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * 27, hidden),
                                        nn.LeakyReLU(0.01), nn.Dropout(dropout),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def _resnet18_small(num_classes: int = 3, width: float = 0.125, in_channels: int = 3) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    class _ResNet(ResNet):
        """torchvision ResNet-18 with scaled widths and a 3x3 stem for small images."""

        def __init__(self):
            nn.Module.__init__(self)
            widths = [max(4, int(round(w * width))) for w in (64, 128, 256, 512)]
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU(inplace=False)
            self.maxpool = nn.Identity()
            self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
            self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(widths[3], num_classes)
            for m in self.modules():  # BasicBlock uses inplace ReLU: keep it out of autograd's way
                if isinstance(m, nn.ReLU):
                    m.inplace = False

    return _ResNet()


def _tv_vgg16(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    from torchvision.models import vgg16
    model = vgg16(weights=None, num_classes=num_classes)
    if in_channels != 3:  # e.g. 1 for grey images: the first convolution takes that many
        model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def _tv_resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    from torchvision.models import resnet18
    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:  # e.g. 1 for grey images: the stem convolution takes that many
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


ARCHITECTURES = {
    "paper-mlp": (TABULAR, PaperMLP),
    "vgg16-small": (IMAGE, VGG16Small),
    "resnet18-small": (IMAGE, _resnet18_small),
    "vgg16": (IMAGE, _tv_vgg16),
    "resnet18": (IMAGE, _tv_resnet18),
    "cnn3d-small": (IMAGE, CNN3DSmall),
}


def build(arch: str, **kwargs) -> nn.Module:
    """A freshly initialised model of architecture ``arch`` (see :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise NnsensError(f"arch={arch!r} is unknown; use one of {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch][1](**kwargs)
    except TypeError as exc:
        raise NnsensError(f"arch={arch!r} does not accept {kwargs}: {exc}") from None


def download_pretrained(arch: str) -> nn.Module:
    """torchvision ImageNet weights for ``vgg16``/``resnet18`` (needs internet; never used in tests)."""
    from torchvision import models
    if arch == "vgg16":
        return models.vgg16(weights=models.VGG16_Weights.DEFAULT)
    if arch == "resnet18":
        return models.resnet18(weights=models.ResNet18_Weights.DEFAULT)
    raise NnsensError(f"no pretrained weights for arch={arch!r}; use 'vgg16' or 'resnet18'")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

NORMALISATIONS = {
    "imagenet": "ImageNet (mean 0.485/0.456/0.406, std 0.229/0.224/0.225; 3 channels)",
    "paper": "mean 0.5, std 0.5 (the paper's CIFAR setting: inputs in [-1, 1])",
    "demo": "mean 0.5, std 0.25 (the shipped demo CNNs)",
    "none": "none (inputs in [0, 1])",
}
"""Input normalisations offered wherever one is chosen (upload page, CLI ``--norm``)."""


def normalisation(name: str, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel of normalisation ``name`` (:data:`NORMALISATIONS`) for
    ``channels`` input channels; ``"none"`` gives ``((), ())``."""
    if name not in NORMALISATIONS:
        raise NnsensError(f"normalisation {name!r} is unknown; use one of {list(NORMALISATIONS)}")
    if name == "none":
        return (), ()
    if name == "imagenet":
        if channels != 3:
            raise NnsensError(f"ImageNet normalisation has 3 channels but the model takes {channels}; "
                              "pick 'paper' (0.5/0.5), 'demo' (0.5/0.25) or 'none'")
        return IMAGENET_MEAN, IMAGENET_STD
    std = 0.5 if name == "paper" else 0.25
    return (0.5,) * channels, (std,) * channels


@dataclass(frozen=True)
class ModelSpec:
    """What a page or a core function needs to know about a model besides its weights.

    Image models take inputs normalised as ``(x01 - mean) / std`` where ``x01`` is in [0, 1];
    ``input_shape`` is (C, H, W) for 2-D image models and (C, D, H, W) for 3-D volume models.
    """
    name: str
    arch: str
    task: str  # "tabular" or "image"
    input_shape: tuple[int, ...]  # without batch: (d,), (C, H, W) or (C, D, H, W)
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    arch_kwargs: dict = field(default_factory=dict, compare=False, hash=False)
    resize: str = "letterbox"  # how images of other sizes reach input_shape (preprocess.RESIZE_POLICIES)

    def __post_init__(self):
        if self.task not in (TABULAR, IMAGE):
            raise NnsensError(f"task={self.task!r} must be 'tabular' or 'image'")
        if self.resize not in ("letterbox", "crop", "stretch"):
            raise NnsensError(f"resize={self.resize!r} is unknown; use 'letterbox', 'crop' or 'stretch'")
        if self.task == IMAGE:
            if len(self.input_shape) not in (3, 4):
                raise NnsensError(f"input_shape={self.input_shape} must be (C, H, W) for an image "
                                  "model or (C, D, H, W) for a volume model")
            c = self.input_shape[0]
            for nm, v in (("mean", self.mean), ("std", self.std)):
                if v and len(v) != c:
                    raise NnsensError(f"{nm}={v} must have one value per channel ({c})")
            if any(s <= 0 for s in self.std):
                raise NnsensError(f"std={self.std} must be > 0")

    @property
    def ndim_spatial(self) -> int:
        """2 for image models (C, H, W), 3 for volume models (C, D, H, W), 0 for tabular ones."""
        return len(self.input_shape) - 1 if self.task == IMAGE else 0

    def _stats(self, x: torch.Tensor):
        nsp = self.ndim_spatial or 2
        c = x.shape[-1 - nsp]
        view = (c,) + (1,) * nsp
        mean = torch.tensor(self.mean or (0.0,) * c, dtype=x.dtype, device=x.device).view(view)
        std = torch.tensor(self.std or (1.0,) * c, dtype=x.dtype, device=x.device).view(view)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] image(s) -> model input."""
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> [0, 1] image(s) (not clamped)."""
        mean, std = self._stats(x)
        return x * std + mean

    def input_range(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) of valid model inputs, shaped (C, 1, 1) (volumes: (C, 1, 1, 1)),
        for clamping."""
        mean, std = self._stats(like)
        return (0 - mean) / std, (1 - mean) / std

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


@dataclass
class LoadedModel:
    """A model in eval mode with its metadata and how its weights were matched."""
    module: nn.Module
    spec: ModelSpec
    report: str = ""


def module_of(model) -> nn.Module:
    """The ``nn.Module`` of a :class:`LoadedModel`, or ``model`` itself."""
    return model.module if isinstance(model, LoadedModel) else model


def image_blocks(model: nn.Module) -> dict[str, str]:
    """Blocks of a CNN as ``{label: module name}``: VGG-like (``cnn3d-small`` too) after each
    max-pool of ``features``, ResNet layer1..4.

    Returns an empty dict when no known structure is found (pages then offer a module picker).
    """
    names = dict(model.named_modules())
    if all(f"layer{i}" in names for i in range(1, 5)):
        return {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    features = names.get("features")
    if isinstance(features, nn.Sequential):
        pools = [f"features.{i}" for i, m in enumerate(features) if isinstance(m, (nn.MaxPool2d, nn.MaxPool3d))]
        if pools:
            return {f"block{i + 1}": p for i, p in enumerate(pools)}
    return {}


CONV_TYPES = (nn.Conv2d, nn.Conv3d)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of all Conv2d / Conv3d modules, in forward order (for layer pickers)."""
    return [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]


def last_conv_layer(model: nn.Module) -> str:
    """A sensible default Grad-CAM target: ResNet ``layer4``, else the last Conv2d / Conv3d."""
    names = dict(model.named_modules())
    if "layer4" in names:
        return "layer4"
    convs = conv_layers(model)
    if not convs:
        raise NnsensError("the model has no Conv2d / Conv3d layer; saliency methods need a "
                          "convolutional model")
    return convs[-1]
