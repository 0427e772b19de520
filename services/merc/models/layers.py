"""Building blocks shared by the spectrogram and face CNNs, and their configs' (de)serialisation."""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields

from torch import nn


def conv_stage(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
    """``convs`` 3x3 conv + batch norm + ReLU, then 2x2 max pooling (VGG style)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class DictConfig:
    """to_dict / from_dict for config dataclasses (config.json next to the weights)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name: f for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for k, v in kwargs.items():
            # JSON has no tuples; restore the ones the dataclass declares.
            if isinstance(v, list) and "tuple" in str(known[k].type):
                kwargs[k] = tuple(v)
            # A nested config (a trainer's model or adapter settings) comes back as its own class.
            elif isinstance(v, dict) and known[k].default_factory is not MISSING:
                nested = known[k].default_factory()
                if isinstance(nested, DictConfig):
                    kwargs[k] = type(nested).from_dict(v)
        return cls(**kwargs)
