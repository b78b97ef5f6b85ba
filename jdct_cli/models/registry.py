"""The model registry: names -> factories, plus what each network takes and what the paper reports.

A factory is ``f(num_classes: int = 1000, **kw) -> torch.nn.Module`` registered with
:func:`register_model`; :func:`create_model` calls it, initialises the weights and stamps the
instance with ``arch`` (its name) and ``input_kind``.
"""
from __future__ import annotations

import difflib
import inspect
import operator
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from ..errors import ConfigError, UnknownModelError
from .resnet import init_weights

INPUT_KINDS = ("dct", "rgb", "ycbcr")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a network without building it.

    ``input_kind``: "dct" (forward(y, cb, cr)), "rgb" or "ycbcr" (forward(x), x [B, 3, S, S]).
    ``paper_top1_error`` / ``paper_top5_error``: ImageNet validation error in percent, and
    ``paper_fps``: inference images/s at batch 1024 on one Pascal GPU, as reported in the paper
    (Table 1); None where it reports none. ``diagram``: the authors' diagram file (without .png).
    """

    name: str
    input_kind: str
    description: str
    paper_top1_error: Optional[float] = None
    paper_top5_error: Optional[float] = None
    paper_fps: Optional[float] = None
    diagram: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


_FACTORIES: dict[str, Callable[..., object]] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(name: str, *, input_kind: str, description: str, paper_top1_error: Optional[float] = None,
                   paper_top5_error: Optional[float] = None, paper_fps: Optional[float] = None,
                   diagram: Optional[str] = None):
    """Decorator registering ``factory(num_classes=1000, **kw)`` under ``name``.

    Raises ConfigError (a ValueError) for a name already registered or an unknown input kind.
    """
    if input_kind not in INPUT_KINDS:
        raise ConfigError(f"model {name!r}: input_kind must be one of {INPUT_KINDS}, not {input_kind!r}")

    def decorator(factory):
        if name in _FACTORIES:
            raise ConfigError(f"a model named {name!r} is already registered")
        _FACTORIES[name] = factory
        _INFOS[name] = ModelInfo(name, input_kind, description, paper_top1_error, paper_top5_error,
                                 paper_fps, diagram)
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered names, in registration order (baselines, the seven DCT networks, controls)."""
    return list(_FACTORIES)


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(str(name), list_models(), n=3, cutoff=0.6)
    hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownModelError(f"unknown model {name!r};{hint} known models: {', '.join(list_models())}")


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; raises UnknownModelError listing the known names."""
    try:
        return _INFOS[name]
    except KeyError:
        raise _unknown(name) from None


def create_model(name: str, num_classes: int = 1000, **kw):
    """Build network ``name`` (weights initialised, train mode) for ``num_classes`` outputs.

    ``kw`` go to the factory (only DCT-Ortho takes one: ``ortho_weight``). The result is a
    :class:`jdct_cli.models.resnet.JdctNet` with ``arch``, ``input_kind`` and ``size_multiple``.
    Raises UnknownModelError (unknown name) or ConfigError (bad num_classes or keyword).
    """
    if name not in _FACTORIES:
        raise _unknown(name)
    try:
        count = None if isinstance(num_classes, bool) else operator.index(num_classes)  # numpy ints too
    except TypeError:
        count = None
    if count is None or count < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    num_classes = count
    factory = _FACTORIES[name]
    params = inspect.signature(factory).parameters
    bad = [k for k in kw if k not in params]
    if bad:
        raise ConfigError(f"model {name!r} takes no option(s) {', '.join(sorted(bad))}")
    model = factory(num_classes, **kw)
    init_weights(model)
    model.arch = name
    model.input_kind = _INFOS[name].input_kind
    return model
