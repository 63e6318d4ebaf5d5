#!/usr/bin/python3
r"""test/bench_loader.py -- the PIL + torchvision reference for `make bench` (loader).

The data pipeline of one training sample as a PyTorch user writes it: PIL opens and
decodes a JPEG (convert("RGB")), torchvision's transforms of SPEC.md's train pipeline
(RandomResizedCrop(224, scale (0.2, 1.0), ratio (3/4, 4/3)), RandomHorizontalFlip with
the caption's left/right swap, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p 0.8),
ToTensor, Normalize(ImageNet)), and sentencepiece encodes the caption. One sample after
another in this process (a DataLoader worker's work), after a warm-up pass.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 test/bench_loader.py \
        DIR N [--threads 1]

DIR is what test/bench wrote: DIR/train2017/000000000001.jpg ... and the captions in
DIR/annotations/captions_train2017.json; the tokenizer is test/fixtures/tokenizer_small.model.
Prints `pil_images_per_s <N / seconds>` and a human-readable line.
"""
import argparse
import glob
import json
import os
import re
import time

import sentencepiece
import torch
from PIL import Image
from torchvision import transforms as T


def swap_left_right(caption):
    """The whole words left and right swapped (as virtex's HorizontalFlip)."""
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left",
                  caption)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("n", type=int)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    here = os.path.dirname(os.path.abspath(__file__))
    sp = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(here, "fixtures", "tokenizer_small.model"))
    files = sorted(glob.glob(os.path.join(a.dir, "train2017", "*.jpg")))
    with open(os.path.join(a.dir, "annotations", "captions_train2017.json")) as f:
        captions = [x["caption"] for x in json.load(f)["annotations"]]
    crop = T.RandomResizedCrop(224, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    to_tensor = T.ToTensor()
    normalize = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def sample(i):
        img = Image.open(files[i % len(files)]).convert("RGB")
        img = crop(img)
        caption = captions[i % len(captions)]
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            caption = swap_left_right(caption)
        x = normalize(to_tensor(jitter(img)))
        ids = [1] + sp.encode(caption) + [2]
        return x, ids

    for i in range(len(files)):          # warm-up: page cache, lazy imports
        sample(i)
    t0 = time.perf_counter()
    for i in range(a.n):
        sample(i)
    dt = time.perf_counter() - t0
    print(f"pil_images_per_s {a.n / dt:.2f}")
    print(f"PIL {Image.__version__} + torchvision transforms + sentencepiece, "
          f"{torch.get_num_threads()} torch thread(s): {a.n} samples in {dt:.2f} s")


if __name__ == "__main__":
    main()
