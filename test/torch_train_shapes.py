#!/usr/bin/python3
r"""test/torch_train_shapes.py -- the default `./virtex train` run redone in PyTorch, an
independent check of what the C trainer's default run learns.

Not a test and not a fixture script: `make test` never runs it, and nothing reads its
output. It trains the model of configs/small/bicaptioning_R_50W8_L1_H128.yaml, built by
test/make_fixtures.py (kdexd/virtex's modules, torchvision's Bottleneck), on data/shapes
(made by `./virtex train` or `./virtex synth`) with the same recipe, then greedy-decodes
the val images and scores them as `virtex eval shapes` does:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 test/torch_train_shapes.py

About 17 minutes on 2 cores (torch 1.13, 2 threads; 224 images/s). The recipe: SGD momentum 0.9,
weight decay 1e-4 except OPTIM.NO_DECAY, CNN_LR / LR 0.3, 7000 iterations, 200 linear warmup steps then
cos^2 decay, gradient norm clipped to 10, batch 32 of random train images (one of their
5 captions each; horizontal flip with "left" and "right" swapped), the images resized
and centre-cropped to 64 and normalised, captions of at most 30 tokens, dropout 0.1,
zero_init_residual. The data order, initialisation and dropout draws are torch's own,
so the numbers agree with the C run in distribution, not bit for bit.
"""
import argparse
import json
import math
import os
import random
import re
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import build_model  # noqa: E402

COLOURS = "red orange yellow green blue purple white".split()
SHAPES = "circle square triangle star cross".split()
# A colour+shape phrase, as synth_caption_classes reads it ("a small red circle").
PHRASE = re.compile(r"\b(%s)\s+(?:(?:small|large|big|tiny)\s+)?(%s)\b"
                    % ("|".join(COLOURS), "|".join(SHAPES)))
NO_DECAY = re.compile(r".*textual.(embedding|transformer).*(norm.*|bias)")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
T = 30                       # DATA.MAX_CAPTION_LENGTH
SOS, EOS = 1, 2              # pad and [UNK] are 0, as in the original's vocabulary


def load_split(root, split, size):
    """Images (N,S,S,3) uint8 in annotation order and their captions."""
    d = json.load(open(f"{root}/annotations/captions_{split}2017.json"))
    caps = {im["id"]: [] for im in d["images"]}
    for a in d["annotations"]:
        caps[a["image_id"]].append(a["caption"])
    images = []
    for im in d["images"]:
        x = Image.open(f"{root}/{split}2017/{im['file_name']}").convert("RGB")
        if x.size != (size, size):   # smallest_resize + center_crop for square images
            x = x.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(x))
    return np.stack(images), [caps[im["id"]] for im in d["images"]]


def normalise(x):
    return (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255
            - MEAN) / STD


def mirror(caption):
    return re.sub(r"\b(left|right)\b",
                  lambda m: "right" if m.group(1) == "left" else "left", caption)


def batch_tokens(sp, captions):
    """Padded forward and reversed token rows ([SOS] ... [EOS]) and their lengths."""
    rows = [([SOS] + sp.encode(c.lower()) + [EOS])[:T] for c in captions]
    L = max(len(r) for r in rows)
    fwd = torch.zeros(len(rows), L, dtype=torch.long)
    bwd = torch.zeros_like(fwd)
    for i, r in enumerate(rows):
        fwd[i, :len(r)] = torch.tensor(r)
        bwd[i, :len(r)] = torch.tensor(r[::-1])
    return fwd, bwd, torch.tensor([len(r) for r in rows])


def train(model, sp, images, captions, a):
    groups = [{"params": [p], "lr": a.cnn_lr if "cnn" in n else a.lr,
               "weight_decay": 0.0 if NO_DECAY.match(n) else 1e-4}
              for n, p in model.named_parameters()]
    opt = torch.optim.SGD(groups, momentum=0.9)
    warm = a.warmup

    def multiplier(step):    # the original's LinearWarmupCosineAnnealingLR
        if step < warm:
            return step / warm
        return math.cos(math.pi / 2 * (step - warm) / (a.iterations - warm)) ** 2
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
    order, t0 = [], time.time()
    for it in range(1, a.iterations + 1):
        model.train()
        if len(order) < a.batch_size:
            order += random.sample(range(len(images)), len(images))
        idx, order = order[:a.batch_size], order[a.batch_size:]
        flip = [random.random() < 0.5 for _ in idx]
        x = images[idx].copy()
        x[flip] = x[flip][:, :, ::-1]
        chosen = [random.choice(captions[i]) for i in idx]
        chosen = [mirror(c) if f else c for c, f in zip(chosen, flip)]
        fwd, bwd, lengths = batch_tokens(sp, chosen)
        loss = model(normalise(x), fwd, lengths, bwd)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        schedule.step()
        if it % 100 == 0 or it == a.iterations:
            rate = it * a.batch_size / (time.time() - t0)
            print(f"it {it}/{a.iterations}  loss {loss.item():.3f}  {rate:.0f} img/s",
                  flush=True)


@torch.no_grad()
def greedy(model, x):
    """Greedy captions of the forward direction, [SOS] kept in front at every step."""
    visual = model.visual(x)
    tokens = torch.full((len(x), 1), SOS, dtype=torch.long)
    done = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(T - 1):
        lengths = torch.full((len(x),), tokens.shape[1])
        nxt = model.textual(visual, tokens, lengths)[:, -1].argmax(-1)
        nxt[done] = 0
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= nxt == EOS
        if done.all():
            break
    return [[t for t in row[1:].tolist() if t not in (0, EOS)] for row in tokens]


def score(model, sp, images, captions, show):
    """`virtex eval shapes`: each object of the first reference caption is named with
    its colour and shape, its colour, its shape anywhere in the greedy caption."""
    model.eval()
    objects = named = colours = shapes = 0
    for s in range(0, len(images), 100):
        for k, ids in enumerate(greedy(model, normalise(images[s:s + 100]))):
            text, ref = sp.decode(ids), captions[s + k][0]
            if s + k < show:
                print(f"    {text:58s} | {ref}")
            want = [m.groups() for m in PHRASE.finditer(ref)]
            got = [m.groups() for m in PHRASE.finditer(text)]
            for colour, shape in dict.fromkeys(want):
                objects += 1
                named += (colour, shape) in got
                colours += any(c == colour for c, _ in got)
                shapes += any(h == shape for _, h in got)
    print(f"  on {len(images)} val images: {100 * named / objects:.1f}% of the {objects} "
          f"objects are named with their colour and shape\n  (their colour is named for "
          f"{100 * colours / objects:.1f}%, their shape for {100 * shapes / objects:.1f}%)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/shapes")
    ap.add_argument("--iterations", type=int, default=7000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--cnn-lr", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    sp = spm.SentencePieceProcessor(model_file=f"{a.root}/vocab.model")
    model = build_model("bicaptioning", "transdec_postnorm::L1_H128_A2_F512",
                        sp.get_piece_size(), T, 0.1, stem_width=8)
    for m in model.visual.cnn.modules():      # torchvision's zero_init_residual=True
        if m.__class__.__name__ == "Bottleneck":
            nn.init.zeros_(m.bn3.weight)
    train_images, train_captions = load_split(a.root, "train", a.size)
    val_images, val_captions = load_split(a.root, "val", a.size)
    train(model, sp, train_images, train_captions, a)
    print("held-out images: greedy caption  |  a reference caption")
    score(model, sp, val_images, val_captions, show=4)


if __name__ == "__main__":
    main()
