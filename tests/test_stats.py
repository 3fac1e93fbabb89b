"""Stats: exact per-tick mean/std, reduction across ranks (in-process and over real gloo), stats.jsonl
lines, TensorBoard read back with EventAccumulator, and resume without duplicated ticks."""

import io
import json
import math
import threading

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2

from textgan.files import read_jsonl
from textgan.train.stats import StatsCollector, StatsWriter, is_deterministic_key, truncate_stats

SQRT_1_25 = math.sqrt(1.25)


def read_lines(run_dir):
    return read_jsonl(run_dir / "stats.jsonl")


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(run_dir, tag):
    return [(e.step, e.value) for e in events(run_dir).Scalars(tag)]


# ---------------------------------------------------------------- StatsCollector, one rank

def test_mean_std_num_of_numbers_and_tensors_of_any_shape():
    stats = StatsCollector()
    for value in (1.0, 2, np.float32(3.0)):
        stats.report("Loss/G/adv", value)
    stats.report("Loss/G/adv", torch.tensor([4.0], requires_grad=True))  # a live loss: detached
    stats.report("Loss/D/r1", torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    stats.report("Loss/D/r1", np.array([]))  # no values: changes nothing
    stats.report("Augment/p", True)
    summary = stats.tick_summary()
    assert summary["Loss/G/adv"] == {"num": 4, "mean": 2.5, "std": pytest.approx(SQRT_1_25, abs=1e-15)}
    assert summary["Loss/D/r1"] == {"num": 4, "mean": 2.5, "std": pytest.approx(SQRT_1_25, abs=1e-15)}
    assert summary["Augment/p"] == {"num": 1, "mean": 1.0, "std": 0.0}


def test_summary_resets_and_skips_names_without_values():
    stats = StatsCollector()
    stats.report("a", 5.0)
    stats.report("empty", torch.zeros([0]))
    assert set(stats.tick_summary()) == {"a"}
    assert stats.tick_summary() == {}  # the next tick starts from nothing
    stats.report("a", 1.0)
    assert stats.tick_summary()["a"]["mean"] == 1.0


def test_accumulates_in_float64():
    stats = StatsCollector()
    stats.report("x", torch.full([1000], 0.1, dtype=torch.float32))  # float32 sum would drift
    stats.report("x", 1e8)
    assert stats.tick_summary()["x"]["mean"] == pytest.approx((1000 * float(np.float32(0.1)) + 1e8) / 1001, rel=1e-15)


def test_reduce_needs_a_way_to_agree_on_names():
    with pytest.raises(ValueError, match="all_gather_object_fn"):
        StatsCollector().tick_summary(reduce_fn=lambda t: t)


# ---------------------------------------------------------------- two ranks

class ThreadWorld:
    """Collectives between threads: each rank is a thread; a barrier makes them meet."""

    def __init__(self, size):
        self.size = size
        self.slots = [None] * size
        self.barrier = threading.Barrier(size)
        self.calls = []

    def _exchange(self, rank, obj):
        self.barrier.wait()  # previous round fully read
        self.slots[rank] = obj
        self.barrier.wait()
        return list(self.slots)

    def all_gather_object(self, rank):
        return lambda obj: self._exchange(rank, obj)

    def all_reduce_sum(self, rank):
        def reduce(tensor):
            self.calls.append(tuple(tensor.shape))
            return torch.stack(self._exchange(rank, tensor.clone())).sum(dim=0)
        return reduce


def report_rank_values(stats, rank):
    """Rank 0 and rank 1 report different values and different name sets."""
    if rank == 0:
        stats.report("Loss/G/adv", torch.tensor([1.0, 2.0, 3.0]))
        stats.report("Loss/D/r1", torch.tensor([]))  # a name with no values on this rank
    else:
        stats.report("Loss/G/adv", 4.0)
        stats.report("Loss/G/adv", torch.tensor(5.0))
        stats.report("Data/skipped", 1.0)  # only this rank skipped a sample


def check_two_rank_summary(summary):
    assert summary["Loss/G/adv"] == {"num": 5, "mean": 3.0, "std": pytest.approx(math.sqrt(2.0), abs=1e-15)}
    assert summary["Data/skipped"] == {"num": 1, "mean": 1.0, "std": 0.0}
    assert "Loss/D/r1" not in summary


def test_two_ranks_in_process_equal_the_stats_over_all_values():
    world = ThreadWorld(2)
    results = [None, None]

    def rank_main(rank):
        stats = StatsCollector()
        report_rank_values(stats, rank)
        results[rank] = stats.tick_summary(world.all_reduce_sum(rank), world.all_gather_object(rank))

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_two_rank_summary(results[0])
    assert results[0] == results[1]  # every rank gets the same numbers
    # one reduction per tick, over the union of names (3 names x [count, sum, sumsq]) on both ranks
    assert world.calls == [(3, 3), (3, 3)]


def _gloo_rank(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    def gather(obj):
        gathered = [None, None]
        dist.all_gather_object(gathered, obj)
        return gathered

    stats = StatsCollector()
    report_rank_values(stats, rank)
    summary = stats.tick_summary(dist.all_reduce, gather)  # all_reduce works in place, returns None
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(summary, f)
    dist.destroy_process_group()


@pytest.mark.multiproc
def test_two_ranks_over_real_gloo(tmp_path):
    mp.spawn(_gloo_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    check_two_rank_summary(summaries[0])
    assert summaries[0] == summaries[1]


# ---------------------------------------------------------------- StatsWriter

TICK1 = {"Loss/G/adv": {"num": 4, "mean": 0.5, "std": 0.25}, "Timing/sec_per_kimg": {"num": 1, "mean": 3.0, "std": 0.0}}


def test_jsonl_line_is_exact_and_tensorboard_gets_the_means(tmp_path):
    with StatsWriter(str(tmp_path)) as writer:
        writer.append(1, 4.0, TICK1, timestamp=1000.5)
        writer.append(2, 8.0, {"Loss/G/adv": {"num": 4, "mean": float("nan"), "std": float("inf")}}, timestamp=1001.0)
    text = (tmp_path / "stats.jsonl").read_text().splitlines()
    assert json.loads(text[0]) == {
        "Progress/tick": {"num": 1, "mean": 1.0, "std": 0.0},
        "Progress/kimg": {"num": 1, "mean": 4.0, "std": 0.0},
        "Loss/G/adv": {"num": 4, "mean": 0.5, "std": 0.25},
        "Timing/sec_per_kimg": {"num": 1, "mean": 3.0, "std": 0.0},
        "timestamp": 1000.5,
    }
    assert list(json.loads(text[0])) == ["Progress/tick", "Progress/kimg", "Loss/G/adv", "Timing/sec_per_kimg", "timestamp"]
    assert json.loads(text[1])["Loss/G/adv"] == {"num": 4, "mean": None, "std": None}  # strict JSON, no NaN
    assert scalars(tmp_path, "Loss/G/adv") == [(4000, 0.5)]  # step = cur_nimg; NaN not plotted
    assert scalars(tmp_path, "Progress/kimg") == [(4000, 4.0), (8000, 8.0)]
    assert scalars(tmp_path, "Timing/sec_per_kimg") == [(4000, 3.0)]


def test_deterministic_keys_exclude_timing_resources_and_timestamp():
    assert is_deterministic_key("Loss/G/adv") and is_deterministic_key("Progress/kimg")
    assert not is_deterministic_key("Timing/sec_per_tick")
    assert not is_deterministic_key("Resources/peak_mem_gb")
    assert not is_deterministic_key("timestamp")


def test_disabled_writer_writes_nothing(tmp_path):
    writer = StatsWriter(str(tmp_path / "run"), enabled=False)
    entry = writer.append(1, 4.0, TICK1)
    writer.add_image_grid("fakes", np.zeros([4, 4, 3], np.uint8), 4.0)
    writer.add_text("t", "x", 4.0)
    writer.add_hparams({"a": 1}, {"HParams/m": 1.0}, 4.0)
    writer.close()
    assert entry["Loss/G/adv"]["mean"] == 0.5
    assert not (tmp_path / "run").exists()


def _loss(tick, run):
    return {"Loss/G/adv": {"num": 1, "mean": float(tick) + run, "std": 0.0}}


def test_resume_truncates_later_ticks_and_purges_tensorboard(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    with StatsWriter(str(uninterrupted)) as writer:
        for tick in (1, 2, 3):
            writer.append(tick, 4.0 * tick, _loss(tick, 0))

    resumed = tmp_path / "resumed"
    with StatsWriter(str(resumed)) as writer:  # killed during tick 3, after its line was written
        for tick in (1, 2, 3):
            writer.append(tick, 4.0 * tick, _loss(tick, 0 if tick < 3 else 100))
    with StatsWriter(str(resumed), resume_kimg=8.0) as writer:  # the checkpoint is at tick 2
        assert [line["Progress/tick"]["mean"] for line in read_lines(resumed)] == [1.0, 2.0]
        writer.append(3, 12.0, _loss(3, 0))

    def deterministic(lines):
        return [{k: v for k, v in line.items() if is_deterministic_key(k)} for line in lines]

    assert deterministic(read_lines(resumed)) == deterministic(read_lines(uninterrupted))
    assert scalars(resumed, "Loss/G/adv") == [(4000, 1.0), (8000, 2.0), (12000, 3.0)]  # 103 purged


def test_truncation_drops_a_torn_last_line(tmp_path):
    with StatsWriter(str(tmp_path), tensorboard=False) as writer:
        writer.append(1, 4.0, TICK1)
        writer.append(2, 8.0, TICK1)
    with open(tmp_path / "stats.jsonl", "a") as f:
        f.write('{"Progress/tick": {"num": 1, "mea')  # killed mid-write
    assert truncate_stats(str(tmp_path / "stats.jsonl"), resume_kimg=12.0) == 2
    assert [line["Progress/kimg"]["mean"] for line in read_lines(tmp_path)] == [4.0, 8.0]
    assert truncate_stats(str(tmp_path / "stats.jsonl"), resume_kimg=0.0) == 0
    assert (tmp_path / "stats.jsonl").read_text() == ""


def test_images_text_and_hparams_read_back(tmp_path):
    grid = np.zeros([20, 30, 3], np.uint8)
    grid[:, :15] = 255
    png = tmp_path / "grid.png"
    Image.fromarray(grid).save(png)
    with StatsWriter(str(tmp_path / "run")) as writer:
        writer.add_image_grid("fakes", grid, 4.0)
        writer.add_image_grid("fakes_png", str(png), 8.0)
        writer.add_image_grid("fakes_tensor", torch.from_numpy(grid).permute(2, 0, 1), 8.0)
        writer.add_text("grid/captions", "a red circle", 4.0)
        writer.add_hparams({"loss": {"r1_gamma": 0.1, "grad_clip": None}, "seed": 3}, {"HParams/fid10k": 12.5}, 8.0)
    acc = events(tmp_path / "run")
    for tag, step in (("fakes", 4000), ("fakes_png", 8000), ("fakes_tensor", 8000)):
        image = acc.Images(tag)[0]
        assert (image.step, image.width, image.height) == (step, 30, 20)
        decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert np.array_equal(decoded, grid)
    assert acc.Tensors("grid/captions/text_summary")[0].tensor_proto.string_val == [b"a red circle"]
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss.r1_gamma"].number_value == 0.1
    assert hparams["seed"].number_value == 3
    assert hparams["loss.grad_clip"].string_value == "None"
    assert [(e.step, e.value) for e in acc.Scalars("HParams/fid10k")] == [(8000, 12.5)]
