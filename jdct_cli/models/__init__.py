"""The model zoo: the paper's DCT networks, the ResNet-50 baselines, controls and ablations, and
Torfason et al.'s cResNets on DCT input.

Importing this package imports torch. Public API::

    create_model(name, num_classes=1000, **kw) -> torch.nn.Module   (a JdctNet)
    list_models() -> list[str]
    get_model_info(name) -> ModelInfo
    register_model(name, *, input_kind, description, ...)            decorator, refuses duplicates
    model_cost(name, size=224) -> ModelCost                         params and MACs, counted by hooks

Every model has ``input_kind`` ("dct": ``model(y, cb, cr)``; "rgb"/"ycbcr": ``model(x)``), takes
``model(*inputs)`` uniformly and has ``regularization_loss()`` (a scalar tensor or None).
"""
from __future__ import annotations

from . import zoo as _zoo  # noqa: F401  (registers the networks)
from . import cresnet as _cresnet  # noqa: F401  (registers Torfason et al.'s cResNets)
from .cost import MODELS_FORMAT_VERSION, ModelCost, count_cost, model_cost, zoo_document, zoo_table
from .registry import INPUT_KINDS, ModelInfo, create_model, get_model_info, list_models, register_model
from .resnet import JdctNet

__all__ = ["create_model", "list_models", "get_model_info", "register_model", "ModelInfo", "INPUT_KINDS",
           "JdctNet", "ModelCost", "count_cost", "model_cost", "zoo_table", "zoo_document",
           "MODELS_FORMAT_VERSION"]
