"""CLIP score, diversity (MS-SSIM) and shapes alignment on inputs whose answer is known."""

import os

import numpy as np
import open_clip
import pytest
import torch
from metrics_fixture import VAL_IDS, LookupGenerator, encode_ids, metrics_config, single_runtime, write_sets
from PIL import Image
from tiny_models import register_tiny_clip, tiny_clip_weights

from textgan.metrics.alignment import shapes_alignment
from textgan.data.decode import decode_jpeg
from textgan.data.loading.samples import SkipCounter, read_shard
from textgan.encoders import load_clip
from textgan.errors import UsageError
from textgan.metrics import MetricEvaluator
from textgan.metrics.clip_score import clip_score_from_embeddings, clip_scores
from textgan.metrics.diversity import pairwise_msssim
from textgan.metrics.reference import captions_for, load_index, select


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    return (root,) + write_sets(root)


def _evaluator(sets, metrics, **changes):
    root, val_dir, _, train_dir, _ = sets
    return MetricEvaluator(metrics_config(root, val_dir, train_dir, metrics, **changes), runtime=single_runtime(),
                           log=lambda *a: None)


def test_clip_score_of_hand_made_embeddings():
    images = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    texts = torch.tensor([[1.0, 0.0], [5.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    expected = [100.0, 100.0, 0.0, 100 / 2 ** 0.5, 0.0]  # scale-free; opposite and orthogonal pairs score 0
    assert clip_score_from_embeddings(images, texts).tolist() == pytest.approx(expected)


def test_clip_scores_equal_open_clip_with_its_own_preprocessing(tmp_path, sets):
    weights = tiny_clip_weights(tmp_path)
    tower = load_clip(register_tiny_clip(), weights)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)  # the tiny model's own input size
    captions = ["a red circle", "two blue squares", "a green triangle above a circle"]
    ours = clip_scores(tower, torch.from_numpy(pixels).permute(0, 3, 1, 2), captions)

    model, _, preprocess = open_clip.create_model_and_transforms(register_tiny_clip(), pretrained=weights)
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(Image.fromarray(p)) for p in pixels]))
        text = model.encode_text(open_clip.get_tokenizer(register_tiny_clip())(captions))
    cosine = torch.nn.functional.cosine_similarity(image, text).numpy()
    np.testing.assert_allclose(ours, 100 * np.maximum(cosine, 0), rtol=1e-4, atol=1e-4)


def test_clip_score_metric_of_a_generator_that_reproduces_the_references(tmp_path, sets):
    root, val_dir, val, _, _ = sets
    weights = tiny_clip_weights(tmp_path)
    ev = _evaluator(sets, ["clip_score40"], clip_model=register_tiny_clip(), clip_pretrained=weights)
    result = ev.run(LookupGenerator(VAL_IDS, val), encode_ids)["clip_score40"]
    index = load_index(val_dir, str(root / "cache"))
    positions = select(index, 40, 0)
    row = {int(i): k for k, i in enumerate(VAL_IDS)}
    reals = torch.from_numpy(val[[row[index.ids[p]] for p in positions]]).permute(0, 3, 1, 2)
    direct = clip_scores(load_clip(register_tiny_clip(), weights), reals, captions_for(index, positions, 40))
    assert result.value == pytest.approx(direct.mean(), rel=1e-5) and result.results["n"] == 40
    assert result.protocol["clip"]["weights_sha256"] and "open_clip" in result.protocol["resizing"]


def test_identical_images_have_ms_ssim_one_and_noise_lowers_it():
    rng = np.random.default_rng(1)
    for resolution in (16, 32, 64):
        image = torch.from_numpy(rng.integers(0, 256, size=(1, 3, resolution, resolution), dtype=np.uint8))
        assert pairwise_msssim(image.repeat(4, 1, 1, 1)) == pytest.approx(1.0, abs=1e-9)
        different = torch.from_numpy(rng.integers(0, 256, size=(4, 3, resolution, resolution), dtype=np.uint8))
        assert pairwise_msssim(different) < 0.3


def test_diversity_is_one_when_latents_are_ignored_and_falls_as_they_matter(sets):
    _, _, val, _, _ = sets
    ev = _evaluator(sets, ["diversity"], diversity_captions=6, diversity_samples=3, batch_size=8)
    values = [ev.run(LookupGenerator(VAL_IDS, val, noise=noise), encode_ids)["diversity"] for noise in (0, 0.2, 0.8)]
    assert values[0].value == pytest.approx(1.0, abs=1e-9)
    assert values[0].value > values[1].value > values[2].value
    assert values[0].results["captions"] == 6 and values[0].results["samples_per_caption"] == 3
    assert values[0].protocol["msssim"]["scales"] == 3 and values[0].protocol["msssim"]["kernel_size"] == 3


def test_shapes_alignment_wraps_the_scorer_and_refuses_other_data(tmp_path, sets):
    from textgan.data.building.builder import BuildConfig, build

    shapes = str(tmp_path / "shapes-val")
    build(BuildConfig(source="shapes", split="val", out=shapes, resolution=32, n=24, samples_per_shard=8, workers=1,
                      progress=False))
    index = load_index(shapes, str(tmp_path / "cache"))
    images = {}
    for shard in index.manifest["shards"]:
        for raw in read_shard(os.path.join(shapes, shard["name"]), shard["samples"], SkipCounter()):
            images[int(raw["__key__"])] = decode_jpeg(raw["jpg"])
    ids = sorted(images)
    by_caption = {c: i for i, texts in zip(index.ids, index.captions) for c in texts}
    G = LookupGenerator(ids, np.stack([images[i] for i in ids]))
    cfg = metrics_config(tmp_path, shapes, None, ["shapes_alignment24"], allow_overlap=True)
    result = MetricEvaluator(cfg, runtime=single_runtime(), log=lambda *a: None).run(
        G, lambda caps: torch.tensor([[float(by_caption[c])] for c in caps]))["shapes_alignment24"]
    positions = select(index, 24, 0)
    captions = captions_for(index, positions, 24)
    direct = shapes_alignment(np.stack([images[index.ids[p]] for p in positions]), captions)
    nested = ("one_object", "two_objects")
    assert {k: v for k, v in result.results.items() if k not in nested} == pytest.approx(
        {k: v for k, v in direct.items() if k not in nested}) and result.value == direct["overall"] > 0.5
    for kind in nested:
        assert result.results[kind] == pytest.approx(direct[kind])

    with pytest.raises(UsageError, match="captioned-shapes captions"):
        _evaluator(sets, ["shapes_alignment8"], reference=_coco_like(tmp_path, sets)).run(
            LookupGenerator(VAL_IDS, sets[2]), encode_ids)


def _coco_like(tmp_path, sets):
    """A copy of the val set whose manifest says it is COCO data."""
    import json
    import shutil

    target = tmp_path / "coco-like"
    shutil.copytree(sets[1], target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["source"] = "coco"
    (target / "manifest.json").write_text(json.dumps(manifest))
    return str(target)
