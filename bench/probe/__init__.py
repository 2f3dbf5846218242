"""The pixel probe every SSL method reads out with (REFERENCE §6), one stage a module.

`feature_cache` keeps extracted feature maps per backbone and window, `bank` holds a data set's
maps at native size, `sampler` draws each member's pixels, `mlp` is the batched ensemble, `train`
fits it with the loss-plateau rule, `predict` projects first and upsamples after, `uncertainty`
is DatasetDDPM's filter. The names a plugin needs are re-exported here.
"""
from __future__ import annotations

from bench.probe.bank import FeatureBank, global_l2_scale
from bench.probe.mlp import EnsembleMLP
from bench.probe.predict import chunk_logits, predict_probs, predict_votes, predict_window_probs, predict_window_votes
from bench.probe.train import ProbeConfig, accumulate_grads, make_optimizer, train_probe

__all__ = ["EnsembleMLP", "FeatureBank", "ProbeConfig", "accumulate_grads", "chunk_logits",
           "global_l2_scale", "make_optimizer", "predict_probs", "predict_votes", "predict_window_probs",
           "predict_window_votes", "train_probe"]
