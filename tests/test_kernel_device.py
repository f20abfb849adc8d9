"""The kernel in tiles, and features that stay on their device until K⁺/K⁻ are reduced.

"Stays on the device" is checked with a model on the meta device: a meta tensor has no data,
so any copy to host memory raises, and a result still on meta proves none happened.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coinfluence.errors import UserError
from coinfluence.influence import features as feat
from coinfluence.influence.analyze import AnalyzeOptions, check_analysis_options, kernel_streaming
from coinfluence.influence.kernel import K_plus_minus, co_influence_kernel, mean_over_targets
from coinfluence.influence.layerwise import features_layerwise
from tests.test_rollout import tiny_llama

PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
COMPLETIONS = [[14, 15], [16, 17, 18], [19]]
KNOBS = {"normalization": "seq-mean", "max_completion_length": 4, "temperature": 1.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_kernel_equals_the_untiled_product(dtype):
    g = torch.Generator().manual_seed(0)
    targets, train = torch.randn(37, 19, generator=g, dtype=dtype), torch.randn(53, 19, generator=g, dtype=dtype)
    whole = targets.double() @ train.double().T
    for tile in (1, 8, 36, 1000):  # tiles that do not divide either side, and one past both
        K = co_influence_kernel(targets, train, tile=tile)
        assert K.dtype == torch.float64 and K.shape == (37, 53)
        torch.testing.assert_close(K, whole, rtol=1e-12, atol=1e-12)


def test_kernel_and_its_reduction_stay_on_the_features_device():
    targets, train = torch.empty(6, 5, device="meta"), torch.empty(8, 5, device="meta")
    K = co_influence_kernel(targets, train, tile=3)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # on the host, like the analysis's
    K_plus, K_minus = K_plus_minus(K, rewards, 4)
    assert {K.device.type, K_plus.device.type, mean_over_targets(K_minus).device.type} == {"meta"}
    assert K_plus.shape == K_minus.shape == (6, 2)


@pytest.mark.parametrize("features", [feat.features_loop, features_layerwise])
def test_features_stay_on_the_device_only_when_asked(features):
    model = tiny_llama(0).to("meta")
    kept = features(model, PROMPTS, COMPLETIONS, 0, on_device=True)
    assert kept.device.type == "meta" and kept.shape[0] == 3
    with pytest.raises(NotImplementedError, match="meta"):  # the default collects them in host memory
        features(model, PROMPTS, COMPLETIONS, 0)


def test_feature_rows_buffer_is_on_the_chunks_device_only_when_asked():
    chunk = torch.empty(2, 7, device="meta", dtype=torch.float64)
    assert feat.feature_rows(5, chunk, on_device=True).device.type == "meta"
    host = feat.feature_rows(5, chunk, on_device=False)
    assert host.device.type == "cpu" and host.shape == (5, 7) and host.dtype == torch.float64


@pytest.mark.parametrize("kron_rank", [None, 2])
def test_kernel_streaming_keeps_features_and_K_on_the_device(kron_rank):
    model = tiny_llama(0).to("meta")
    rows = {"prompts": np.array(PROMPTS * 2, dtype=object), "completions": np.array(COMPLETIONS * 2, dtype=object)}
    kw = dict(scales=None, project_dim=None, knobs=KNOBS, seed=0, chunk_size=1, progress=False, engine="layerwise",
              kron_rank=kron_rank, num_generations=2)
    K, _ = kernel_streaming(model, feat.select_params(model), rows, rows, 0, on_device=True, **kw)
    assert K.device.type == "meta" and K.shape == (6, 6)
    with pytest.raises(NotImplementedError, match="meta"):
        kernel_streaming(model, feat.select_params(model), rows, rows, 0, **kw)


def test_features_on_device_without_the_kernel_is_refused():
    knobs = {**KNOBS, "scale_rewards": "group", "std": "population", "reward": None, "num_generations": 4}
    check_analysis_options(AnalyzeOptions(features_on_device=True), knobs)
    with pytest.raises(UserError, match="--features-on-device"):
        check_analysis_options(AnalyzeOptions(features_on_device=True, kernel=False), knobs)
