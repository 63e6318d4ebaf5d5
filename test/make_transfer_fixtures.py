#!/usr/bin/python3
r"""test/make_transfer_fixtures.py -- sklearn / PyTorch / NumPy references for the
transfer evaluations (eval.c section 10b, model.h), tested by test/test_transfer.c.

`make test` never runs this script: it reads the committed files it wrote. Run it only
to regenerate them (deterministic, a few seconds):

    /usr/bin/python3 test/make_transfer_fixtures.py   # Debian python: sklearn 1.2,
                                                      # torch 1.13, numpy 1.24
What is matched:
  * the original's scripts/clf_voc07.py train_test_single_svm, run here as written:
    LinearSVC(C, class_weight={1: 2, -1: 1}, penalty l2, squared_hinge, max_iter 2000)
    for C in {0.01, 0.1, 1, 10}, cross_val_score(cv=3, scoring="average_precision"),
    the best mean (strictly greater, from 0) retrained on trainval, AP on test without
    the difficult images, on a fixed L2-normalised feature set with VOC labels;
  * StratifiedKFold(3) folds, average_precision_score on score sets with ties;
  * np.save bytes of float32 arrays (the .npy writer must produce the same file);
  * torch: nn.Linear + CrossEntropyLoss + SGD(momentum 0.9) under the original's
    cosine schedule (a few steps from a fixed init).

Outputs (test/fixtures/):
  transfer.bin  VIRTEXC1 tensor file (model.h section 7; config text empty):
    voc.xtr (Ntr,D) f32, voc.xte (Nte,D) f32     features (rows L2-normalised)
    voc.ltr (Ntr,K) i64, voc.lte (Nte,K) i64     VOC labels 1 / -1 / 0 (difficult)
    voc.cv_ap (K,4) f32      mean 3-fold AP per cost (NaN: a fold trained on one label)
    voc.best (K) i64         index of the chosen cost
    voc.ap (K) f32           test AP of the chosen SVM
    voc.dec (K,4,Nte) f32    decision_function on test of LinearSVC(C) fit on trainval
    voc.w (K,4,D+1) f32      its coef_ and intercept_ (last)
    fold.y.J (n) i64, fold.f.J (n) i64   labels (+1/-1) and StratifiedKFold(3) fold ids
    ap.s.J (n) f32, ap.y.J (n) i64, ap.v.J (1) f32   scores, 0/1 labels, sklearn AP
    lin.w0 (K,C) f32, lin.x (S,B,C) f32, lin.y (S,B) i64, lin.lr (S) f32,
    lin.w (K,C) f32, lin.b (K) f32, lin.loss (S) f32   torch after S steps
  npy_3x5.npy, npy_1x2048.npy, npy_0x4.npy   np.save of arange-based float32 arrays
"""
import os
import sys
import warnings

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_tensorfile  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
COSTS = [0.01, 0.1, 1.0, 10.0]
warnings.filterwarnings("ignore")


def voc_set(rng, n, d, k, centres):
    """Multi-label images: features = sum of their classes' centres + noise, L2-normalised;
    VOC labels 1 / -1, one in ten turned difficult (0) with half the signal."""
    present = rng.random((n, k)) < 0.3
    difficult = rng.random((n, k)) < 0.1
    signal = present * np.where(difficult, 0.5, 1.0)
    x = signal @ centres + 0.7 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.where(present, 1, -1)
    labels[difficult] = 0
    return x.astype(np.float32), labels


def svm_reference(xtr, ltr, xte, lte):
    """clf_voc07.py's train_test_single_svm, plus each cost's trainval SVM."""
    y = np.where(ltr == 1, 1, -1)
    best_ap, best, cv = 0.0, -1, []
    decs, ws = [], []
    for i, c in enumerate(COSTS):
        clf = LinearSVC(C=c, class_weight={1: 2, -1: 1}, penalty="l2", loss="squared_hinge",
                        max_iter=2000)
        ap = cross_val_score(clf, xtr.astype(np.float64), y, cv=3, scoring="average_precision").mean()
        clf.fit(xtr.astype(np.float64), y)
        decs.append(clf.decision_function(xte.astype(np.float64)))
        ws.append(np.concatenate([clf.coef_[0], clf.intercept_]))
        cv.append(ap)
        if ap > best_ap:
            best_ap, best = ap, i
    keep = lte != 0
    test_ap = average_precision_score(lte[keep] == 1, decs[best][keep])
    return cv, best, test_ap, decs, ws


def main():
    rng = np.random.default_rng(0)
    t = []
    # VOC-style SVM probe
    ntr, nte, d, k = 150, 120, 24, 4
    centres = rng.standard_normal((k, d)) * 0.6
    xtr, ltr = voc_set(rng, ntr, d, k, centres)
    xte, lte = voc_set(rng, nte, d, k, centres)
    ltr[:, 3] = np.where(rng.random(ntr) < 0.06, 1, -1)   # a rare class: harder folds
    t += [("voc.xtr", xtr), ("voc.xte", xte), ("voc.ltr", ltr), ("voc.lte", lte)]
    cv_ap, best, ap, dec, w = [], [], [], [], []
    for c in range(k):
        r = svm_reference(xtr, ltr[:, c], xte, lte[:, c])
        cv_ap.append(r[0]); best.append(r[1]); ap.append(r[2]); dec.append(r[3]); w.append(r[4])
        print(f"class {c}: cv AP {np.round(r[0], 4)}, best C {COSTS[r[1]]}, test AP {r[2]:.4f}")
    t += [("voc.cv_ap", np.array(cv_ap)), ("voc.best", np.array(best)), ("voc.ap", np.array(ap)),
          ("voc.dec", np.array(dec)), ("voc.w", np.array(w))]

    # StratifiedKFold(3) folds
    cases = [np.where(ltr[:, c] == 1, 1, -1) for c in range(k)]
    cases += [np.array([1, -1, -1, 1, -1, -1, -1, 1, -1, -1, 1]), np.array([-1, 1] * 7 + [1]),
              np.where(rng.random(31) < 0.2, 1, -1)]
    for j, y in enumerate(cases):
        f = np.empty(len(y), np.int64)
        for i, (_, te) in enumerate(StratifiedKFold(3).split(np.zeros(len(y)), y)):
            f[te] = i
        t += [(f"fold.y.{j}", y), (f"fold.f.{j}", f)]

    # average precision, with ties
    for j, n in enumerate([5, 17, 60, 200, 33]):
        s = rng.standard_normal(n).astype(np.float32)
        if j % 2:
            s = np.round(s, 1).astype(np.float32)       # many ties
        y = (rng.random(n) < 0.35).astype(np.int64)
        y[0] = 1
        v = average_precision_score(y, s.astype(np.float64))
        t += [(f"ap.s.{j}", s), (f"ap.y.{j}", y), (f"ap.v.{j}", np.array([v]))]

    # linear probe: torch nn.Linear + SGD momentum under the cosine schedule
    C, K, B, S = 6, 4, 5, 4
    w0 = (0.01 * rng.standard_normal((K, C))).astype(np.float32)
    xs = rng.standard_normal((S, B, C)).astype(np.float32)
    ys = rng.integers(0, K, (S, B))
    lin = torch.nn.Linear(C, K)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w0))
        lin.bias.zero_()
    opt = torch.optim.SGD(lin.parameters(), lr=0.3, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: np.cos(s / S * np.pi / 2) ** 2)
    lrs, losses = [], []
    for s in range(S):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(torch.from_numpy(xs[s])), torch.from_numpy(ys[s]))
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    t += [("lin.w0", w0), ("lin.x", xs), ("lin.y", ys), ("lin.lr", np.array(lrs)),
          ("lin.w", lin.weight.detach().numpy()), ("lin.b", lin.bias.detach().numpy()),
          ("lin.loss", np.array(losses))]
    size = write_tensorfile(os.path.join(OUT, "transfer.bin"), "", t)
    print(f"wrote test/fixtures/transfer.bin ({size} bytes)")

    # .npy files as numpy writes them
    for name, shape in [("npy_3x5.npy", (3, 5)), ("npy_1x2048.npy", (1, 2048)), ("npy_0x4.npy", (0, 4))]:
        a = (np.arange(int(np.prod(shape)), dtype=np.float32) * 0.25 - 1).reshape(shape)
        np.save(os.path.join(OUT, name), a)
        print(f"wrote test/fixtures/{name}")


if __name__ == "__main__":
    main()
