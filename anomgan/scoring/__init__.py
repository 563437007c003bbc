"""Scoring: from a trained method to image scores, maps and decisions.

``search`` (the batched latent search of the GAN methods) and ``frozen`` (its inference copies
of the networks), ``tiling`` (images larger than the model), ``thresholds`` (calibration),
``metrics`` (AUROC, AUPRO, ...) and ``result`` (what ``detect`` returns).
"""
