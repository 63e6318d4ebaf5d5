#!/usr/bin/python3
r"""test/make_image_fixtures.py -- torchvision references for the image transforms
(data.c, model.h section 8b), tested by test/test_image.c.

`make test` never runs this script: it reads the committed files it wrote. Run it only
to regenerate them (deterministic, < 2 s):

    /usr/bin/python3 test/make_image_fixtures.py      # Debian python, torch 1.13,
                                                      # torchvision 0.14, PIL, numpy
What is matched: torchvision 0.14's TENSOR path on the float32 image x = u8 / 255
(torch.from_numpy(u8).permute(2,0,1).float() / 255), i.e.
  F.resized_crop(x, top, left, h, w, [oh, ow], InterpolationMode.BILINEAR)   (antialias
      None = off on tensors in 0.14: torch.nn.functional.interpolate(bilinear,
      align_corners=False))
  F.center_crop(F.resize(x, R, BILINEAR), S)
  F.adjust_brightness / adjust_contrast / adjust_saturation / adjust_hue, F.normalize
  RandomResizedCrop.get_params where it is deterministic (the centre-crop fallback of
      images so elongated that no attempt can succeed)
and PIL's Image.open(png).convert("RGB") for the PNG decode check.

Outputs (all under test/fixtures/):
  image_transforms.bin   VIRTEXC1 tensor file (model.h section 7; config text empty):
    img.a (7,9,3) img.b (12,5,3) img.c (16,20,3) img.d (4,6,3)   i64, the u8 pixels HWC
        (a, b, c: numpy default_rng(0/1/2) uniform; c is a gradient plus noise;
         d: hand-picked colours incl. grays, primaries, ties between channels)
    rc.params (N,7) i64 rows (image index 0=a 1=b 2=c 3=d, top, left, h, w, oh, ow)
    rc.K (3,oh,ow) f32   F.resized_crop of row K
    rs.params (M,3) i64 rows (image index, R, S);  rs.K (3,S,S) f32  resize + center_crop
    jit.factors (4,F) f32: per component (0 brightness, 1 contrast, 2 saturation, 3 hue)
        F factors (exactly representable in float32; unused slots repeat the last)
    jit.<img>.<comp>.<k> (3,H,W) f32  adjust_<comp>(x, factors[comp][k]) for img a, c, d
    seq.K.order (4) i64, seq.K.factors (4) f32, seq.K.out (3,7,9) f32: the four adjust_*
        applied to img.a in the given order with the given factors (ColorJitter.forward)
    norm.a (3,7,9) f32   F.normalize(x_a, ImageNet mean, std)
    fb.params (P,6) i64 rows (H, W, top, left, h, w): get_params fallback boxes,
        scale (0.2, 1.0), ratio (3/4, 4/3)
    png.gray png.la png.rgba png.palette (H,W,3) i64: PIL convert("RGB") of the files
    png.gray16 (H,W) i64: the 16-bit values of image_gray16.png
  image_gray.png image_la.png image_rgba.png image_palette.png image_gray16.png
"""
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

sys.dont_write_bytecode = True      # no test/__pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_tensorfile  # noqa: E402  (the VIRTEXC1 writer)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def images():
    a = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (12, 5, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:16, 0:20]
    grad = np.stack([yy * 15, xx * 12, 255 - yy * 8 - xx * 4], -1)
    noise = np.random.default_rng(2).integers(-20, 21, (16, 20, 3))
    c = np.clip(grad + noise, 0, 255).astype(np.uint8)
    d = np.array([
        [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
        [[255, 255, 0], [0, 255, 255], [255, 0, 255], [10, 200, 200], [200, 10, 200], [200, 200, 10]],
        [[1, 2, 3], [3, 2, 1], [2, 3, 1], [250, 251, 252], [100, 50, 50], [50, 100, 50]],
        [[50, 50, 100], [17, 200, 90], [90, 17, 200], [200, 90, 17], [254, 0, 1], [0, 1, 254]],
    ], dtype=np.uint8)
    return {"a": a, "b": b, "c": c, "d": d}


def as_float(u8):
    return torch.from_numpy(u8.copy()).permute(2, 0, 1).float() / 255


def main():
    torch.set_num_threads(1)
    imgs = images()
    names = ["a", "b", "c", "d"]
    x = {k: as_float(v) for k, v in imgs.items()}
    tensors = [(f"img.{k}", imgs[k].astype(np.int64)) for k in names]

    # resized crops: (image, top, left, h, w, oh, ow)
    rc = [(0, 1, 2, 5, 6, 4, 4), (0, 0, 0, 7, 9, 3, 3), (0, 2, 1, 3, 4, 8, 10),
          (0, 0, 0, 7, 9, 7, 9), (0, 1, 1, 5, 5, 2, 3), (1, 0, 0, 12, 5, 6, 6),
          (1, 3, 1, 8, 3, 5, 5), (2, 2, 3, 10, 15, 7, 7), (2, 0, 0, 16, 20, 9, 9),
          (2, 5, 0, 11, 20, 16, 13), (3, 0, 0, 4, 6, 3, 5), (2, 1, 1, 1, 1, 3, 2)]
    tensors.append(("rc.params", np.array(rc, dtype=np.int64)))
    for k, (i, t, l, h, w, oh, ow) in enumerate(rc):
        y = F.resized_crop(x[names[i]], t, l, h, w, [oh, ow], InterpolationMode.BILINEAR)
        assert y.shape == (3, oh, ow)
        tensors.append((f"rc.{k}", y.numpy()))

    # resize shorter side to R, center crop S (R < S pads with zeros)
    rs = [(0, 5, 4), (0, 7, 7), (0, 7, 4), (0, 3, 5), (0, 10, 6), (1, 4, 4), (1, 6, 3),
          (2, 8, 8), (2, 16, 11), (2, 13, 10), (2, 20, 16), (3, 2, 3), (1, 3, 4)]
    tensors.append(("rs.params", np.array(rs, dtype=np.int64)))
    for k, (i, R, S) in enumerate(rs):
        y = F.center_crop(F.resize(x[names[i]], R, InterpolationMode.BILINEAR), S)
        assert y.shape == (3, S, S)
        tensors.append((f"rs.{k}", y.numpy()))

    # colour adjustments, one component at a time
    factors = np.array([
        [0.625, 1.375, 0.0, 1.0],            # brightness
        [0.6875, 1.375, 0.0, 1.0],           # contrast
        [0.0, 0.75, 1.3125, 2.0],            # saturation
        [-0.09375, 0.046875, 0.5, -0.5],     # hue
    ], dtype=np.float32)
    tensors.append(("jit.factors", factors))
    fns = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    comp = ["brightness", "contrast", "saturation", "hue"]
    for n in ["a", "c", "d"]:
        for ci in range(4):
            for k in range(factors.shape[1]):
                y = fns[ci](x[n], float(factors[ci, k]))
                tensors.append((f"jit.{n}.{comp[ci]}.{k}", y.numpy()))

    # ColorJitter.forward with fixed order and factors
    seqs = [([3, 1, 0, 2], [1.25, 0.75, 1.375, 0.0625]),
            ([0, 1, 2, 3], [0.6875, 1.3125, 0.625, -0.09375]),
            ([2, 3, 1, 0], [1.125, 0.875, 1.4, 0.099])]
    for k, (order, fac) in enumerate(seqs):
        fac = np.array(fac, dtype=np.float32)
        y = x["a"]
        for o in order:
            y = fns[o](y, float(fac[o]))
        tensors += [(f"seq.{k}.order", np.array(order, dtype=np.int64)),
                    (f"seq.{k}.factors", fac), (f"seq.{k}.out", y.numpy())]

    tensors.append(("norm.a", F.normalize(x["a"], MEAN, STD).numpy()))

    # get_params fallback (deterministic: no attempt can fit these shapes)
    fb = []
    for H, W in [(10, 1000), (1000, 10), (3, 500), (500, 7), (2, 41), (41, 2)]:
        for _ in range(3):
            i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(1, H, W), [0.2, 1.0],
                                                        [3.0 / 4.0, 4.0 / 3.0])
            fb.append((H, W, i, j, h, w))
    assert all(r == fb[k - k % 3] for k, r in enumerate(fb)), "fallback not deterministic"
    tensors.append(("fb.params", np.array(fb[::3], dtype=np.int64)))

    # PNG decode references
    rng = np.random.default_rng(3)
    g = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    la = rng.integers(0, 256, (3, 6, 2), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 3, 4), dtype=np.uint8)
    pal = rng.integers(0, 7, (6, 5), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (3, 4), dtype=np.uint16)
    files = {
        "gray": Image.fromarray(g, "L"),
        "la": Image.fromarray(la, "LA"),
        "rgba": Image.fromarray(rgba, "RGBA"),
    }
    p = Image.fromarray(pal, "P")
    p.putpalette(list(rng.integers(0, 256, 7 * 3, dtype=np.uint8).tolist()))
    files["palette"] = p
    for n, im in files.items():
        path = os.path.join(OUT, f"image_{n}.png")
        im.save(path)
        ref = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
        tensors.append((f"png.{n}", ref))
    im16 = Image.new("I;16", (4, 3))
    im16.frombytes(g16.astype("<u2").tobytes())
    im16.save(os.path.join(OUT, "image_gray16.png"))
    back = np.asarray(Image.open(os.path.join(OUT, "image_gray16.png"))).astype(np.int64)
    assert (back == g16).all(), "16-bit PNG round trip"
    tensors.append(("png.gray16", g16.astype(np.int64)))

    size = write_tensorfile(os.path.join(OUT, "image_transforms.bin"), "", tensors)
    print(f"wrote test/fixtures/image_transforms.bin ({size} bytes, {len(tensors)} tensors),"
          f" 5 PNGs (torch {torch.__version__}, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
