#!/usr/bin/python3
r"""test/make_torch_fixtures.py -- torch.save files for the PyTorch interop tests (group
`pytorch`, test/test_pytorch.c), written by PyTorch itself, and the confirmation that
PyTorch, torchvision and Detectron2's conventions accept what `virtex export` writes.

`make test` never runs this script; it reads the committed files. To regenerate them:

    make virtex && /usr/bin/python3 test/make_torch_fixtures.py    # ~30 s

The script calls ./virtex (import, export) itself: the exported files are made and
checked in a temporary directory and only the verdicts are committed (record.* below).

The model is test/make_fixtures.py's VirTex rebuilt from stock PyTorch modules (imported
from there, not copied) at the size of configs/small/tiny_test.yaml with
MODEL.VISUAL.BASE_WIDTH 4 and MODEL.VISUAL.FEATURE_SIZE 128 (a ResNet-50 layout of
widths 4..32, 128 channels out; transdec_postnorm::L1_H64_A2_F128; 100 words; 16
positions), with make_fixtures' random non-trivial weights and calibrated BatchNorm
statistics.

test/fixtures/torch_virtex.pth   torch.save({"model": state_dict, "optimizer": an SGD
                                 state_dict with momentum buffers, "iteration": 1000}),
                                 the layout of the original's CheckpointManager
test/fixtures/torch_resnet.pth   torch.save(cnn.state_dict()) of that model's ResNet with
                                 an fc layer (128 -> 10): a torchvision ResNet state_dict
test/fixtures/torch_zoo.pth      torch.save({"state_dict": {"module." + name: tensor},
                                 "epoch": 3}) of the tensor zoo below (DataParallel names)
test/fixtures/torch_zoo_deflated.pth  the same zip rewritten with deflated entries (torch.load
                                 reads it; checked)
test/fixtures/torch_expected.bin VIRTEXC1 (make_fixtures.write_tensorfile):
    state.<name>      every state_dict entry of the model (float32 / int64)
    zoo.<name>        each zoo tensor as torch's .float() (float types) or int64 makes it,
                      contiguous
    input.images (2,3,64,64), input.tokens / input.noitpac (2,9) i64, input.lengths (2)
    eval.loss_forward, eval.loss_backward, eval.loss_total   model.eval() losses
    record.<check>    int64 1 when the check passed at generation time:
      torch_load_<fmt>          torch.load reads the `virtex export --format <fmt>` file
                                and its tensors equal the model's (torch.equal)
      detectron2_names          the detectron2 export's names are exactly those of the
                                original's detectron2_backbone_state_dict() renaming
      torchvision_strict        ScaledResNet (torchvision's ResNet code, width 4, fc =
                                Identity) .load_state_dict(export, strict=True)
      torchvision_resnet50_strict   torchvision.models.resnet50() with fc = Identity
                                load_state_dict(strict=True) of a width-64 export: a random
                                resnet50 state_dict imported (`virtex import --partial`)
                                and exported again, values equal (made in a temp dir)
      deflated_readable         torch.load reads torch_zoo_deflated.pth
"""
import collections
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torchvision
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures")
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402

CONFIG = "configs/small/tiny_test.yaml"
OVERRIDES = ["MODEL.VISUAL.BASE_WIDTH", "4", "MODEL.VISUAL.FEATURE_SIZE", "128"]
TEXTUAL, V, T_MAX, WIDTH = "transdec_postnorm::L1_H64_A2_F128", 100, 16, 4
LENGTHS, S = [9, 5], 64


def build():
    g = torch.Generator().manual_seed(6)
    model = mf.build_model("virtex", TEXTUAL, V, T_MAX, 0.1, stem_width=WIDTH)
    mf.randomize(model, g)
    mf.calibrate_batchnorm(model, torch.randn(4, 3, S, S, generator=g), g)
    inputs = mf.make_inputs(g, len(LENGTHS), S, LENGTHS, V, max(LENGTHS))
    return model, inputs


def optimizer_state(model, inputs):
    """An SGD state_dict with momentum buffers, as a checkpoint would hold (one step of a
    copy: the saved model is unchanged)."""
    other = copy.deepcopy(model)
    opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    images, tokens, noitpac, lengths = inputs
    other.train()
    other(images, tokens, lengths, noitpac)["loss"].backward()
    opt.step()
    return opt.state_dict()


def zoo():
    """Tensors of every dtype and layout the reader must handle."""
    g = torch.Generator().manual_seed(66)
    base = torch.randn(5, 7, generator=g)
    shared = torch.randn(24, generator=g)
    z = collections.OrderedDict()
    z["f32"] = torch.randn(3, 4, generator=g)
    z["f32_transposed"] = base.t()                              # strides (1, 7)
    z["f32_offset"] = base[2:, 3:]                              # storage offset 17
    z["f32_step"] = base[::2, ::3]                              # strides (14, 3)
    z["f32_channels_last"] = torch.randn(2, 3, 4, 5, generator=g).contiguous(
        memory_format=torch.channels_last)
    z["f16"] = (torch.randn(4, 6, generator=g) * 100).half()
    z["f16_special"] = torch.tensor([6e-8, -6.1e-5, 65504, float("inf"), -0.0, 1e-7], dtype=torch.half)
    z["bf16"] = (torch.randn(3, 5, generator=g) * 1e3).bfloat16().t()
    z["f64"] = torch.randn(7, generator=g, dtype=torch.float64) * 1e-3   # rounded to f32
    z["i64"] = torch.tensor([0, -1, 2**62, -2**63, 12345678901234], dtype=torch.int64)
    z["scalar_i64"] = torch.tensor(7, dtype=torch.int64)
    z["scalar_f32"] = torch.tensor(-2.5)
    z["empty"] = torch.zeros(0, 3)
    z["shared_a"] = shared.view(4, 6)                           # one storage, three views
    z["shared_b"] = shared[6:18].view(3, 4)
    z["shared_c"] = shared.view(2, 3, 4)[1].t()
    z["param"] = nn.Parameter(torch.randn(2, 2, generator=g))   # _rebuild_parameter
    return z


def as_expected(t):
    t = t.detach()
    return (t.float() if t.is_floating_point() else t).contiguous().numpy()


def deflate_copy(src, dst):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def virtex(*args):
    r = subprocess.run([os.path.join(ROOT, "virtex"), *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"virtex {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def original_detectron2_names(cnn_state):
    """The renaming of the original's detectron2_backbone_state_dict(), re-done here."""
    mapping = {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5",
               "bn1": "conv1.norm", "bn2": "conv2.norm", "bn3": "conv3.norm",
               "downsample.0": "shortcut", "downsample.1": "shortcut.norm"}
    out = []
    for name in cnn_state:
        for old, new in mapping.items():
            name = name.replace(old, new)
        out.append(name if name.startswith("res") else f"stem.{name}")
    return out


def same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def check_exports(tmp, model, records):
    state = model.state_dict()
    cnn = collections.OrderedDict((k[len("visual.cnn."):], v) for k, v in state.items()
                                  if k.startswith("visual.cnn."))
    ckpt = os.path.join(tmp, "model.ckpt")
    virtex("import", "test/fixtures/torch_virtex.pth", "--config", CONFIG, "--out", ckpt, *OVERRIDES)
    for fmt in ("torchvision", "virtex", "detectron2"):
        out = os.path.join(tmp, f"{fmt}.pth")
        virtex("export", ckpt, "--format", fmt, "--out", out, "--iteration", "1000")
        got = torch.load(out, map_location="cpu")
        if fmt == "torchvision":
            ok = same(got, cnn)
            tv = mf.ScaledResNet(stem_width=WIDTH)
            tv.fc = nn.Identity()
            tv.load_state_dict(got, strict=True)           # raises on any difference
            records["torchvision_strict"] = int(same(tv.state_dict(), cnn))
        elif fmt == "virtex":
            ok = got["iteration"] == 1000 and same(got["model"], state)
            m2 = mf.build_model("virtex", TEXTUAL, V, T_MAX, 0.1, stem_width=WIDTH)
            m2.load_state_dict(got["model"], strict=True)
            ok = ok and got["model"]["textual.embedding.words.weight"].data_ptr() == \
                got["model"]["backward_textual.embedding.words.weight"].data_ptr()
        else:
            names = original_detectron2_names(cnn)
            records["detectron2_names"] = int(list(got["model"]) == names)
            ok = (got["__author__"] == "virtex.c" and got["matching_heuristics"] is True and
                  all(torch.equal(got["model"][n], v) for n, v in zip(names, cnn.values())))
        records[f"torch_load_{fmt}"] = int(ok)
        print(f"  torch.load of the {fmt} export: {'OK' if ok else 'MISMATCH'}")


def check_resnet50(tmp, records):
    """A real width-64 torchvision resnet50 through import and export (~200 MB, temp)."""
    g = torch.Generator().manual_seed(50)
    r50 = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        for p in r50.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g))
    src = os.path.join(tmp, "r50.pth")
    torch.save(r50.state_dict(), src)
    ckpt, out = os.path.join(tmp, "r50.ckpt"), os.path.join(tmp, "r50_tv.pth")
    virtex("import", src, "--config", CONFIG, "--out", ckpt, "--partial", "textual.,backward_textual.",
           "MODEL.VISUAL.BASE_WIDTH", "64", "MODEL.VISUAL.FEATURE_SIZE", "2048")
    virtex("export", ckpt, "--format", "torchvision", "--out", out)
    fresh = torchvision.models.resnet50(weights=None)
    fresh.fc = nn.Identity()
    fresh.load_state_dict(torch.load(out, map_location="cpu"), strict=True)
    want = {k: v for k, v in r50.state_dict().items() if not k.startswith("fc.")}
    ok = same(fresh.state_dict(), want)
    records["torchvision_resnet50_strict"] = int(ok)
    print(f"  torchvision resnet50 (fc = Identity) strict load of the export: {'OK' if ok else 'MISMATCH'}")


def main():
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    if not os.access(os.path.join(ROOT, "virtex"), os.X_OK):
        sys.exit("build ./virtex first (make virtex)")
    model, inputs = build()
    images, tokens, noitpac, lengths = inputs
    state = model.state_dict()
    torch.save({"model": state, "optimizer": optimizer_state(model, inputs), "iteration": 1000},
               os.path.join(FIXTURES, "torch_virtex.pth"))
    cnn = copy.deepcopy(model.visual.cnn)
    cnn.fc = nn.Linear(8 * WIDTH * 4, 10)
    torch.save(cnn.state_dict(), os.path.join(FIXTURES, "torch_resnet.pth"))
    z = zoo()
    zoo_path = os.path.join(FIXTURES, "torch_zoo.pth")
    torch.save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in z.items()),
                "epoch": 3}, zoo_path)
    deflated = os.path.join(FIXTURES, "torch_zoo_deflated.pth")
    deflate_copy(zoo_path, deflated)
    seeds = os.path.join(ROOT, "test", "corpus", "fuzz_pth")   # `make fuzz` starts from these
    os.makedirs(seeds, exist_ok=True)
    for f in (zoo_path, deflated):
        shutil.copyfile(f, os.path.join(seeds, os.path.basename(f)))

    model.eval()
    with torch.no_grad():
        out = model(images, tokens, lengths, noitpac)
    records = {}
    back = torch.load(deflated)["state_dict"]
    records["deflated_readable"] = int(all(torch.equal(back["module." + k], v) for k, v in z.items()))
    tmp = tempfile.mkdtemp(prefix="virtex_torch_")
    try:
        check_exports(tmp, model, records)
        check_resnet50(tmp, records)
    finally:
        shutil.rmtree(tmp)

    tensors = [(f"state.{k}", v.numpy()) for k, v in state.items()]
    tensors += [(f"zoo.{k}", as_expected(v)) for k, v in z.items()]
    tensors += [("input.images", images.numpy()), ("input.tokens", tokens.numpy()),
                ("input.noitpac", noitpac.numpy()), ("input.lengths", lengths.numpy())]
    for d in ("forward", "backward"):
        tensors.append((f"eval.loss_{d}", np.float32(out[f"loss_{d}"].item())))
    tensors.append(("eval.loss_total", np.float32(out["loss"].item())))
    tensors += [(f"record.{k}", np.array(v, dtype=np.int64)) for k, v in sorted(records.items())]
    cfg = f"# torch_expected.bin: test/make_torch_fixtures.py; {CONFIG} with {' '.join(OVERRIDES)}\n"
    size = mf.write_tensorfile(os.path.join(FIXTURES, "torch_expected.bin"), cfg, tensors)
    print(f"wrote torch_expected.bin ({size} bytes); losses "
          f"{out['loss_forward'].item():.6f} {out['loss_backward'].item():.6f}; records {records}")
    for f in ("torch_virtex.pth", "torch_resnet.pth", "torch_zoo.pth", "torch_zoo_deflated.pth"):
        print(f"  {f}: {os.path.getsize(os.path.join(FIXTURES, f))} bytes")
    if not all(records.values()):
        sys.exit("some checks failed: see record.* above")


if __name__ == "__main__":
    main()
