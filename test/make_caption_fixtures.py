#!/usr/bin/python3
"""Reference values for the caption metrics of eval.c (test/test_captions.c).

Written from the published definitions of the COCO caption evaluation
(tylin/coco-caption, pycocoevalcap: ptbtokenizer.py, bleu/bleu_scorer.py with
option "closest", cider/cider_scorer.py = CIDEr-D), not by importing pycocoevalcap.
The PTB tokenisation is the rule set documented in model.h section 10a (what the
Stanford PTBTokenizer plus coco-caption's punctuation removal do to captions),
written here independently with regular expressions.

Writes test/fixtures/caption_metrics.json:
  {"tokenize": [[text, tokens], ...],
   "corpora": [{"hyps": [...], "refs": [[...], ...], "cider": x,
                "cider_per_image": [...], "bleu": [b1, b2, b3, b4]}, ...]}
Run: /usr/bin/python3 test/make_caption_fixtures.py
"""
import json
import math
import os
import random
import re
from collections import Counter

# ---------------------------------------------------------------------------
# PTB tokenisation (model.h 10a)

CLITIC = re.compile(r"^(.+)(n't)$|^(.+?)('s|'re|'ve|'d|'ll|'m)$")


def ptb_tokenize(text):
    text = re.sub(r"[A-Z]", lambda m: m.group(0).lower(), text)
    # a comma or colon between two digits belongs to the number
    text = re.sub(r"(?<=\d),(?=\d)", "\x01", text)
    text = re.sub(r"(?<=\d):(?=\d)", "\x02", text)
    text = re.sub(r"[\"()\[\]{};?!,:]", " ", text)
    text = text.replace("\x01", ",").replace("\x02", ":")
    out = []
    for piece in re.split(r"[ \t\n\v\f\r]+", text):
        while True:
            before = piece
            piece = piece.lstrip("'`").rstrip("'`")
            m = re.match(r"^(.*?)(\.+)$", piece)
            if m:
                dots = len(m.group(2))
                if dots >= 2 or "." not in m.group(1):
                    piece = m.group(1)
            if piece == before:
                break
        if re.fullmatch(r"[-.]*", piece):
            continue
        m = CLITIC.match(piece)
        if m:
            stem, clitic = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            out += [stem, clitic]
        else:
            out.append(piece)
    return " ".join(out)


# ---------------------------------------------------------------------------
# n-grams, BLEU ("closest"), CIDEr-D

def ngrams(words, n=4):
    c = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i:i + k])] += 1
    return c


def bleu(hyps, refs):
    tiny, small = 1e-15, 1e-9
    guess, correct = [0] * 4, [0] * 4
    testlen = reflen = 0
    for h, rs in zip(hyps, refs):
        hw = h.split()
        rws = [r.split() for r in rs]
        maxref = Counter()
        for rw in rws:
            for g, c in ngrams(rw).items():
                maxref[g] = max(maxref[g], c)
        for g, c in ngrams(hw).items():
            correct[len(g) - 1] += min(c, maxref[g])
        for k in range(4):
            guess[k] += max(0, len(hw) - k)
        testlen += len(hw)
        reflen += min((abs(len(rw) - len(hw)), len(rw)) for rw in rws)[1]
    ratio = (testlen + tiny) / (reflen + small)
    out = []
    for n in range(1, 5):
        b = 1.0
        for k in range(n):
            b *= (correct[k] + tiny) / (guess[k] + small)
        b = b ** (1.0 / n)
        if ratio < 1:
            b *= math.exp(1 - 1 / ratio)
        out.append(b)
    return out


def cider_d(hyps, refs, sigma=6.0):
    N = len(hyps)
    ref_counts = [[ngrams(r.split()) for r in rs] for rs in refs]
    df = Counter()
    for rcs in ref_counts:
        for g in set(g for rc in rcs for g in rc):
            df[g] += 1
    log_n = math.log(N)

    def tfidf(counts):
        vec = {}
        norm = [0.0] * 4
        for g, tf in counts.items():
            vec[g] = tf * (log_n - math.log(max(1.0, df[g])))
            norm[len(g) - 1] += vec[g] ** 2
        bigrams = sum(tf for g, tf in counts.items() if len(g) == 2)
        return vec, [math.sqrt(x) for x in norm], bigrams

    per_image = []
    for h, rcs in zip(hyps, ref_counts):
        vh, nh, lh = tfidf(ngrams(h.split()))
        total = [0.0] * 4
        for rc in rcs:
            vr, nr, lr = tfidf(rc)
            val = [0.0] * 4
            for g, x in vh.items():
                y = vr.get(g, 0.0)
                val[len(g) - 1] += min(x, y) * y
            for k in range(4):
                if nh[k] != 0 and nr[k] != 0:
                    val[k] /= nh[k] * nr[k]
                total[k] += val[k] * math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
        per_image.append(sum(total) / 4 / len(rcs) * 10.0)
    return sum(per_image) / N, per_image


# ---------------------------------------------------------------------------
# the cases

TOKENIZE = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs' toys, a cat's bowl and (a) \"red\" ball!",
    "The kids don't like it; they're sad... Aren't they?",
    "A 10:30 clock shows 1,000 people: big-city life - or not --",
    "U.S. soldiers at 3.5 p.m. near St. Mary's.",
    "  spaces\tand\ttabs   between\nwords  ",
    "'quoted' `back` words'' and ``double''",
    "a red circle to the left of a blue star",
    "What?!... Yes.",
    "I'll go, you'd stay, we've been, I'm here",
    "nested ((brackets)) [x] {y} end.",
    "",
    "...",
    "- -- --- .-.",
    "caf\u00e9 au lait, Na\u00efve",
]

WORDS = ("a an the man woman dog cat red blue green small large circle square star "
         "cross triangle on of to left right top bottom sitting standing with and is "
         "in near table street two three people picture").split()
PUNCT = [".", ",", "!", "?", ";", ":", "'s", "n't", " -", "..."]


def sentence(rng, lo=2, hi=12):
    n = rng.randint(lo, hi)
    words = []
    for _ in range(n):
        w = rng.choice(WORDS)
        if rng.random() < 0.15:
            w = w.capitalize()
        if rng.random() < 0.1:
            w += rng.choice(PUNCT)
        words.append(w)
    return " ".join(words) + rng.choice(["", ".", " .", "!"])


def corpus(rng, n, exact=0.3):
    hyps, refs = [], []
    for _ in range(n):
        rs = [sentence(rng) for _ in range(rng.randint(1, 5))]
        h = rng.choice(rs) if rng.random() < exact else sentence(rng, 1, 10)
        hyps.append(h)
        refs.append(rs)
    return hyps, refs


def main():
    rng = random.Random(20240605)
    corpora = []
    for n in (1, 2, 5, 8, 12, 20):
        corpora.append(corpus(rng, n))
    corpora.append((["", "dog", "a dog", "A DOG!"],
                    [["a dog"], ["a dog runs", "the dog"], ["a big dog"], ["a dog", "a cat"]]))
    corpora.append((["a man riding a wave on top of a surfboard",
                     "a plate of food with broccoli",
                     "a red circle to the left of a blue star."],
                    [["A man riding a wave on top of a surfboard.",
                      "A surfer rides a large wave in the ocean."],
                     ["A plate with broccoli and meat.", "Food on a white plate!",
                      "A plate of food, including broccoli."],
                     ["there is a red circle to the left of a blue star",
                      "a blue star and a red circle", "a red circle, a blue star"]]))
    out = {"tokenize": [[t, ptb_tokenize(t)] for t in TOKENIZE], "corpora": []}
    for hyps, refs in corpora:
        th = [ptb_tokenize(h) for h in hyps]
        tr = [[ptb_tokenize(r) for r in rs] for rs in refs]
        c, per = cider_d(th, tr)
        out["corpora"].append({"hyps": hyps, "refs": refs, "cider": c,
                               "cider_per_image": per, "bleu": bleu(th, tr)})
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "fixtures", "caption_metrics.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    n = sum(len(c["hyps"]) for c in out["corpora"])
    print(f"wrote {path}: {len(TOKENIZE)} tokenizer cases, {len(corpora)} corpora, {n} images")


if __name__ == "__main__":
    main()
