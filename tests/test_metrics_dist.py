"""Metrics on 2 real gloo ranks give exactly the values of 1 rank (deterministic shares, gathered in order)."""

import pytest
from dist_util import run_ranks
from metrics_fixture import VAL_IDS, LookupGenerator, encode_ids, metrics_config, write_sets
from tiny_models import register_tiny_clip, tiny_clip_weights

METRICS = ["fid40", "kid40", "is40", "clip_score20", "diversity"]


def _worker(rank, world_size, root, clip_weights):
    import numpy as np
    import torch.distributed as dist
    from metrics_fixture import register_tiny_extractor

    from textgan.metrics import MetricEvaluator
    from textgan.runtime import Runtime

    dist.init_process_group("gloo")
    runtime = Runtime.from_env(device="cpu")
    register_tiny_extractor()
    register_tiny_clip()
    val = np.load(f"{root}/val.npy")
    # 40 fakes in batches of 16 -> batches 0, 2 on rank 0 and 1 on rank 1; real shards 0, 2, 4 / 1, 3, 5.
    cfg = metrics_config(root, f"{root}/val", f"{root}/train", METRICS, clip_model=register_tiny_clip(),
                         clip_pretrained=clip_weights, diversity_captions=5, diversity_samples=3,
                         cache_dir=f"{root}/cache-{world_size}")
    report = MetricEvaluator(cfg, runtime=runtime, log=lambda *a: None).run(
        LookupGenerator(VAL_IDS, val, shift=0.1, noise=0.3), encode_ids)
    return {name: r.results for name, r in report.results.items()}


@pytest.mark.multiproc
def test_two_ranks_give_the_values_of_one_rank(tmp_path):
    import numpy as np

    _, val, _, _ = write_sets(tmp_path)
    np.save(tmp_path / "val.npy", val)
    weights = tiny_clip_weights(tmp_path)
    one = run_ranks(_worker, tmp_path, world_size=1, args=(str(tmp_path), weights), timeout=300)
    two = run_ranks(_worker, tmp_path, world_size=2, args=(str(tmp_path), weights), timeout=300)
    assert two[0] == two[1]  # every rank gets the same report
    assert two[0] == one[0], (one[0], two[0])  # bitwise: same samples, latents and batch neighbours
    assert one[0]["fid40"]["fid"] > 1e-4 and 0 < one[0]["diversity"]["mean"] < 1
    assert one[0]["clip_score20"]["n"] == 20
