// test/test_synth.c — the synthetic shapes dataset (data.c, `virtex synth`).
//
// Draws a small dataset into a temp dir and reads it back the way its users do: the
// layout and file names, the COCO files through the JSON and COCO readers, the JPEGs
// through image_load. Every caption is checked against its scene by an independent
// reader of the caption language (which shape, colour, size, where, left of what), also
// after a horizontal flip with the loader's left/right word swap; the colour at the
// centre of every drawn shape is checked in the decoded JPEG; VOC label files and
// ImageNet folders against the scenes; byte-identical output for 1 and 2 threads;
// bad options and unwritable places give one clear error. About a second.
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"

static char tmp[256];

// ----------------------------------------------------------------------------
// an independent reader of the captions

enum { TK_OBJ, TK_REL, TK_POS, TK_ORDER, TK_COUNT };
typedef struct Tok { int kind, v, w; } Tok;   // OBJ: object; REL: 0..3; POS: row, col

static int word_index(const char *w, const char *const *list, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(w, list[i])) return i;
    return -1;
}

// Does the word sequence at w[i..] start with the words of phrase? Returns their count.
static int starts_with(char **w, int nw, int i, const char *phrase) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", phrase);
    int k = 0;
    for (char *p = strtok(buf, " "); p; p = strtok(NULL, " "), k++)
        if (i + k >= nw || strcmp(w[i + k], p)) return 0;
    return k;
}

// NULL when the caption describes the scene truly and completely, else what is wrong.
static const char *caption_problem(const char *caption, const SynthScene *s, int S) {
    static const char *const rels[4] = {"to the left of", "to the right of", "above", "below"};
    static const char *const pos[3][3] = {
        {"in the top left", "at the top", "in the top right"},
        {"on the left", "in the middle", "on the right"},
        {"in the bottom left", "at the bottom", "in the bottom right"}};
    static const char *const fillers[] = {"there is", "and", "a picture of", "an image with"};
    char buf[SYNTH_CAPTION_LEN + 8], *w[64];
    int nw = 0, nt = 0, mentioned[SYNTH_MAX_OBJECTS] = {0};
    Tok t[64];
    snprintf(buf, sizeof buf, "%s", caption);
    for (char *p = buf; *p; p++)
        if (*p == ',' || *p == ':') *p = ' ';
    for (char *p = strtok(buf, " "); p && nw < 64; p = strtok(NULL, " ")) w[nw++] = p;
    for (int i = 0; i < nw;) {
        if (word_index(w[i], (const char *const[]){"a", "an", "one", "the"}, 4) >= 0) {
            int j = i + 1, size = -1;
            int sw = j < nw ? word_index(w[j], (const char *const[]){"small", "large", "big"}, 3) : -1;
            if (sw >= 0) { size = sw > 0; j++; }
            int colour = j < nw ? word_index(w[j], synth_colour_names, SYNTH_COLOURS) : -1;
            int shape = j + 1 < nw ? word_index(w[j + 1], synth_shape_names, SYNTH_SHAPES) : -1;
            if (colour >= 0 && shape >= 0) {
                int vowel = strchr("aeiou", w[i + 1][0]) != NULL;
                if (!strcmp(w[i], "a") && vowel) return "'a' before a vowel";
                if (!strcmp(w[i], "an") && !vowel) return "'an' before a consonant";
                if (!strcmp(w[i], "one") && s->n != 1) return "'one' but several shapes";
                int obj = -1;
                for (int k = 0; k < s->n; k++)
                    if (s->obj[k].colour == colour && s->obj[k].shape == shape && !s->obj[k].difficult)
                        obj = k;
                if (obj < 0) return "names a shape that is not in the picture";
                if (size >= 0 && size != s->obj[obj].size) return "wrong size word";
                mentioned[obj] = 1;
                t[nt++] = (Tok){TK_OBJ, obj, 0};
                i = j + 2;
                continue;
            }
        }
        int k = 0;
        for (int r = 0; r < 4 && !k; r++)
            if ((k = starts_with(w, nw, i, rels[r]))) t[nt++] = (Tok){TK_REL, r, 0};
        for (int r = 0; r < 9 && !k; r++)
            if ((k = starts_with(w, nw, i, pos[r / 3][r % 3]))) t[nt++] = (Tok){TK_POS, r / 3, r % 3};
        if (!k && (k = starts_with(w, nw, i, "from left to right"))) t[nt++] = (Tok){TK_ORDER, 0, 0};
        if (!k && (k = starts_with(w, nw, i, "from top to bottom"))) t[nt++] = (Tok){TK_ORDER, 1, 0};
        if (!k && (k = starts_with(w, nw, i, "from right to left"))) t[nt++] = (Tok){TK_ORDER, 2, 0};
        if (!k && (k = starts_with(w, nw, i, "two shapes"))) t[nt++] = (Tok){TK_COUNT, 2, 0};
        if (!k && (k = starts_with(w, nw, i, "three shapes"))) t[nt++] = (Tok){TK_COUNT, 3, 0};
        for (int f = 0; f < 4 && !k; f++) k = starts_with(w, nw, i, fillers[f]);
        if (!k) return "a word outside the caption language";
        i += k;
    }
    for (int k = 0; k < nt; k++) {
        if (t[k].kind == TK_REL) {
            if (k == 0 || k + 1 >= nt || t[k - 1].kind != TK_OBJ || t[k + 1].kind != TK_OBJ)
                return "a relation without two shapes";
            const SynthObject *a = &s->obj[t[k - 1].v], *b = &s->obj[t[k + 1].v];
            float dx = b->cx - a->cx, dy = b->cy - a->cy;
            int horiz = fabsf(dx) >= fabsf(dy);
            int ok = t[k].v == 0 ? horiz && dx > 0 : t[k].v == 1 ? horiz && dx < 0
                   : t[k].v == 2 ? !horiz && dy > 0 : !horiz && dy < 0;
            if (!ok) return "a false relation";
        } else if (t[k].kind == TK_POS) {
            int target = k > 0 && t[k - 1].kind == TK_OBJ ? t[k - 1].v : -1;
            for (int j = k + 1; j < nt && target < 0; j++)
                if (t[j].kind == TK_OBJ) target = t[j].v;
            if (target < 0) return "a position of nothing";
            const SynthObject *o = &s->obj[target];
            int col = (int)(3 * o->cx / S), row = (int)(3 * o->cy / S);
            if (row != t[k].v || col != t[k].w) return "a false position";
        } else if (t[k].kind == TK_ORDER) {
            float last = -1e9f;                 // left to right, top to bottom, right to left
            for (int j = k + 1; j < nt; j++) {
                if (t[j].kind != TK_OBJ) continue;
                float c = t[k].v == 1 ? s->obj[t[j].v].cy : t[k].v == 0 ? s->obj[t[j].v].cx : -s->obj[t[j].v].cx;
                if (c <= last) return "a false order";
                last = c;
            }
        } else if (t[k].kind == TK_COUNT && t[k].v != s->n) {
            return "a wrong count";
        }
    }
    for (int k = 0; k < s->n; k++)
        if (!mentioned[k]) return "a shape is not mentioned";
    return NULL;
}

// The caption checker itself: true and false captions of a hand-made scene.
static void test_caption_reader(void) {
    SynthScene s = {0};
    s.n = 2;
    s.obj[0] = (SynthObject){.shape = 0, .colour = 0, .size = 1, .cx = 10, .cy = 30, .r = 8};
    s.obj[1] = (SynthObject){.shape = 1, .colour = 4, .size = 0, .cx = 50, .cy = 34, .r = 5};
    const char *good[] = {"a large red circle to the left of a small blue square",
                          "there is a red circle on the left and a blue square on the right",
                          "from left to right: a red circle and a small blue square",
                          "two shapes: a blue square to the right of a big red circle"};
    const char *bad[] = {"a large red circle to the right of a small blue square",
                         "a red circle above a blue square",
                         "a small red circle and a blue square",
                         "there is a red circle in the middle and a blue square on the right",
                         "from left to right: a blue square and a red circle",
                         "three shapes: a red circle and a blue square",
                         "a red circle", "a red circle and a green square",
                         "a red circle and a blue square, purple"};
    int ok = 1;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) ok &= caption_problem(good[i], &s, 64) == NULL;
    check(ok, "the caption reader accepts true captions of a hand-made scene");
    ok = 1;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (caption_problem(bad[i], &s, 64) == NULL) {
            ok = 0;
            printf("       accepted: %s\n", bad[i]);
        }
    }
    check(ok, "the caption reader rejects false captions (side, axis, size, place, order, count, "
              "missing, absent, unknown words)");
}

// Captions of many scenes (no files): all true, also flipped; templates all used.
static void test_captions_true(void) {
    const int n = 3000, S = 64;
    int bad = 0, flipbad = 0, lr = 0, total = 0, dup = 0, longest = 0, counts[4] = {0};
    const char *phrases[] = {"from left to right", "from top to bottom", "to the left of",
                             "to the right of", "above", "below", "in the top left", "on the right",
                             "in the middle", "two shapes", "one ", "big ", "an orange"};
    enum { NPHRASES = sizeof phrases / sizeof *phrases };
    int seen[NPHRASES] = {0};
    for (int i = 0; i < n; i++) {
        SynthScene s, m;
        synth_image(&s, NULL, i % 10 == 0 ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN, i, S, 1);
        counts[s.n]++;
        m = s;
        for (int k = 0; k < m.n; k++) m.obj[k].cx = S - m.obj[k].cx;   // the mirrored picture
        if (s.ncaptions != SYNTH_CAPTIONS) bad++;
        for (int c = 0; c < s.ncaptions; c++) {
            const char *cap = s.caption[c], *why = caption_problem(cap, &s, S);
            total++;
            if ((int)strlen(cap) > longest) longest = (int)strlen(cap);
            if (why && bad++ < 5) printf("       image %d: \"%s\": %s\n", i, cap, why);
            char *f = caption_swap_left_right(cap);
            why = caption_problem(f, &m, S);
            if (why && flipbad++ < 5) printf("       flipped image %d: \"%s\": %s\n", i, f, why);
            free(f);
            lr += strstr(cap, "left") || strstr(cap, "right");
            for (int p = 0; p < NPHRASES; p++) seen[p] += strstr(cap, phrases[p]) != NULL;
            for (int d = 0; d < c; d++) dup += !strcmp(cap, s.caption[d]);
        }
    }
    check(bad == 0, "%d captions of %d scenes describe their scene truly (%d wrong)", total, n, bad);
    check(flipbad == 0, "mirrored scenes: every caption with left/right swapped is true (%d wrong)", flipbad);
    check(dup == 0, "the five captions of an image differ (%d repeats)", dup);
    check(longest < SYNTH_CAPTION_LEN - 1, "longest caption %d chars < %d (never cut)", longest,
          SYNTH_CAPTION_LEN - 1);
    check(lr > total / 4, "%.0f%% of captions say left or right (> 25%%)", 100.0 * lr / total);
    int all = 1;
    for (int p = 0; p < NPHRASES; p++) {
        if (!seen[p]) printf("       never seen: \"%s\"\n", phrases[p]);
        all &= seen[p] > 0;
    }
    check(all, "every kind of phrase occurs (order, relations, places, counts, big, an)");
    check(counts[1] > n * 6 / 10 && counts[1] < n * 8 / 10 && counts[2] > n / 5 && counts[3] == 0,
          "COCO scenes: 1/2/3 shapes in %d/%d/%d of %d (70/30/0%%)", counts[1], counts[2], counts[3], n);
    int cls[8];
    int k = synth_caption_classes("a big red circle to the left of a small blue square, and the red "
                                  "circle above an orange star", cls, 8);
    check(k == 3 && cls[0] == 0 && cls[1] == 4 * SYNTH_SHAPES + 1 && cls[2] == 1 * SYNTH_SHAPES + 3,
          "synth_caption_classes finds red_circle, blue_square, orange_star once each (%d)", k);
}

// shapes_score (the `virtex eval shapes` report) on three hand-made pairs.
static void test_shapes_score(void) {
    // counted by hand:
    //   ref 0 {red circle, blue square}  caption 0 {red circle, blue star}
    //   ref 1 {green cross}              caption 1 {green cross}
    //   ref 2 {white star}               caption 2 {red square}
    // shift 0: 4 objects; named: red circle, green cross = 2; colour: red, blue, green = 3;
    //   shape: circle, cross = 2; 4 phrases of which 2 name an object of their picture.
    // shift 1 (ref i against caption i+1): ref 0 vs {green cross}: nothing; ref 1 vs
    //   {red square}: nothing; ref 2 vs {red circle, blue star}: star = 1 shape.
    const char *refs[3] = {"two shapes: a red circle and a blue square", "one green cross in the middle",
                           "a picture of a white star"};
    const char *caps[3] = {"a red circle to the left of a blue star", "a picture of a green cross",
                           "an image with one red square"};
    ShapeScore s0 = shapes_score(refs, caps, 3, 0), s1 = shapes_score(refs, caps, 3, 1);
    check(s0.images == 3 && s0.objects == 4 && s0.named == 2 && s0.colours == 3 && s0.shapes == 2 &&
          s0.phrases == 4 && s0.correct == 2,
          "shapes_score: 4 objects, 2 named, 3 colours, 2 shapes, 2 of 4 phrases right (%ld %ld %ld %ld %ld %ld)",
          s0.objects, s0.named, s0.colours, s0.shapes, s0.phrases, s0.correct);
    check(s1.objects == 4 && s1.named == 0 && s1.colours == 0 && s1.shapes == 1 && s1.phrases == 4 &&
          s1.correct == 0,
          "shapes_score, captions moved one image on (chance): 0 named, 0 colours, 1 shape (%ld %ld %ld)",
          s1.named, s1.colours, s1.shapes);
}

// ----------------------------------------------------------------------------
// files

// The whole file as a NUL-terminated string (NULL if unreadable); *n its size.
static char *read_all(const char *path, long *n) {
    size_t len;
    char *s = (char *)slurp(path, &len);
    if (n) *n = (long)len;
    return s;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static const char *tree_a, *tree_b;
static int tree_files, tree_diff;
static int compare_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)ftw;
    if (flag != FTW_F) return 0;
    char other[1024];
    snprintf(other, sizeof other, "%s%s", tree_b, path + strlen(tree_a));
    long na = 0, nb = 0;
    char *a = read_all(path, &na), *b = read_all(other, &nb);
    tree_files++;
    if (!a || !b || na != nb || memcmp(a, b, (size_t)na)) {
        if (tree_diff++ < 3) printf("       differs: %s\n", other);
    }
    free(a);
    free(b);
    return 0;
}
static int count_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)path; (void)st; (void)ftw;
    tree_files += flag == FTW_F;
    return 0;
}
static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

// Every file of a also in b with the same bytes, and b holds no other file.
static int same_tree(const char *a, const char *b, int *files) {
    tree_a = a;
    tree_b = b;
    tree_files = tree_diff = 0;
    nftw(a, compare_one, 16, FTW_PHYS);
    int na = tree_files;
    tree_files = 0;
    nftw(b, count_one, 16, FTW_PHYS);
    *files = na;
    return tree_diff == 0 && tree_files == na;
}

// The decoded JPEG next to the drawn pixels, and the colour at each shape's centre.
static void check_pixels(const char *path, const SynthScene *s, const unsigned char *rgb, int S,
                         int *bad_file, int *bad_colour, double *worst_mad) {
    Image img;
    char err[256];
    if (image_load(&img, path, err, sizeof err) || img.w != S || img.h != S) {
        if ((*bad_file)++ < 3) printf("       %s: %s\n", path, err);
        return;
    }
    double mad = 0;
    for (long i = 0; i < (long)S * S * 3; i++) mad += fabs((double)img.rgb[i] - rgb[i]);
    mad /= (double)S * S * 3;
    if (mad > *worst_mad) *worst_mad = mad;
    for (int k = 0; k < s->n; k++) {
        const SynthObject *o = &s->obj[k];
        if (o->difficult) continue;
        int cx = (int)o->cx, cy = (int)o->cy;
        double c[3] = {0, 0, 0};
        for (int y = cy - 1; y <= cy + 1; y++)
            for (int x = cx - 1; x <= cx + 1; x++)
                for (int ch = 0; ch < 3; ch++) c[ch] += img.rgb[(y * S + x) * 3 + ch] / 9.0;
        int best = -1;
        double bestd = 1e9, own = 0;
        for (int col = 0; col < SYNTH_COLOURS; col++) {
            double d = 0;
            for (int ch = 0; ch < 3; ch++) {
                double e = fabs(c[ch] - synth_colour_rgb[col][ch]);
                if (e > d) d = e;
            }
            if (d < bestd) { bestd = d; best = col; }
            if (col == o->colour) own = d;
        }
        if ((best != o->colour || own > 45) && (*bad_colour)++ < 3)
            printf("       %s shape %d: centre (%.0f,%.0f,%.0f) is not %s (%.0f off)\n", path, k,
                   c[0], c[1], c[2], synth_colour_names[o->colour], own);
    }
    image_free(&img);
}

// The dataset on disk against the scenes it was drawn from.
static void test_dataset(void) {
    char out[300], path[600], err[512];
    snprintf(out, sizeof out, "%s/a", tmp);
    SynthOptions o;
    synth_default_options(&o);
    o.out = out;
    o.images = 100;
    o.seed = 7;
    o.threads = 2;
    o.quiet = 1;
    double t0 = now_seconds();
    int rc = synth_dataset(&o, err, sizeof err);
    check(rc == 0, "synth_dataset writes 100 + 10 COCO, 20 + 20 VOC, 35 + 35 ImageNet images (%.2fs)%s%s",
          now_seconds() - t0, rc ? ": " : "", rc ? err : "");
    if (rc) return;
    long count[SYNTH_NSPLITS];
    synth_split_sizes(&o, count);
    check(count[SYNTH_COCO_TRAIN] == 100 && count[SYNTH_COCO_VAL] == 10 && count[SYNTH_VOC_TRAINVAL] == 20 &&
          count[SYNTH_VOC_TEST] == 20 && count[SYNTH_IMAGENET_TRAIN] == 35 && count[SYNTH_IMAGENET_VAL] == 35,
          "split sizes from N = 100: 100, 10, 20, 20, 35, 35");
    const int S = o.size;

    // COCO: the captions through the real reader, in order, equal to the scenes' captions
    int bad_file = 0, bad_colour = 0, bad_cap = 0, bad_names = 0;
    double worst_mad = 0;
    unsigned char *rgb = malloc((size_t)S * S * 3);
    for (int sp = 0; sp < 2; sp++) {
        const char *split = sp ? "val" : "train";
        CocoCaptions cc;
        rc = coco_captions_load(&cc, out, split, err, sizeof err);
        check(rc == 0, "coco_captions_load reads captions_%s2017.json%s%s", split, rc ? ": " : "", rc ? err : "");
        if (rc) continue;
        long n = count[sp ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN];
        check(cc.n == n && cc.ncaptions == 5 * n && cc.dropped == 0, "%s2017: %d images, %ld captions",
              split, cc.n, cc.ncaptions);
        for (int i = 0; i < cc.n && i < n; i++) {
            SynthScene s;
            synth_image(&s, rgb, sp ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN, i, S, o.seed);
            long id = (sp ? count[SYNTH_COCO_TRAIN] : 0) + i + 1;
            char name[32];
            snprintf(name, sizeof name, "%012ld.jpg", id);
            bad_names += cc.images[i].id != id || strcmp(cc.images[i].file_name, name);
            for (int c = 0; c < cc.images[i].ncaptions && c < 5; c++) {
                bad_cap += strcmp(cc.images[i].captions[c], s.caption[c]) != 0;
                bad_cap += caption_problem(cc.images[i].captions[c], &s, S) != NULL;
            }
            snprintf(path, sizeof path, "%s/%s", cc.image_dir, cc.images[i].file_name);
            check_pixels(path, &s, rgb, S, &bad_file, &bad_colour, &worst_mad);
        }
        coco_captions_free(&cc);
    }
    check(bad_names == 0, "COCO ids and 12-digit file names (%d wrong)", bad_names);
    check(bad_cap == 0, "COCO captions on disk are the scenes' true captions (%d wrong)", bad_cap);

    // COCO instances and captions files as JSON
    int inst_ok = 1;
    for (int sp = 0; sp < 2; sp++) {
        const char *split = sp ? "val" : "train";
        long n = count[sp ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN], objects = 0;
        for (long i = 0; i < n; i++) {
            SynthScene s;
            synth_image(&s, NULL, sp ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN, i, S, o.seed);
            objects += s.n;
        }
        Json *doc;
        snprintf(path, sizeof path, "%s/annotations/instances_%s2017.json", out, split);
        if (json_parse_file(&doc, path, err, sizeof err)) {
            check(0, "%s", err);
            inst_ok = 0;
            continue;
        }
        const JsonValue *root = json_root(doc), *cats = json_get(root, "categories");
        const JsonValue *anns = json_get(root, "annotations"), *imgs = json_get(root, "images");
        int ok = json_len(cats) == SYNTH_CLASSES && json_len(anns) == objects && json_len(imgs) == n &&
                 json_type(json_get(root, "info")) == JSON_OBJECT;
        for (int c = 0; c < json_len(cats); c++) {
            char name[32];
            synth_class_name(c, name, sizeof name);
            ok &= json_number(json_get(json_at(cats, c), "id")) == c + 1 &&
                  !strcmp(json_string(json_get(json_at(cats, c), "name")) ? json_string(json_get(json_at(cats, c), "name")) : "", name);
        }
        for (int a = 0; a < json_len(anns); a++) {
            const JsonValue *an = json_at(anns, a), *bb = json_get(an, "bbox");
            double cat = json_number(json_get(an, "category_id")), img = json_number(json_get(an, "image_id"));
            double x = json_number(json_at(bb, 0)), y = json_number(json_at(bb, 1));
            double w = json_number(json_at(bb, 2)), h = json_number(json_at(bb, 3));
            long first = sp ? count[SYNTH_COCO_TRAIN] + 1 : 1;
            ok &= cat >= 1 && cat <= SYNTH_CLASSES && img >= first && img < first + n && json_len(bb) == 4 &&
                  x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= S && y + h <= S &&
                  json_number(json_get(an, "area")) > 0;
        }
        check(ok, "instances_%s2017.json: %ld images, %ld boxes, 35 categories red_circle..white_cross",
              split, n, objects);
        json_free(doc);
        snprintf(path, sizeof path, "%s/annotations/captions_%s2017.json", out, split);
        rc = json_parse_file(&doc, path, err, sizeof err);
        check(rc == 0 && json_len(json_get(json_root(doc), "images")) == n &&
              json_type(json_get(json_root(doc), "info")) == JSON_OBJECT,
              "captions_%s2017.json parses, with info and %ld images", split, n);
        if (!rc) json_free(doc);
    }
    (void)inst_ok;

    // VOC: lists, 1/-1/0 label files that match the scenes, annotations, images
    int label_bad = 0, zeros = 0, format_bad = 0, xml_bad = 0;
    for (int sp = 0; sp < 2; sp++) {
        int split = sp ? SYNTH_VOC_TEST : SYNTH_VOC_TRAINVAL;
        const char *name = sp ? "test" : "trainval";
        long n = count[split], first = sp ? count[SYNTH_VOC_TRAINVAL] + 1 : 1;
        signed char *want = malloc((size_t)n * SYNTH_CLASSES);
        for (long i = 0; i < n; i++) {
            SynthScene s;
            synth_image(&s, rgb, split, i, S, o.seed);
            signed char *l = want + i * SYNTH_CLASSES;
            for (int c = 0; c < SYNTH_CLASSES; c++) {
                int vis = 0, diff = 0;
                for (int k = 0; k < s.n; k++)
                    if (s.obj[k].colour * SYNTH_SHAPES + s.obj[k].shape == c) {
                        vis |= !s.obj[k].difficult;
                        diff |= s.obj[k].difficult;
                    }
                l[c] = vis ? 1 : diff ? 0 : -1;
            }
            snprintf(path, sizeof path, "%s/voc2007/JPEGImages/%06ld.jpg", out, first + i);
            check_pixels(path, &s, rgb, S, &bad_file, &bad_colour, &worst_mad);
            snprintf(path, sizeof path, "%s/voc2007/Annotations/%06ld.xml", out, first + i);
            char *x = read_all(path, NULL);
            int ndiff = 0;
            for (int k = 0; k < s.n; k++) ndiff += s.obj[k].difficult;
            int nobj = 0;
            for (const char *p = x; p && (p = strstr(p, "<object>")); p++) nobj++;
            xml_bad += !x || nobj != s.n || (ndiff > 0) != (strstr(x, "<difficult>1</difficult>") != NULL);
            free(x);
        }
        snprintf(path, sizeof path, "%s/voc2007/ImageSets/Main/%s.txt", out, name);
        char *list = read_all(path, NULL), expect[48];
        int list_ok = list != NULL;
        const char *p = list;
        for (long i = 0; i < n && list_ok; i++) {
            snprintf(expect, sizeof expect, "%06ld\n", first + i);
            list_ok = !strncmp(p, expect, 7);
            p += 7;
        }
        check(list_ok && p && !*p, "ImageSets/Main/%s.txt lists ids %06ld..%06ld", name, first, first + n - 1);
        free(list);
        for (int c = 0; c < SYNTH_CLASSES; c++) {
            char cls[32];
            synth_class_name(c, cls, sizeof cls);
            snprintf(path, sizeof path, "%s/voc2007/ImageSets/Main/%s_%s.txt", out, cls, name);
            char *txt = read_all(path, NULL);
            if (!txt) { format_bad++; continue; }
            const char *q = txt;
            for (long i = 0; i < n; i++) {
                int v = want[i * SYNTH_CLASSES + c];
                snprintf(expect, sizeof expect, "%06ld %2d\n", first + i, v);   // "000012  1"
                int ok = strlen(q) >= 10 && !strncmp(q, expect, 10) &&
                         (q[7] == ' ' || q[7] == '-') && (q[8] == '1' || q[8] == '0');
                if (!ok) {
                    if (strlen(q) >= 10 && !strncmp(q, expect, 7)) label_bad++;
                    else format_bad++;
                    break;
                }
                zeros += v == 0;
                q += 10;
            }
            format_bad += *q != 0;
            free(txt);
        }
        free(want);
    }
    check(format_bad == 0, "VOC CLASS_{trainval,test}.txt: 70 files, lines \"000012 %%2d\" (%d bad)", format_bad);
    check(label_bad == 0, "VOC labels are 1 / -1 / 0 as the scenes say (%d wrong)", label_bad);
    check(zeros > 0, "VOC has difficult-only labels (0): %d", zeros);
    check(xml_bad == 0, "VOC Annotations/*.xml: one <object> per shape, <difficult> as drawn (%d wrong)", xml_bad);

    // ImageNet: class folders with the right count, the dominant shape of the class
    int in_bad = 0;
    for (int sp = 0; sp < 2; sp++) {
        int split = sp ? SYNTH_IMAGENET_VAL : SYNTH_IMAGENET_TRAIN;
        for (long i = 0; i < count[split]; i++) {
            SynthScene s;
            synth_image(&s, rgb, split, i, S, o.seed);
            char cls[32];
            synth_class_name((int)(i % SYNTH_CLASSES), cls, sizeof cls);
            snprintf(path, sizeof path, "%s/imagenet/%s/%s/%s_%06ld.jpg", out, sp ? "val" : "train", cls, cls,
                     i / SYNTH_CLASSES);
            check_pixels(path, &s, rgb, S, &bad_file, &bad_colour, &worst_mad);
            in_bad += s.obj[0].colour * SYNTH_SHAPES + s.obj[0].shape != i % SYNTH_CLASSES;
            for (int k = 1; k < s.n; k++) in_bad += s.obj[k].r >= s.obj[0].r;
        }
        for (int c = 0; c < SYNTH_CLASSES; c++) {
            char cls[32];
            synth_class_name(c, cls, sizeof cls);
            snprintf(path, sizeof path, "%s/imagenet/%s/%s", out, sp ? "val" : "train", cls);
            in_bad += count_files(path) != count[split] / SYNTH_CLASSES;
        }
    }
    check(in_bad == 0, "ImageNet train/CLASS and val/CLASS: one file per class here, the class's shape "
                       "dominant (%d wrong)", in_bad);
    check(bad_file == 0, "every image file exists and decodes to %dx%d RGB (%d bad)", S, S, bad_file);
    check(worst_mad < 4, "decoded JPEGs are the drawn pixels (worst mean |diff| %.2f < 4)", worst_mad);
    check(bad_colour == 0, "the colour at the centre of every shape is its named colour after JPEG "
                           "(nearest of the 7, within 45) (%d wrong)", bad_colour);
    free(rgb);

    // determinism: one thread = two threads, byte for byte; another seed differs
    char out2[300];
    snprintf(out2, sizeof out2, "%s/b", tmp);
    o.out = out2;
    o.threads = 1;
    rc = synth_dataset(&o, err, sizeof err);
    int files = 0, same = rc == 0 && same_tree(out, out2, &files);
    check(same && files == 337, "1 thread and 2 threads write identical files (%d of 337: 260 JPEG, 40 XML, 4 JSON, 72 lists, synth.txt)", files);
    SynthScene s1, s2;
    unsigned char *p1 = malloc((size_t)S * S * 3), *p2 = malloc((size_t)S * S * 3);
    synth_image(&s1, p1, SYNTH_COCO_TRAIN, 0, S, 7);
    synth_image(&s2, p2, SYNTH_COCO_TRAIN, 0, S, 8);
    check(memcmp(p1, p2, (size_t)S * S * 3) != 0, "another seed draws another image");
    free(p1);
    free(p2);

    // redrawing a smaller dataset over it removes the stale images
    o.images = 50;
    rc = synth_dataset(&o, err, sizeof err);
    snprintf(path, sizeof path, "%s/train2017", out2);
    int ntrain = count_files(path);
    snprintf(path, sizeof path, "%s/val2017", out2);
    int nval = count_files(path);
    snprintf(path, sizeof path, "%s/voc2007/JPEGImages", out2);
    int nvoc = count_files(path);
    check(rc == 0 && ntrain == 50 && nval == 5 && nvoc == 20,
          "redrawn with N = 50 over N = 100: %d train, %d val, %d VOC images (50, 5, 20)", ntrain, nval, nvoc);
}

// ----------------------------------------------------------------------------
// errors

// `virtex synth ARGS`: the exit code, stderr into errtext.
static int run_synth(const char *args, char *errtext, size_t n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "synth %s", args);
    Run r = run_virtex(tmp, cmd);
    snprintf(errtext, n, "%s", r.err);
    run_free(&r);
    return r.code;
}

static void test_errors(void) {
    char err[512], dir[300], path[400];
    SynthOptions o;
    synth_default_options(&o);
    o.quiet = 1;
    snprintf(dir, sizeof dir, "%s/user", tmp);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/mine.txt", dir);
    FILE *f = fopen(path, "w");
    if (f) { fputs("keep\n", f); fclose(f); }
    o.out = dir;
    o.images = 10;
    int rc = synth_dataset(&o, err, sizeof err);
    check(rc == -1 && strstr(err, "not empty") && access(path, F_OK) == 0,
          "a non-empty directory not made by synth is refused: %s", err);
    o.out = path;
    rc = synth_dataset(&o, err, sizeof err);
    check(rc == -1 && strstr(err, "not a directory"), "a file as --out is refused: %s", err);
    snprintf(path, sizeof path, "%s/mine.txt/sub", dir);
    o.out = path;
    rc = synth_dataset(&o, err, sizeof err);
    check(rc == -1 && strstr(err, "cannot create directory"), "an uncreatable --out: %s", err);
    o.out = dir;
    o.images = 5;
    check(synth_check_options(&o, err, sizeof err) == -1 && strstr(err, "--images"), "--images 5: %s", err);
    o.images = 10;
    o.size = 16;
    check(synth_check_options(&o, err, sizeof err) == -1 && strstr(err, "--size"), "--size 16: %s", err);

    if (access("./virtex", X_OK) && access("../virtex", X_OK)) {
        check(0, "./virtex is not built: the command line checks did not run");
        return;
    }
    char text[2048];
    int code = run_synth("--size abc", text, sizeof text);
    check(code == 2 && strstr(text, "'abc'"), "virtex synth --size abc: exit %d, \"%.60s\"", code, text);
    code = run_synth("--images 3", text, sizeof text);
    check(code == 2 && strstr(text, "--images"), "virtex synth --images 3: exit %d, \"%.60s\"", code, text);
    code = run_synth("--bogus 1", text, sizeof text);
    check(code == 2 && strstr(text, "--bogus"), "virtex synth --bogus 1: exit %d", code);
    snprintf(path, sizeof path, "--out '%s/mine.txt/x' --images 10", dir);
    code = run_synth(path, text, sizeof text);
    const char *nl = strchr(text, '\n');
    check(code == 1 && nl && !nl[1] && strstr(text, "cannot create directory"),
          "virtex synth into an uncreatable directory: exit %d, one line: %s", code, text);
    snprintf(path, sizeof path, "--out '%s/cli' --images 10 --size 48 --seed 3", tmp);
    code = run_synth(path, text, sizeof text);
    snprintf(path, sizeof path, "%s/cli/val2017/000000000011.jpg", tmp);
    Image img;
    int ok = code == 0 && image_load(&img, path, err, sizeof err) == 0;
    check(ok && img.w == 48, "virtex synth --images 10 --size 48 writes 48 px images (exit %d)", code);
    if (ok) image_free(&img);
}

void test_synth(void) {
    snprintf(tmp, sizeof tmp, "%s/virtex-synth-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        check(0, "mkdtemp %s: %s", tmp, strerror(errno));
        return;
    }
    test_caption_reader();
    test_captions_true();
    test_shapes_score();
    test_dataset();
    test_errors();
    nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}
