"""textgan generate and textgan.infer: pixels that depend only on (model, prompt, seed, settings), the result
folder (PNGs, grid, generation.json), and every bad input refused with exit 2 before anything is written.

The models are freshly initialised tiny nets (no training), saved both as `textgan export` files and as a
hand-made run directory with one complete checkpoint; their text tower is the built-in textgan-demo-clip
with random weights, as in the demo.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from textgan import __version__, cli
from textgan.config import load_config, to_yaml
from textgan.errors import UsageError
from textgan.export import FORMAT as EXPORT_FORMAT
from textgan.files import sha256_file
from textgan.infer import generate, load_model, parse_seeds, read_prompt_file
from textgan.infer.output import image_name
from textgan.nets import build_networks_from_config
from textgan.train.checkpoint_dir import COMPLETE, FORMAT as CHECKPOINT_FORMAT, WEIGHTS_FILE
from textgan.train.grids import render_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.shards=x", "data.resolution=16", "model.channel_base=512", "model.channel_max=32", "model.z_dim=16",
        "model.w_dim=16", "model.mapping_layers=1", "text_encoder.model=textgan-demo-clip",
        "text_encoder.random_weights=true"]
CGAN = ["model.arch=cgan", "loss.pl_weight=0", "loss.style_mixing_prob=0"]
C_DIM = 128  # textgan-demo-clip's embedding size
RED, BLUE, GREEN = ("a red circle above a blue square", "a small blue triangle on the left",
                    "a large green diamond in the center")


def tiny_config(arch):
    return load_config(None, TINY + (CGAN if arch == "cgan" else []) + ["desc=tiny"])


def fresh_G_state(cfg, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G, D = build_networks_from_config(cfg, C_DIM)
    if cfg.model.arch == "stylegan2":
        G.mapping.w_avg.normal_(generator=torch.Generator().manual_seed(seed))  # a trained run's is not 0
    return G.state_dict(), D.state_dict()


def write_export(path, arch):
    cfg = tiny_config(arch)
    G_state, _ = fresh_G_state(cfg)
    torch.save({"format": EXPORT_FORMAT, "version": 1, "config": to_yaml(cfg), "arch": arch, "c_dim": C_DIM,
                "text_encoder": {"model": "textgan-demo-clip", "pretrained": None, "random_weights": True},
                "kimg": 0.016, "tick": 1, "G_ema": G_state}, path)
    return str(path)


def write_run(run_dir, cfg, best=None):
    """A run directory as training leaves it: config.yaml and one complete checkpoint (the G_ema of write_export
    for the same config), and with `best` the same checkpoint as RUN/best/<best>."""
    G_state, D_state = fresh_G_state(cfg)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    places = [(run_dir / "checkpoints" / "000000.016", "000000.016")]
    places += [(run_dir / "best" / best, best)] if best else []
    for ckpt, tag in places:
        ckpt.mkdir(parents=True)
        torch.save({"G": G_state, "D": D_state, "G_ema": G_state}, ckpt / WEIGHTS_FILE)
        torch.save({"state": {"cur_nimg": 16, "tick": 1}}, ckpt / "client_state.pt")
        (ckpt / COMPLETE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, "tag": tag, "serial": 1,
                                                 "finite": True}))
    return run_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"stylegan2": write_export(root / "sg2.pt", "stylegan2"), "cgan": write_export(root / "cgan.pt", "cgan"),
            "run": str(write_run(root / "00003-tiny", tiny_config("stylegan2")))}


@pytest.fixture(scope="module")
def models(files):
    return {arch: load_model(files[arch], device="cpu") for arch in ("stylegan2", "cgan")}


def by_key(samples):
    return {(s.prompt, s.seed): s.image for s in samples}


# ---------------------------------------------------------------------- input parsing (no torch)


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("1,5,9", [1, 5, 9]), ("7", [7]),
                                         ("0-2,10,20-21", [0, 1, 2, 10, 20, 21]), (" 3 - 4 , 8", [3, 4, 8]),
                                         ("5-5", [5]), ("4294967295", [2**32 - 1])])
def test_seeds_are_read_like_stylegan3(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("1-x", "is not a seed or a range"), ("-3", "is not a seed or a range"),
                                           ("", "is not a seed or a range"), ("1,,2", "is not a seed or a range"),
                                           ("5-1", "runs backwards; write 1-5"), ("0-3,2", "seed 2 is given twice"),
                                           ("4294967296", "seeds go up to 4294967295")])
def test_bad_seeds_name_the_fix(text, message):
    with pytest.raises(UsageError, match=message):
        parse_seeds(text)


def test_a_prompt_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(f"# shapes\n\n{RED}\n   \n  # indented comment\n {BLUE} \n{RED}\n")
    assert read_prompt_file(str(path)) == [RED, BLUE, RED]  # duplicates kept: each is a row of images


# ---------------------------------------------------------------------- the API: reproducible pixels


@pytest.mark.parametrize("arch", ["stylegan2", "cgan"])
def test_pixels_do_not_depend_on_batch_size_prompt_order_or_other_prompts(models, files, arch):
    model = models[arch]
    seeds = [0, 1, 2]
    one = by_key(generate(model, [RED, BLUE], seeds, batch=1))
    four = by_key(generate(model, [RED, BLUE], seeds, batch=4))
    reordered = by_key(generate(model, [GREEN, BLUE, RED], list(reversed(seeds)), batch=5))
    fresh = by_key(generate(load_model(files[arch], device="cpu"), [BLUE], [2, 0, 1], batch=3))  # a new process's view
    assert one.keys() == four.keys() and len(one) == 6
    for key, image in one.items():
        assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
        assert np.array_equal(image, four[key]) and np.array_equal(image, reordered[key]), key
    for key, image in fresh.items():
        assert np.array_equal(image, one[key]), key
    assert not np.array_equal(one[(RED, 0)], one[(RED, 1)])  # the seed matters
    assert not np.array_equal(one[(RED, 0)], one[(BLUE, 0)])  # and so does the prompt


def test_truncated_pixels_do_not_depend_on_batching_either(models):
    model = models["stylegan2"]
    kwargs = dict(psi=0.5, trunc_cutoff=2, centre="conditional")
    one = by_key(generate(model, [RED, BLUE], [0, 1], batch=1, **kwargs))
    four = by_key(generate(model, [BLUE, GREEN, RED], [1, 0], batch=4, **kwargs))
    assert all(np.array_equal(one[key], four[key]) for key in one)


def test_float_output_is_the_generators_own_and_rounds_to_the_uint8_images(models):
    model = models["stylegan2"]
    floats = generate(model, [RED], [4], output="float")[0].image
    z = torch.randn([1, model.G.z_dim], generator=torch.Generator().manual_seed(4))  # StyleGAN3's z-per-seed
    with torch.no_grad():
        expected = model.G(z, model.embed([RED]), noise_mode="const")[0]
    assert floats.dtype == torch.float32 and torch.equal(floats, expected)
    pixels = generate(model, [RED], [4])[0].image
    assert np.array_equal(pixels, ((floats + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def test_the_prompt_embedding_is_the_one_training_computes(models):
    """Built the one way (textgan.train.text, fixed seed for a random tower): c equals the training conditioner's."""
    from textgan.train.text import TextConditioner

    model = models["cgan"]
    training = TextConditioner(model.cfg.text_encoder, {}, "cpu")
    for prompt in (RED, BLUE):
        assert torch.equal(model.embed([prompt])[0], training.encode([prompt])[0])
    torch.testing.assert_close(model.embed([RED, BLUE]), training.encode([RED, BLUE]))  # in a shared pass: last bits


def test_psi_0_with_the_global_centre_gives_one_image_for_every_seed_and_prompt(models):
    samples = generate(models["stylegan2"], [RED, BLUE], [0, 1, 2], psi=0.0, centre="global")
    assert all(np.array_equal(s.image, samples[0].image) for s in samples)
    assert not np.array_equal(samples[0].image, generate(models["stylegan2"], [RED], [0])[0].image)


def test_psi_0_with_the_conditional_centre_gives_each_prompt_its_own_image(models):
    images = by_key(generate(models["stylegan2"], [RED, BLUE], [0, 1], psi=0.0, centre="conditional"))
    assert np.array_equal(images[(RED, 0)], images[(RED, 1)])  # the prompt's centre, whatever the seed
    assert np.array_equal(images[(BLUE, 0)], images[(BLUE, 1)])
    assert not np.array_equal(images[(RED, 0)], images[(BLUE, 0)])


@pytest.mark.parametrize("kwargs, message", [
    (dict(psi=0.7), "has no styles"), (dict(trunc_cutoff=2), "has no styles")])
def test_a_cgan_refuses_truncation(models, kwargs, message):
    with pytest.raises(UsageError, match=message):
        generate(models["cgan"], [RED], [0], **kwargs)


def test_a_run_dir_a_checkpoint_dir_and_an_export_give_the_same_pixels(files):
    run = files["run"]
    ckpt = os.path.join(run, "checkpoints", "000000.016")
    expected = generate(load_model(files["stylegan2"], device="cpu"), [RED], [0, 1], psi=0.5)
    for path in (run, ckpt):
        model = load_model(path, device="cpu")
        assert (model.kind, model.kimg, model.tick) == ("checkpoint", 0.016, 1)
        assert model.weights_file == os.path.join(ckpt, WEIGHTS_FILE)
        assert model.sha256 == sha256_file(os.path.join(ckpt, WEIGHTS_FILE))
        got = generate(model, [RED], [0, 1], psi=0.5)
        assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))


def test_the_api_needs_no_deepspeed(files, tmp_path):
    script = f"""
import sys
from textgan.infer import generate, load_model
samples = generate(load_model({files['cgan']!r}, device="cpu"), ["a red circle"], [0, 1])
print(len(samples), sorted(m for m in sys.modules if m.split(".")[0] == "deepspeed"))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "2 []"


# ---------------------------------------------------------------------- textgan generate


def textgan_generate(*argv):
    return cli.main(["generate", *map(str, argv), "--device", "cpu", "--no-progress"])


def test_generate_writes_one_png_per_prompt_and_seed_a_captioned_grid_and_the_record(models, files, tmp_path, capsys):
    outdir = tmp_path / "out"
    code = textgan_generate(files["stylegan2"], "--prompt", RED, "--prompt", BLUE, "--seeds", "0-1,5", "--grid",
                            "--trunc", "0.7", "--trunc-cutoff", "2", "--outdir", outdir)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    folder = outdir / "00000-tiny"  # numbered, named after the run's desc
    assert f"6 image(s) of 2 prompt(s) x 3 seed(s) written to {folder}" in printed.out
    names = [image_name(i, p, s) for i, p in enumerate([RED, BLUE]) for s in (0, 1, 5)]
    assert names[0] == "000-a-red-circle-above-a-blue-square-seed0000.png"
    assert sorted(os.listdir(folder)) == sorted(names + ["generation.json", "grid.png"])

    record = json.loads((folder / "generation.json").read_text())
    assert record["textgan"] == __version__
    assert record["model"]["path"] == files["stylegan2"] and record["model"]["kind"] == "export"
    assert record["model"]["sha256"] == sha256_file(files["stylegan2"])
    assert (record["prompts"], record["seeds"]) == ([RED, BLUE], [0, 1, 5])
    assert (record["psi"], record["trunc_cutoff"], record["centre"], record["noise_mode"]) == (0.7, 2, "conditional",
                                                                                              "const")
    assert record["centre_samples"] == 2048 and record["device"] == "cpu" and record["grid"] == "grid.png"
    assert record["images"] == [{"prompt_index": i, "prompt": p, "seed": s, "path": image_name(i, p, s)}
                                for i, p in enumerate([RED, BLUE]) for s in (0, 1, 5)]
    assert any("RANDOM weights" in w for w in record["warnings"])

    api = generate(models["stylegan2"], [RED, BLUE], [0, 1, 5], psi=0.7, trunc_cutoff=2)
    for sample, entry in zip(api, record["images"]):
        png = np.asarray(Image.open(folder / entry["path"]))
        assert png.shape == (16, 16, 3) and np.array_equal(png, sample.image), entry["path"]
    floats = torch.from_numpy(np.stack([s.image for s in api])).permute(0, 3, 1, 2).float() / 127.5 - 1
    grid, layout = render_grid(floats, [f"{s.prompt} (seed {s.seed})" for s in api], ncol=3)
    assert (layout.nrow, layout.ncol) == (2, 3)  # prompts as rows, seeds as columns
    assert np.array_equal(np.asarray(Image.open(folder / "grid.png")), grid)

    # a second call never touches the first result: it gets the next number
    assert textgan_generate(files["stylegan2"], "--prompt", RED, "--seeds", "0", "--outdir", outdir) == 0
    assert sorted(os.listdir(outdir)) == ["00000-tiny", "00001-tiny"]
    assert sorted(os.listdir(outdir / "00001-tiny")) == [names[0], "generation.json"]
    assert np.array_equal(np.asarray(Image.open(outdir / "00001-tiny" / names[0])),
                          generate(models["stylegan2"], [RED], [0])[0].image)


def test_generate_reads_prompts_from_a_file_and_records_a_checkpoints_weights(files, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# two prompts\n{GREEN}\n\n{RED}\n")
    assert textgan_generate(files["run"], "--prompts", prompts, "--seeds", "3", "--outdir", tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "00000-tiny" / "generation.json").read_text())
    weights = os.path.join(files["run"], "checkpoints", "000000.016", WEIGHTS_FILE)
    assert record["model"]["weights_file"] == weights and record["model"]["sha256"] == sha256_file(weights)
    assert record["prompts"] == [GREEN, RED] and record["psi"] == 1.0 and record["centre_samples"] is None
    assert [i["path"] for i in record["images"]] == [image_name(0, GREEN, 3), image_name(1, RED, 3)]


BAD_INPUTS = [
    (lambda f, t: [t / "nope", "--prompt", RED], "no model at"),
    (lambda f, t: [t / "empty-dir", "--prompt", RED], "holds no complete checkpoint"),
    (lambda f, t: [t / "notes.txt", "--prompt", RED], "is not a textgan generator file"),
    (lambda f, t: [f["cgan"], "--prompts", t / "comments.txt"], "holds no prompt"),
    (lambda f, t: [f["cgan"], "--prompts", t / "missing.txt"], "no such file"),
    (lambda f, t: [f["cgan"]], "no prompt given: pass --prompt TEXT"),
    (lambda f, t: [f["cgan"], "--prompt", " "], "an empty prompt"),
    (lambda f, t: [f["cgan"], "--prompt", RED, "--seeds", "1-x"], "is not a seed or a range"),
    (lambda f, t: [f["cgan"], "--prompt", RED, "--seeds", "9-2"], "runs backwards"),
    (lambda f, t: [f["stylegan2"], "--prompt", RED, "--trunc", "1.5"], "psi must be within [0, 1]"),
    (lambda f, t: [f["stylegan2"], "--prompt", RED, "--trunc", "-0.1"], "psi must be within [0, 1]"),
    (lambda f, t: [f["stylegan2"], "--prompt", RED, "--trunc", "nan"], "psi must be within [0, 1]"),
    (lambda f, t: [f["cgan"], "--prompt", RED, "--trunc", "0.7"], "model.arch=cgan has no styles"),
    (lambda f, t: [f["stylegan2"], "--prompt", RED, "--trunc", "0.7", "--trunc-cutoff", "99"], "in 1..6 (this generator has 6 ws)"),
    (lambda f, t: [f["cgan"], "--prompt", RED, "--batch", "0"], "--batch 0: must be at least 1"),
    (lambda f, t: [f["cgan"], "--prompt", RED, "--trunc", "x"], "invalid float value"),
]


@pytest.mark.parametrize("make_argv, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_fix_and_writes_nothing(files, tmp_path, capsys, make_argv, message):
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "comments.txt").write_text("# nothing yet\n\n")
    before = sorted(os.listdir(tmp_path))
    code = textgan_generate(*make_argv(files, tmp_path), "--outdir", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("usage: textgan generate") or err.startswith("textgan generate: error: ")
    assert sorted(os.listdir(tmp_path)) == before  # no out/ folder, nothing else


def test_an_outdir_that_is_a_file_exits_2(files, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file\n")
    assert textgan_generate(files["cgan"], "--prompt", RED, "--outdir", tmp_path / "taken") == 2
    assert "is a file; give a directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["taken"] and (tmp_path / "taken").read_text() == "a file\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_exits_2(files, tmp_path, capsys):
    code = cli.main(["generate", files["cgan"], "--prompt", RED, "--device", "cuda", "--outdir", str(tmp_path / "o")])
    assert code == 2 and "CUDA is not available on this machine" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- the README's commands


def readme_block(title: str) -> list:
    """The lines of the bash block of the README's section `## title`, comments dropped."""
    import re

    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split(f"## {title}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_readme_lines(lines, cwd) -> None:
    """Run each line as printed in `cwd`: `textgan ...` as this checkout's textgan (as the installed entry point
    would run it), anything else through bash; each must exit 0."""
    import shlex

    for line in lines:
        if line.startswith("textgan "):
            argv = [sys.executable, "-m", "textgan", *shlex.split(line, comments=True)[1:]]
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600,
                                  env=dict(os.environ, PYTHONPATH=ROOT))
        else:
            proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=cwd, timeout=60)
        assert proc.returncode == 0, (line, proc.stderr[-3000:])


@pytest.mark.slow
def test_the_readme_generate_commands_run_as_printed(tmp_path):
    """In a folder holding what the README assumes (the demo's run with its best checkpoint, and a second demo
    run trained as StyleGAN2; fresh weights stand in for trained ones), every line runs as printed."""
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    runs = {"00000-demo": load_config(demo, ["desc=demo"]),
            "00001-demo": load_config(demo, ["desc=demo", "model.arch=stylegan2"])}
    for name, cfg in runs.items():
        write_run(tmp_path / "runs" / name, cfg, best="shapes_alignment")
    lines = readme_block("Generating images")
    assert sum(line.startswith("textgan generate ") for line in lines) >= 5
    run_readme_lines(lines, tmp_path)
    generated = sorted(os.listdir(tmp_path / "generated"))
    assert generated == ["00000-demo", "00001-demo", "00002-demo", "00003-demo", "00004-demo"]
    first = json.loads((tmp_path / "generated" / "00000-demo" / "generation.json").read_text())
    assert first["seeds"] == list(range(8)) and first["grid"] == "grid.png"
    assert sorted(os.listdir(tmp_path / "samples")) == ["00000-demo"]
