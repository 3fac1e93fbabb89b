"""`textgan shards index`: img2dataset-style shards (jpg + txt + json, parquet / _stats.json sidecars) read as
ours, and our shards read as theirs (txt)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image, ImageOps

from test_train_e2e import ROOT, SUBMIT, TINY, stats_lines
from textgan.data.building.cli import main as shards_main
from textgan.data.building.index import index_shards, scan_tar, tar_ends_cleanly
from textgan.data.building.verify import verify_shards
from textgan.data.decode import to_float_image
from textgan.data.loading.loader import eval_loader, train_loader
from textgan.errors import UsageError


def colour(shard: int, i: int) -> tuple:
    return ((shard * 70 + i * 37) % 200 + 20, (i * 91) % 200 + 20, (shard * 50 + i * 13) % 200 + 20)


def caption(shard: int, i: int) -> str:
    return f"photo {i} of shard {shard}, a caption with ünïcode"


def write_img2dataset_shard(directory, shard: int, tried: int, failed=(), size=(32, 32), sidecar="parquet",
                            encode="jpg") -> list:
    """One shard the way img2dataset writes it (webdataset output format): DIR/{shard:05d}.tar holding, for each
    URL that succeeded, KEY.{encode} + KEY.txt + KEY.json with KEY = 5-digit shard + 4-digit index of the URL in
    the shard (failed URLs leave gaps), and the sidecar: {shard:05d}.parquet (one row per URL tried, status
    "success" or "failed_to_download") or {shard:05d}_stats.json ("successes", ...). Returns the keys written."""
    os.makedirs(directory, exist_ok=True)
    name = f"{shard:05d}"
    rows, keys = [], []
    with wds.TarWriter(os.path.join(directory, name + ".tar")) as tar:
        for i in range(tried):
            key = f"{name}{i:04d}"
            ok = i not in failed
            meta = {"url": f"https://example.com/{key}.jpg", "caption": caption(shard, i), "key": key,
                    "status": "success" if ok else "failed_to_download",
                    "error_message": None if ok else "timeout", "width": size[0] if ok else None,
                    "height": size[1] if ok else None, "original_width": 640 if ok else None,
                    "original_height": 480 if ok else None, "exif": None, "sha256": None}
            rows.append(meta)
            if not ok:
                continue
            buf = io.BytesIO()
            Image.new("RGB", size, colour(shard, i)).save(buf, format="PNG" if encode == "png" else "JPEG", quality=95)
            tar.write({"__key__": key, encode: buf.getvalue(), "txt": caption(shard, i),
                       "json": json.dumps(meta).encode()})
            keys.append(key)
    if sidecar == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(directory, name + ".parquet"))
    elif sidecar == "stats":
        with open(os.path.join(directory, name + "_stats.json"), "w") as f:
            json.dump({"count": tried, "successes": len(keys), "failed_to_download": len(failed),
                       "failed_to_resize": 0, "status_dict": {"success": len(keys)}}, f)
    return keys


def truncate(path, keep_fraction=0.6):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction) // 512 * 512 + 100])  # mid-file, not on a block end


def all_eval_samples(directory):
    loader = eval_loader(directory, 4, num_workers=0)
    batches = list(loader)
    return batches, loader


def test_index_reads_parquet_counts_and_the_loader_serves_img2datasets_samples(tmp_path):
    keys = write_img2dataset_shard(tmp_path, 0, 12, failed=(3, 7)) + write_img2dataset_shard(tmp_path, 1, 9, failed=(0,))
    assert len(keys) == 18
    result = index_shards(str(tmp_path))
    m = result.manifest
    assert result.path == str(tmp_path / "manifest.json")
    assert [(s["name"], s["samples"], s["sha256"]) for s in m["shards"]] == [("00000.tar", 10, None), ("00001.tar", 8, None)]
    assert (m["samples"], m["source"], m["split"], m["damaged"]) == (18, "img2dataset", "train", [])
    assert m["counted_from"] == {"parquet": 2, "stats": 0, "scan": 0}
    assert (m["settings"]["resolution"], m["settings"]["image_key"], m["settings"]["resize_on_load"]) == (32, "jpg", "center")

    batches, loader = all_eval_samples(tmp_path)
    assert (loader.skipped, loader.seen) == (0, 18)
    served = {}
    for batch in batches:
        for i, key in enumerate(batch["key"]):
            served[key] = (batch["caption"][i], int(batch["image_id"][i]), to_float_image(batch["pixels"][i]))
    assert sorted(served) == sorted(keys)
    for key, (text, image_id, image) in served.items():
        shard, i = int(key[:5]), int(key[5:])
        assert text == caption(shard, i) and image_id == int(key)  # the caption is the txt; the id is the key
        expected = torch.tensor(colour(shard, i), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=3 / 127.5)
    # training streams them too, deterministically as ours
    first = next(iter(train_loader(tmp_path, 6, seed=3, num_workers=0)))
    again = next(iter(train_loader(tmp_path, 6, seed=3, num_workers=0)))
    assert first["key"] == again["key"] and set(first["key"]) <= set(keys)
    assert first["pixels"].shape == (6, 32, 32, 3)
    assert verify_shards(str(tmp_path)).problems == []


def test_a_brace_pattern_indexes_just_the_tars_it_names_and_stats_sidecars_count(tmp_path):
    for shard in range(3):
        write_img2dataset_shard(tmp_path, shard, 5, failed=(1,), sidecar="stats")
    m = index_shards(str(tmp_path / "{00000..00001}.tar")).manifest
    assert [s["name"] for s in m["shards"]] == ["00000.tar", "00001.tar"]
    assert m["samples"] == 8 and m["counted_from"] == {"parquet": 0, "stats": 2, "scan": 0}
    assert m["settings"]["indexed_from"].endswith("{00000..00001}.tar")
    assert index_shards(str(tmp_path / "*.tar")).manifest["samples"] == 12  # a glob; re-indexing replaces it


def test_a_tar_without_a_sidecar_is_scanned_and_a_truncated_one_reports_its_damage(tmp_path):
    write_img2dataset_shard(tmp_path, 0, 10)
    write_img2dataset_shard(tmp_path, 1, 10, sidecar=None)
    write_img2dataset_shard(tmp_path, 2, 10)
    truncate(tmp_path / "00002.tar")
    assert not tar_ends_cleanly(tmp_path / "00002.tar") and tar_ends_cleanly(tmp_path / "00000.tar")
    readable, image_key = scan_tar(str(tmp_path / "00002.tar"))
    assert 0 < readable < 10 and image_key == "jpg"
    result = index_shards(str(tmp_path))
    m = result.manifest
    assert [s["samples"] for s in m["shards"]] == [10, 10, readable]
    assert m["counted_from"] == {"parquet": 1, "stats": 0, "scan": 2}
    assert m["damaged"] == [{"name": "00002.tar", "readable": readable, "sidecar": 10,
                             "reason": "truncated: the tar does not end with tar's end-of-archive blocks"}]
    # the loader serves every readable sample; the sample cut in two at the end (here its jpg is whole and its
    # json lost) fails to decode and is counted, as in textgan's own shards
    batches, loader = all_eval_samples(tmp_path)
    served = sum(len(b["key"]) for b in batches)
    assert served == 20 + readable and loader.skipped == 1
    report = verify_shards(str(tmp_path))
    assert [p for p in report.problems if "00002.tar" not in p] == []
    assert any("00002.tar: not a readable tar" in p for p in report.problems)


def test_scan_reports_a_sidecar_that_disagrees_with_its_tar(tmp_path):
    write_img2dataset_shard(tmp_path, 0, 6)
    stats = tmp_path / "00001_stats.json"
    write_img2dataset_shard(tmp_path, 1, 6, sidecar="stats")
    stats.write_text(json.dumps({"successes": 9}))
    assert index_shards(str(tmp_path)).manifest["samples"] == 15  # trusted without --scan
    m = index_shards(str(tmp_path), scan=True).manifest
    assert [s["samples"] for s in m["shards"]] == [6, 6] and m["counted_from"]["scan"] == 2
    assert m["damaged"] == [{"name": "00001.tar", "readable": 6, "sidecar": 9,
                             "reason": "its stats sidecar says 9 samples"}]


def test_images_of_another_size_need_a_resolution_and_are_center_cropped_when_loaded(tmp_path):
    write_img2dataset_shard(tmp_path, 0, 4, size=(48, 32), encode="png")  # keep_ratio output, png
    with pytest.raises(UsageError, match=r"first image is 48x32.*pass --resolution R"):
        index_shards(str(tmp_path))
    m = index_shards(str(tmp_path), resolution=16).manifest
    assert (m["settings"]["resolution"], m["settings"]["image_key"]) == (16, "png")
    batch = next(iter(eval_loader(tmp_path, 4, num_workers=0)))
    assert batch["pixels"].shape == (4, 16, 16, 3)
    key = batch["key"][0]
    source = Image.new("RGB", (48, 32), colour(0, int(key[5:])))
    expected = np.asarray(ImageOps.fit(source, (16, 16), method=Image.Resampling.LANCZOS), dtype=np.float32)
    assert torch.equal(batch["pixels"][0], torch.from_numpy(expected.astype(np.uint8)))


def test_bad_sources_fail_clearly_and_write_nothing(tmp_path):
    with pytest.raises(UsageError, match="holds no .tar files"):
        index_shards(str(tmp_path))
    write_img2dataset_shard(tmp_path / "a", 0, 3)
    write_img2dataset_shard(tmp_path / "b", 1, 3)
    with pytest.raises(UsageError, match="1 of 2 tars do not exist"):
        index_shards(str(tmp_path / "a" / "{00000..00001}.tar"))
    with pytest.raises(UsageError, match="tars in 2 directories"):
        index_shards(str(tmp_path / "*" / "*.tar"))
    with pytest.raises(UsageError, match="--split must be one of"):
        index_shards(str(tmp_path / "a"), split="test")
    (tmp_path / "a" / "00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="does not read as parquet.*--scan"):
        index_shards(str(tmp_path / "a"))
    assert not (tmp_path / "a" / "manifest.json").exists() and not (tmp_path / "b" / "manifest.json").exists()
    assert index_shards(str(tmp_path / "a"), scan=True).manifest["samples"] == 3  # --scan does not need it


def test_shards_built_by_textgan_are_refused_and_read_by_open_clips_pipeline(tmp_path):
    out = tmp_path / "ours"
    assert shards_main(["shapes", "--outdir", str(out), "--n", "6", "--resolution", "16", "--no-progress"]) == 0
    with pytest.raises(UsageError, match="already holds shards built by textgan"):
        index_shards(str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    # open_clip's webdataset pipeline: the image under jpg;png;jpeg;webp, the text under txt
    tars = [str(out / s["name"]) for s in manifest["shards"]]
    pairs = list(wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg;png;jpeg;webp", "txt", "json"))
    assert len(pairs) == 6
    for image, text, meta in pairs:
        assert image.size == (16, 16) and text == meta["captions"][0]


def test_the_cli_indexes_prints_the_damage_and_exits_2_on_bad_input(tmp_path, capsys):
    write_img2dataset_shard(tmp_path, 0, 5)
    write_img2dataset_shard(tmp_path, 1, 5, sidecar=None)
    truncate(tmp_path / "00001.tar")
    assert shards_main(["index", str(tmp_path)], prog="textgan shards") == 0
    out = capsys.readouterr().out
    assert "indexed 2 tars" in out and "counts: 1 from parquet, 1 from scan" in out
    assert "DAMAGED: 00001.tar" in out and f"--set data.shards={tmp_path}" in out
    assert shards_main(["index", str(tmp_path / "nothing-*.tar")], prog="textgan shards") == 2
    assert "matches no files" in capsys.readouterr().err


def test_training_runs_on_indexed_img2dataset_shards(tmp_path):
    for shard in range(2):
        write_img2dataset_shard(tmp_path / "data", shard, 40, failed=(5,), size=(24, 20))
    assert shards_main(["index", str(tmp_path / "data"), "--resolution", "16"]) == 0
    sets = TINY + [f"data.shards={tmp_path / 'data'}", "schedule.total_kimg=0.032", "metrics.metrics=[]"]
    cmd = [sys.executable, SUBMIT, "--local", "--config", os.path.join(ROOT, "configs", "demo.yaml"),
           "--outdir", str(tmp_path / "run"), *[x for kv in sets for x in ("--set", kv)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = stats_lines(tmp_path / "run" / "00000-demo")[-1]
    assert last["Progress/kimg"]["mean"] == pytest.approx(0.032) and last["Data/skipped"]["mean"] == 0
