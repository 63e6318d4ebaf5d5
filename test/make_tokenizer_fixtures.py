#!/usr/bin/python3
"""Tokenizer parity fixtures: what the Python `sentencepiece` library does, recorded.

Run from the repository root after `make virtex`:  /usr/bin/python3 test/make_tokenizer_fixtures.py
(Debian's python3-sentencepiece, 0.1.97 when these were made.)

Writes under test/fixtures/:
  tokenizer_train.txt      the training captions (generated, seeded), lower-cased and
                           accent-stripped as VirTex's scripts/build_vocabulary.py does
  tokenizer_small.model    BPE trained by the library with build_vocabulary.py's options
  tokenizer_small.vocab    (model_type=bpe, character_coverage=1.0, bos/eos off, control
                           symbols [SOS],[EOS],[MASK]; default nmt_nfkc normalizer), 800 pieces
  tokenizer_identity*.model  the same on the identity normalizer (small files), and
                           variants made by editing its protobuf: add_dummy_prefix off,
                           remove_extra_whitespaces off, escape_whitespaces off,
                           treat_whitespace_as_suffix, pieces marked UNUSED, a custom
                           unk_surface plus a denormalizer
  tokenizer_userdef.model  user-defined symbols;  tokenizer_bytes.model  byte_fallback
  tokenizer_handmade.model written here piece by piece, for corner cases
  tokenizer_virtex.model   written by `./virtex vocab` (500 pieces) from tokenizer_train.txt
  tokenizer_cases.txt      for every model, the library's EncodeAsIds, EncodeAsPieces and
                           DecodeIds of ~330 captions (~130 for the variants) (tricky ones included), and DecodeIds
                           of random id sequences. Also the library's encodings with a model
                           `./virtex vocab --normalizer-from tokenizer_small.model` wrote
                           (tag virtex_nfkc; not kept: the C test trains it again).

tokenizer_cases.txt lines (tab-separated; text escaped: \\\\ \\t \\n \\r, \\xHH for control
bytes, bytes that are not UTF-8 and, in pieces, spaces):
  E  MODEL  INPUT  IDS  PIECES  DECODED      IDS space-separated ("!": the library fails
                                             and EncodeAsIds gives []), PIECES space-separated
  D  MODEL  IDS  DECODED
"""
import os
import random
import struct
import subprocess
import sys
import tempfile
import unicodedata

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
ROOT = os.path.dirname(HERE)
VIRTEX = os.path.join(ROOT, "virtex")


# ---------------------------------------------------------------------------
# protobuf wire format (enough to edit a ModelProto)

def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def pb_parse(b):
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        f, t = key >> 3, key & 7
        if t == 0:
            v, i = _varint(b, i)
        elif t == 1:
            v, i = b[i:i + 8], i + 8
        elif t == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif t == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % t)
        out.append([f, t, v])
    return out


def _enc_varint(v):
    if v < 0:
        v += 1 << 64
    o = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            o.append(c | 0x80)
        else:
            o.append(c)
            return bytes(o)


def pb_serialize(fields):
    o = bytearray()
    for f, t, v in fields:
        o += _enc_varint(f << 3 | t)
        if t == 0:
            o += _enc_varint(v)
        elif t == 2:
            o += _enc_varint(len(v)) + v
        else:
            o += v
    return bytes(o)


def pb_set(fields, num, wt, value):
    """Set a singular field (replacing every occurrence)."""
    rest = [x for x in fields if x[0] != num]
    return rest + [[num, wt, value]]


def edit_sub(model, num, fn):
    """Apply fn to the (parsed) submessage `num` of a serialized ModelProto."""
    fields = pb_parse(model)
    found = False
    for x in fields:
        if x[0] == num:
            x[2] = pb_serialize(fn(pb_parse(x[2])))
            found = True
    if not found:
        fields.append([num, 2, pb_serialize(fn([]))])
    return pb_serialize(fields)


# ---------------------------------------------------------------------------
# captions

NOUNS = ("man woman person people child boy girl dog dogs cat cats horse horses bird birds "
         "elephant elephants giraffe giraffes zebra zebras bear sheep cow cows train bus car "
         "truck bicycle motorcycle airplane boat table chair bench couch bed toilet sink "
         "kitchen pizza sandwich cake banana bananas apple oranges broccoli plate bowl cup "
         "laptop keyboard phone clock vase kite kites umbrella surfboard skateboard skis "
         "snowboard frisbee ball tennis racket bat glove street road field grass beach water "
         "ocean wave waves snow sky tree trees building buildings city window room wall "
         "sign light traffic fire hydrant stop sidewalk park ramp mountain hill shirt hat "
         "t-shirt jacket tie suit donut donuts hot dog sandwiches food").split()
ADJS = ("a an the two three several many large small big little red blue green white black "
        "yellow brown orange pink purple old young tall short wooden empty full open closed "
        "busy crowded snowy sunny grassy dirty clean colorful bright dark striped").split()
VERBS = ("sitting standing riding walking eating holding playing flying lying laying parked "
         "looking running jumping carrying waiting watching posing crossing throwing catching "
         "surfing skiing skateboarding grazing driving cutting smiling talking").split()
PREPS = ("on in next to near with at under over behind in front of on top of beside "
         "across along inside outside by").split()
ACCENTED = ["café", "naïve", "jalapeño", "crème brûlée", "résumé", "piñata", "façade",
            "doñut", "über", "smörgåsbord", "São Paulo", "Zürich", "Ålesund", "Crêpe"]
EXOTIC = ["日本", "Ελλάδα", "москва", "😀", "☃", "½", "№", "°", "€", "ß"]


def strip_accents(s):
    # build_vocabulary.py: lower(), NFKD, drop combining characters
    s = unicodedata.normalize("NFKD", s.lower())
    return "".join(c for c in s if not unicodedata.combining(c))


def make_caption(rng, raw=True):
    words = [rng.choice(ADJS[:4]), rng.choice(ADJS), rng.choice(NOUNS)]
    if rng.random() < 0.3:
        words.insert(1, str(rng.choice([1, 2, 3, 4, 5, 10, 12, 20, 100, 2017])))
    words += ["is" if rng.random() < 0.5 else "are", rng.choice(VERBS)]
    words += [rng.choice(PREPS), rng.choice(ADJS[:3]), rng.choice(NOUNS)]
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), rng.choice(ACCENTED))
    if rng.random() < 0.05:
        words.insert(rng.randrange(len(words)), rng.choice(EXOTIC))
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] += rng.choice([",", "'s", "."])
    s = " ".join(words)
    r = rng.random()
    if r < 0.5:
        s += "."
    elif r < 0.55:
        s += " ."
    elif r < 0.6:
        s += "!"
    if raw and rng.random() < 0.5:
        s = s[0].upper() + s[1:]
    if raw and rng.random() < 0.1:
        s = s.upper()
    if raw and rng.random() < 0.1:
        s = "  " + s.replace(" ", "  ") + " "
    return s


TRICKY = [
    "", " ", "   ", "\t", "\n", "\r\n", "a", "A", ".", "▁", "▁▁a", "a▁b", " a ", "  a  dog  ",
    "a\tdog\nruns", "a \t dog", "a\u3000dog", "a\u00a0dog", "a\u2002dog", "a\u200bdog",
    "\ufeffa dog", "a\u2028b", "\ufffd", "a\ufffdb", "a\x01b\x7fc", "a\x00b", "\x00",
    "ＡＢＣ ａｂｃ １２３ ！？", "ﬁsh ﬂy ﬀ", "café", "CAFÉ", "cafe\u0301", "naïve", "Ⅻ ① ½ x² ㍱",
    "ｶﾀｶﾅ", "Å Å", "日本語のテキスト", "Ελληνικά", "русский текст", "😀 a dog 🐕", "☃☃☃",
    "<unk>", "[SOS] a dog [EOS]", "[MASK]", "<s></s>", "a dog's toy", "it's 3:30 p.m.",
    "100,000 people", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the", "rock'n'roll", "t-shirt", '"quoted"', "(parens) [brackets] {braces}",
    "a/b\\c", "#hashtag @user", "e-mail: someone@example.com", "U.S.A.", "1st 2nd 3rd 4th",
    "a man riding a wave on top of a surfboard.", "A MAN RIDING A WAVE ON TOP OF A SURFBOARD.",
    "xyz xyzxyz <dog> <dog><dog> ing", "zzzz qqqq", "🐕🐕🐕", "a" * 100,
    " ".join(["a dog"] * 40),
]
BYTES = [b"a\xffb", b"\xc3", b"\xe2\x96", b"abc\x80", b"\xf0\x9f\x98", b"\xed\xa0\x80 x",
         b"\xc0\xaf", b"\xff\xfe\xfd", b"a dog \xe2\x96\x81\xe2\x96 cat", b"\xf4\x90\x80\x80"]


# ---------------------------------------------------------------------------
# escaping

def esc(b, extra=b""):
    s = b.decode("utf-8", "surrogateescape")
    o = []
    for ch in s:
        c = ord(ch)
        if ch == "\\":
            o.append("\\\\")
        elif ch == "\t":
            o.append("\\t")
        elif ch == "\n":
            o.append("\\n")
        elif ch == "\r":
            o.append("\\r")
        elif 0xDC80 <= c <= 0xDCFF:
            o.append("\\x%02X" % (c - 0xDC00))
        elif c < 0x20 or c == 0x7F or (c < 0x80 and ch.encode() in extra):
            o.append("\\x%02X" % c)
        elif 0x80 <= c <= 0x9F or c in (0x2028, 0x2029, 0xFEFF):   # invisible breaks
            o.append("".join("\\x%02X" % x for x in ch.encode()))
        else:
            o.append(ch)
    return "".join(o)


def as_bytes(x):
    return x if isinstance(x, bytes) else x.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------

def train(name, captions_file, vocab, **kw):
    prefix = os.path.join(FIX, name)
    spm.SentencePieceTrainer.train(
        input=captions_file, model_prefix=prefix, vocab_size=vocab, model_type="bpe",
        character_coverage=1.0, bos_id=-1, eos_id=-1, control_symbols="[SOS],[EOS],[MASK]",
        minloglevel=2, **kw)
    return prefix + ".model"


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main():
    if not os.path.exists(VIRTEX):
        sys.exit("build ./virtex first (make virtex)")
    rng = random.Random(20240611)
    train_caps = [strip_accents(make_caption(rng)) for _ in range(4000)]
    train_txt = os.path.join(FIX, "tokenizer_train.txt")
    with open(train_txt, "w", encoding="utf-8") as f:
        for c in train_caps:
            f.write(c + "\n")

    # library-trained models
    models = {}
    models["small"] = train("tokenizer_small", train_txt, 800)
    models["identity"] = train("tokenizer_identity", train_txt, 400,
                               normalization_rule_name="identity")
    models["userdef"] = train("tokenizer_userdef", train_txt, 400,
                              normalization_rule_name="identity",
                              user_defined_symbols=["<dog>", "xyz", "ing", "🐕", "a dog"])
    models["bytes"] = train("tokenizer_bytes", train_txt, 700, byte_fallback=True,
                            normalization_rule_name="identity")
    for n in ("identity", "userdef", "bytes"):
        os.remove(os.path.join(FIX, "tokenizer_%s.vocab" % n))

    # virtex-trained models
    subprocess.run([VIRTEX, "vocab", "--captions", train_txt, "--vocab-size", "500", "--out",
                    os.path.join(FIX, "tokenizer_virtex")], check=True)
    os.remove(os.path.join(FIX, "tokenizer_virtex.vocab"))
    models["virtex"] = os.path.join(FIX, "tokenizer_virtex.model")
    tmp = tempfile.mkdtemp()
    subprocess.run([VIRTEX, "vocab", "--captions", train_txt, "--vocab-size", "500", "--out",
                    os.path.join(tmp, "nfkc"), "--normalizer-from", models["small"]], check=True)
    models["virtex_nfkc"] = os.path.join(tmp, "nfkc.model")

    # variants of the identity model, by editing its protobuf
    base = open(models["identity"], "rb").read()
    virtex_norm = [x for x in pb_parse(open(models["virtex"], "rb").read()) if x[0] == 3][0][2]
    charsmap = [x for x in pb_parse(virtex_norm) if x[0] == 2][0][2]

    def variant(name, data):
        path = os.path.join(FIX, "tokenizer_identity_%s.model" % name)
        write(path, data)
        models["identity_" + name] = path

    variant("nodummy", edit_sub(base, 3, lambda f: pb_set(f, 3, 0, 0)))
    variant("keepws", edit_sub(base, 3, lambda f: pb_set(f, 4, 0, 0)))
    variant("keepws_nodummy", edit_sub(base, 3, lambda f: pb_set(pb_set(f, 4, 0, 0), 3, 0, 0)))
    variant("noescape", edit_sub(base, 3, lambda f: pb_set(f, 5, 0, 0)))
    variant("suffix", edit_sub(base, 2, lambda f: pb_set(f, 24, 0, 1)))

    def mark_unused(model):
        fields = pb_parse(model)
        k = 0
        for x in fields:
            if x[0] != 1:
                continue
            p = pb_parse(x[2])
            piece = [v for f, t, v in p if f == 1][0].decode()
            typ = ([v for f, t, v in p if f == 3] or [1])[0]
            if typ == 1 and len(piece) > 1:
                k += 1
                if k % 3 == 0:
                    x[2] = pb_serialize(pb_set(p, 3, 0, 5))
        return pb_serialize(fields)

    variant("unused", mark_unused(base))
    denorm = pb_serialize([[1, 2, b"virtex_test"], [2, 2, charsmap], [3, 0, 0], [4, 0, 0],
                           [5, 0, 0]])
    v = edit_sub(base, 2, lambda f: pb_set(f, 44, 2, "\u3000<?>\uff01 ".encode()))
    v = pb_serialize(pb_parse(v) + [[5, 2, denorm]])
    variant("denorm", v)

    # a hand-made model for corners the trained ones never reach: joins longer than the
    # C merge table's 64 bytes, a piece holding a character that is no piece, score ties
    # (equal scores, -0.0 against +0.0: leftmost wins), a normal piece shadowed by a
    # control piece of the same string (the library then fails: EncodeAsIds gives [])
    def piece(text, score, typ=1):
        f = [[1, 2, text.encode()], [2, 5, struct.pack("<f", score)]]
        return [1, 2, pb_serialize(f + ([[3, 0, typ]] if typ != 1 else []))]
    hand = [piece("<unk>", 0, 2), piece("<s>", 0, 3), piece("zz", 0, 3), piece("\u2581", -50),
            piece("a", -10)]
    hand += [piece("a" * k, sc) for k, sc in ((2, -5), (4, -4), (8, -3), (16, -2), (32, -1.5),
                                              (64, -1), (128, -0.5))]
    hand += [piece(t, sc) for t, sc in (("b", -10), ("\u2581b", -9), ("\u00e9!", -1), ("!", -10),
                                        ("z", -1), ("zz", -0.1), ("c", -1), ("d", -1),
                                        ("cd", -2), ("dc", -2), ("x", -1), ("0", -1), ("y", -1),
                                        ("x0", -0.0), ("0y", 0.0))]
    path = os.path.join(FIX, "tokenizer_handmade.model")
    write(path, pb_serialize(hand + [[2, 2, pb_serialize([[3, 0, 2]])]]))
    models["handmade"] = path
    hand_texts = ["a" * 128, "a" * 100, "a" * 200, "a" * 63, "a" * 65, "\u00e9!", "\u00e9\u00e9!",
                  "zz", "z zz", "z z", "cdc", "dcd", "x0y", "0yx0", "b", "ab ba", "  c  d "]

    # the captions to encode
    crng = random.Random(7)
    texts = [t.encode("utf-8", "surrogatepass") for t in TRICKY] + BYTES
    texts += [make_caption(crng).encode() for _ in range(180)]
    texts += [strip_accents(make_caption(crng)).encode() for _ in range(80)]

    lines = ["# made by test/make_tokenizer_fixtures.py with sentencepiece %s" % spm.__version__]
    full = ("small", "identity", "virtex", "virtex_nfkc")   # all captions; others fewer
    for tag in sorted(models):
        sp = spm.SentencePieceProcessor(model_file=models[tag])
        mine = [x.encode() for x in hand_texts] if tag == "handmade" else []
        for t in mine + (texts if tag in full else texts[:len(TRICKY) + len(BYTES) + 40]):
            ids = sp.EncodeAsIds(t)
            # the library failed: its SentencePieceText never got the text (field 1)
            if t and not any(f == 1 for f, _, _ in pb_parse(sp.EncodeAsSerializedProto(t))):
                assert ids == [] and (tag == "handmade" and b"zz" in t), (tag, t, ids)
                lines.append("\t".join(["E", tag, esc(t), "!", "", ""]))
                continue
            pieces = [as_bytes(p) for p in sp.EncodeAsPieces(t)]
            dec = as_bytes(sp.DecodeIds(ids))
            lines.append("\t".join(["E", tag, esc(t), " ".join(map(str, ids)),
                                    " ".join(esc(p, b" ") for p in pieces), esc(dec)]))
        n = sp.GetPieceSize()
        drng = random.Random(sum(map(ord, tag)) * 1000 + n)
        for _ in range(40):
            ids = [drng.choice([0, 1, 2, 3, drng.randrange(n), drng.randrange(n),
                                drng.randrange(min(n, 300))])
                   for _ in range(drng.randrange(13))]
            lines.append("\t".join(["D", tag, " ".join(map(str, ids)),
                                    esc(as_bytes(sp.DecodeIds(ids)))]))
    with open(os.path.join(FIX, "tokenizer_cases.txt"), "w", encoding="utf-8",
              errors="surrogateescape") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d lines for %d models" % (len(lines) - 1, len(models)))


if __name__ == "__main__":
    main()
