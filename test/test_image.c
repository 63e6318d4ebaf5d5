// test/test_image.c — image decoding and transforms (data.c, model.h section 8b).
//
// References: hand-computed values (commented where they are used), and torchvision
// 0.14's tensor path (test/make_image_fixtures.py -> test/fixtures/image_transforms.bin):
// F.resized_crop / F.resize + F.center_crop (bilinear, no antialias), adjust_*,
// normalize on x = u8/255, and PIL's convert("RGB") for PNG decoding.
// Tolerances: geometry and blends 2e-6 absolute (float32 rounding of the same formula;
// PyTorch may fuse multiply-adds), hue 2e-5 (division chains), decoding exact for PNG.
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stb/stb_image_write.h>
#include "test.h"

static char tmpdir[256];

static const char *tpath(const char *name) { return path_in(tmpdir, name); }

static TensorFile tf;
static int have_fixture;

static NamedTensor *fx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static NamedTensor *fx(const char *fmt, ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    NamedTensor *t = tensorfile_find(&tf, name);
    if (!t) check(0, "fixture tensor %s present", name);
    return t;
}

static const int64_t *fx_i64(NamedTensor *t) { return (const int64_t *)t->data; }
static const float *fx_f32(NamedTensor *t) { return (const float *)t->data; }

// An Image from a fixture's (H,W,3) int64 pixels (caller frees rgb).
static Image fx_image(const char *name) {
    Image im = {0, 0, NULL};
    NamedTensor *t = fx("img.%s", name);
    if (!t || t->ndim != 3 || t->shape[2] != 3) return im;
    im.h = t->shape[0];
    im.w = t->shape[1];
    im.rgb = malloc((size_t)im.h * im.w * 3);
    for (long i = 0; i < t->numel; i++) im.rgb[i] = (uint8_t)fx_i64(t)[i];
    return im;
}

static Image make_image(int h, int w, int (*f)(int y, int x, int c)) {
    Image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) im.rgb[(y * w + x) * 3 + c] = (uint8_t)f(y, x, c);
    return im;
}

static int one_line_naming(const char *err, const char *path) {
    return strstr(err, path) != NULL && strchr(err, '\n') == NULL && strlen(err) > strlen(path);
}

// ----------------------------------------------------------------------------
// decoding

static void test_decode_png_fixtures(void) {
    static const char *names[] = {"gray", "la", "rgba", "palette"};
    char err[512];
    for (int k = 0; k < 4; k++) {
        char file[64];
        snprintf(file, sizeof file, "image_%s.png", names[k]);
        Image im;
        int r = image_load(&im, fixture_path(file), err, sizeof err);
        NamedTensor *t = fx("png.%s", names[k]);
        if (r || !t) { check(0, "decode %s: %s", file, r ? err : "no reference"); continue; }
        int same = im.h == t->shape[0] && im.w == t->shape[1];
        for (long i = 0; same && i < t->numel; i++) same = im.rgb[i] == fx_i64(t)[i];
        check(same, "decode %-20s %dx%d RGB == PIL convert(\"RGB\") (alpha dropped)", file,
              im.w, im.h);
        image_free(&im);
    }
    // 16-bit gray: stb keeps the high byte, replicated to RGB
    Image im;
    NamedTensor *t = fx("png.gray16");
    if (image_load(&im, fixture_path("image_gray16.png"), err, sizeof err) == 0 && t) {
        int same = im.h == t->shape[0] && im.w == t->shape[1];
        for (long i = 0; same && i < t->numel; i++)
            for (int c = 0; c < 3; c++) same &= im.rgb[i * 3 + c] == (fx_i64(t)[i] >> 8);
        check(same, "decode image_gray16.png: RGB = value >> 8");
        image_free(&im);
    } else {
        check(0, "decode image_gray16.png: %s", err);
    }
}

static int grad_px(int y, int x, int c) { return c == 0 ? 3 * x + y : c == 1 ? 4 * y + 40 : 200 - 2 * x; }

static void test_decode_written(void) {
    char err[512];
    // gray, gray+alpha, RGBA PNGs written by stb_image_write
    int w = 13, h = 7;
    uint8_t src[13 * 7 * 4];
    for (int i = 0; i < w * h * 4; i++) src[i] = (uint8_t)(i * 37 + 11);
    for (int comp = 1; comp <= 4; comp++) {
        char name[32];
        snprintf(name, sizeof name, "c%d.png", comp);
        stbi_write_png(tpath(name), w, h, comp, src, w * comp);
        Image im;
        int r = image_load(&im, tpath(name), err, sizeof err);
        int ok = r == 0 && im.w == w && im.h == h;
        for (int i = 0; ok && i < w * h; i++)
            for (int c = 0; c < 3; c++) {
                int want = comp <= 2 ? src[i * comp] : src[i * comp + c];
                ok &= im.rgb[i * 3 + c] == want;
            }
        check(ok, "decode %d-channel PNG %dx%d -> RGB (gray replicated, alpha dropped)%s%s",
              comp, w, h, r ? ": " : "", r ? err : "");
        if (!r) image_free(&im);
    }
    // JPEG, a smooth image: size exact, pixels close
    Image g = make_image(48, 64, grad_px);
    stbi_write_jpg(tpath("g.jpg"), g.w, g.h, 3, g.rgb, 95);
    Image im;
    int r = image_load(&im, tpath("g.jpg"), err, sizeof err);
    double mad = 0;
    if (!r && im.w == g.w && im.h == g.h) {
        for (int i = 0; i < g.w * g.h * 3; i++) mad += abs((int)im.rgb[i] - (int)g.rgb[i]);
        mad /= g.w * g.h * 3;
    }
    check(!r && im.w == 64 && im.h == 48 && mad < 2.0,
          "decode JPEG 64x48 (quality 95): mean |diff| %.3f < 2 %s", mad, r ? err : "");
    if (!r) image_free(&im);
    // the same bytes from memory
    size_t n;
    unsigned char *bytes = slurp(tpath("g.jpg"), &n);
    r = image_load_memory(&im, bytes, n, "mem.jpg", err, sizeof err);
    check(r == 0 && im.w == 64 && im.h == 48, "decode JPEG from memory");
    if (!r) image_free(&im);

    // errors: missing, corrupt, truncated, empty, directory, absurd size
    const char *missing = tpath("no_such_file.jpg");
    r = image_load(&im, missing, err, sizeof err);
    check(r == -1 && im.rgb == NULL && one_line_naming(err, missing) &&
          strstr(err, "No such file"), "missing file: \"%s\"", err);

    spit(tpath("junk.jpg"), "this is not an image at all, just text\n", 39);
    r = image_load(&im, tpath("junk.jpg"), err, sizeof err);
    check(r == -1 && one_line_naming(err, tpath("junk.jpg")), "corrupt file: \"%s\"", err);

    // a JPEG cut inside its header, and one with garbage in the middle of the scan
    spit(tpath("cut.jpg"), bytes, 100);
    r = image_load(&im, tpath("cut.jpg"), err, sizeof err);
    check(r == -1 && one_line_naming(err, tpath("cut.jpg")), "truncated JPEG: \"%s\"", err);
    if (!r) image_free(&im);
    size_t pn;
    unsigned char *png = slurp(tpath("c3.png"), &pn);
    spit(tpath("cut.png"), png, pn / 2);
    r = image_load(&im, tpath("cut.png"), err, sizeof err);
    check(r == -1 && one_line_naming(err, tpath("cut.png")), "truncated PNG: \"%s\"", err);
    if (!r) image_free(&im);
    for (size_t i = n / 2; i < n / 2 + 200 && i < n; i++) bytes[i] = (unsigned char)(i * 7);
    r = image_load_memory(&im, bytes, n, "scrambled.jpg", err, sizeof err);
    check(r == -1 ? one_line_naming(err, "scrambled.jpg") : (im.w == 64 && im.h == 48),
          "scrambled JPEG: error or a 64x48 image, no crash (%s)", r ? err : "decoded");
    if (!r) image_free(&im);

    spit(tpath("empty.png"), "", 0);
    r = image_load(&im, tpath("empty.png"), err, sizeof err);
    check(r == -1 && one_line_naming(err, tpath("empty.png")), "empty file: \"%s\"", err);
    r = image_load(&im, tmpdir, err, sizeof err);
    check(r == -1 && one_line_naming(err, tmpdir), "directory: \"%s\"", err);

    // a PNG whose header claims 20000 x 10: refused before any pixel memory is taken
    memcpy(png + 16, "\x00\x00\x4e\x20\x00\x00\x00\x0a", 8);
    r = image_load_memory(&im, png, pn, "huge.png", err, sizeof err);
    check(r == -1 && one_line_naming(err, "huge.png") && strstr(err, "20000x10"),
          "absurd dimensions: \"%s\"", err);
    memcpy(png + 16, "\x00\x00\x00\x00\x00\x00\x00\x0a", 8);     // zero width
    r = image_load_memory(&im, png, pn, "zero.png", err, sizeof err);
    check(r == -1 && one_line_naming(err, "zero.png"), "zero width: \"%s\"", err);
    free(png);
    free(bytes);
    free(g.rgb);
}

// ----------------------------------------------------------------------------
// geometry

// A 4x4 image: R = 10y + x, G = 20x + 5, B = 200 - 30y (u8; the outputs are /255).
static int hand_px(int y, int x, int c) { return c == 0 ? 10 * y + x : c == 1 ? 20 * x + 5 : 200 - 30 * y; }

static void scale255(float *v, int n) { for (int i = 0; i < n; i++) v[i] /= 255.0f; }

static void test_bilinear_by_hand(void) {
    Image im = make_image(4, 4, hand_px);
    float out[3 * 16];
    // 4x4 -> 2x2: scale 2, src = 2(d+0.5)-0.5 = 0.5, 2.5: each output is the mean of a
    // 2x2 block. R: (0+1+10+11)/4 = 5.5, (2+3+12+13)/4 = 7.5, 25.5, 27.5.
    // G: (5+25)/2 = 15, (45+65)/2 = 55 in both rows. B: (200+170)/2 = 185, (140+110)/2 = 125.
    float want1[12] = {5.5f, 7.5f, 25.5f, 27.5f, 15, 55, 15, 55, 185, 185, 125, 125};
    scale255(want1, 12);
    image_resized_crop(&im, (CropBox){0, 0, 4, 4}, 2, 2, out);
    check_close("bilinear 4x4 -> 2x2 (block means)", out, want1, 12, 0, 1e-6);
    // box top 1, left 1, 2x3 -> 2x2: rows scale 1 (rows 1, 2); cols scale 1.5: src 0.25
    // -> 0.75 v(x=1) + 0.25 v(x=2), src 1.75 -> 0.25 v(2) + 0.75 v(3).
    // R row 1: 11.25, 12.75; row 2: 21.25, 22.75. G (row-independent): 0.75*25+0.25*45
    // = 30, 0.25*45+0.75*65 = 60. B: row 1 170, row 2 140.
    float want2[12] = {11.25f, 12.75f, 21.25f, 22.75f, 30, 60, 30, 60, 170, 170, 140, 140};
    scale255(want2, 12);
    image_resized_crop(&im, (CropBox){1, 1, 2, 3}, 2, 2, out);
    check_close("bilinear crop (1,1,2x3) -> 2x2", out, want2, 12, 0, 1e-6);
    // box 2x2 at (0,0) -> 4x4 (upsampling): src = 0.5(d+0.5)-0.5 = -0.25 (clamped to 0),
    // 0.25, 0.75, 1.25 (i0 = i1 = 1): weights of v1 0, 0.25, 0.75, 1.
    // R = 10*wy + wx with w = (0, .25, .75, 1); G = 5 + 20 wx; B = 200 - 30 wy.
    float w4[4] = {0, 0.25f, 0.75f, 1}, want3[48];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            want3[y * 4 + x] = 10 * w4[y] + w4[x];
            want3[16 + y * 4 + x] = 5 + 20 * w4[x];
            want3[32 + y * 4 + x] = 200 - 30 * w4[y];
        }
    scale255(want3, 48);
    image_resized_crop(&im, (CropBox){0, 0, 2, 2}, 4, 4, out);
    check_close("bilinear 2x2 -> 4x4 (edge clamp)", out, want3, 48, 0, 1e-6);
    // identity: box = image, same size -> exact pixels / 255
    float want4[48];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 16; i++) want4[c * 16 + i] = (float)im.rgb[i * 3 + c] / 255.0f;
    image_resized_crop(&im, (CropBox){0, 0, 4, 4}, 4, 4, out);
    check_close("crop 4x4 -> 4x4 is the image", out, want4, 48, 0, 0);
    // centre crop, no resize: 4x4 smallest side 4 (no-op), crop 2 -> rows/cols 1..2
    float want5[12] = {11, 12, 21, 22, 25, 45, 25, 45, 170, 170, 140, 140};
    scale255(want5, 12);
    image_resize_center_crop(&im, 4, 2, out);
    check_close("resize 4 + center crop 2 = pixels 1..2", out, want5, 12, 0, 0);
    free(im.rgb);
}

static void test_geometry_fixtures(void) {
    static const char *names[] = {"a", "b", "c", "d"};
    Image img[4];
    for (int i = 0; i < 4; i++) img[i] = fx_image(names[i]);
    NamedTensor *p = fx("rc.params");
    int ok = 1;
    double worst = 0;
    for (int k = 0; p && k < p->shape[0]; k++) {
        const int64_t *r = fx_i64(p) + 7 * k;
        int oh = (int)r[5], ow = (int)r[6];
        float *out = malloc(sizeof(float) * 3 * oh * ow);
        image_resized_crop(&img[r[0]], (CropBox){(int)r[1], (int)r[2], (int)r[3], (int)r[4]},
                           oh, ow, out);
        NamedTensor *t = fx("rc.%d", k);
        for (long i = 0; t && i < t->numel; i++) {
            double d = fabs(out[i] - fx_f32(t)[i]);
            if (d > worst) worst = d;
        }
        char what[96];
        snprintf(what, sizeof what, "resized_crop img.%s (%d,%d,%dx%d) -> %dx%d", names[r[0]],
                 (int)r[1], (int)r[2], (int)r[3], (int)r[4], oh, ow);
        if (t) ok &= check_close(what, out, fx_f32(t), t->numel, 0, 2e-6);
        free(out);
    }
    p = fx("rs.params");
    for (int k = 0; p && k < p->shape[0]; k++) {
        const int64_t *r = fx_i64(p) + 3 * k;
        int R = (int)r[1], S = (int)r[2];
        float *out = malloc(sizeof(float) * 3 * S * S);
        image_resize_center_crop(&img[r[0]], R, S, out);
        NamedTensor *t = fx("rs.%d", k);
        char what[96];
        snprintf(what, sizeof what, "resize %d + center_crop %d of img.%s (%dx%d)", R, S,
                 names[r[0]], img[r[0]].w, img[r[0]].h);
        if (t) check_close(what, out, fx_f32(t), t->numel, 0, 2e-6);
        free(out);
    }
    (void)ok;
    for (int i = 0; i < 4; i++) free(img[i].rgb);
}

static void test_flip(void) {
    float x[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};   // (C=2, H=2, W=3)
    float want[12] = {3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10};
    image_hflip(x, 2, 2, 3);
    check_close("hflip (2,2,3)", x, want, 12, 0, 0);
    float y[8] = {1, 2, 3, 4, 5, 6, 7, 8};                          // even width
    float wy[8] = {4, 3, 2, 1, 8, 7, 6, 5};
    image_hflip(y, 1, 2, 4);
    check_close("hflip (1,2,4)", y, wy, 8, 0, 0);

    static const char *cases[][2] = {
        {"a dog to the left of a cat", "a dog to the right of a cat"},
        {"a dog to the right of a cat", "a dog to the left of a cat"},
        {"left right left", "right left right"},
        {"leftover bright righteous lefty alright", "leftover bright righteous lefty alright"},
        {"left", "right"},
        {"right", "left"},
        {"left-hand side, right.", "right-hand side, left."},
        {"the left's (right) \"left\"", "the right's (left) \"right\""},
        {"Left and RIGHT stay", "Left and RIGHT stay"},
        {"left2 2left left_ _left", "left2 2left right_ _right"},
        {"caf\xc3\xa9left left\xc3\xa9 \xc3\xa9 left", "caf\xc3\xa9left left\xc3\xa9 \xc3\xa9 right"},
        {"", ""},
        {"  left  \tright\n", "  right  \tleft\n"},
        {"lef rig leftt rightt", "lef rig leftt rightt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = caption_swap_left_right(cases[i][0]);
        check(strcmp(s, cases[i][1]) == 0, "swap \"%s\" -> \"%s\" (want \"%s\")", cases[i][0], s,
              cases[i][1]);
        char *back = caption_swap_left_right(s);
        check(strcmp(back, cases[i][0]) == 0, "swap twice is the identity (\"%s\")", cases[i][0]);
        free(s);
        free(back);
    }
}

// ----------------------------------------------------------------------------
// colour

static float *to_chw(const Image *im) {
    long hw = (long)im->w * im->h;
    float *x = malloc(sizeof(float) * 3 * hw);
    for (long i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) x[c * hw + i] = (float)im->rgb[i * 3 + c] / 255.0f;
    return x;
}

static void test_color_fixtures(void) {
    static const char *comp[4] = {"brightness", "contrast", "saturation", "hue"};
    typedef void adjust_fn(float *, long, double);
    adjust_fn *fns[4] = {adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue};
    NamedTensor *fac = fx("jit.factors");
    if (!fac) return;
    int nf = fac->shape[1];
    const char *imgs[3] = {"a", "c", "d"};
    for (int m = 0; m < 3; m++) {
        Image im = fx_image(imgs[m]);
        long hw = (long)im.w * im.h;
        for (int c = 0; c < 4; c++)
            for (int k = 0; k < nf; k++) {
                float f = fx_f32(fac)[c * nf + k];
                float *x = to_chw(&im);
                fns[c](x, hw, f);
                NamedTensor *t = fx("jit.%s.%s.%d", imgs[m], comp[c], k);
                char what[96];
                snprintf(what, sizeof what, "adjust_%s(img.%s, %g)", comp[c], imgs[m], f);
                if (t) check_close(what, x, fx_f32(t), t->numel, 0, c == 3 ? 2e-5 : 2e-6);
                free(x);
            }
        free(im.rgb);
    }
    // ColorJitter.forward: the four adjustments in a given order
    Image a = fx_image("a");
    for (int k = 0; k < 3; k++) {
        NamedTensor *o = fx("seq.%d.order", k), *f = fx("seq.%d.factors", k),
                    *t = fx("seq.%d.out", k);
        if (!o || !f || !t) continue;
        JitterParams jp = {.apply = 1};
        for (int i = 0; i < 4; i++) jp.order[i] = (int)fx_i64(o)[i], jp.factor[i] = fx_f32(f)[i];
        float *x = to_chw(&a);
        color_jitter_apply(x, (long)a.w * a.h, &jp);
        char what[96];
        snprintf(what, sizeof what, "color jitter order %d%d%d%d", jp.order[0], jp.order[1],
                 jp.order[2], jp.order[3]);
        check_close(what, x, fx_f32(t), t->numel, 0, 2e-5);
        free(x);
    }
    // normalize
    float *x = to_chw(&a);
    normalize_imagenet(x, (long)a.w * a.h);
    NamedTensor *t = fx("norm.a");
    if (t) check_close("normalize ImageNet (img.a)", x, fx_f32(t), t->numel, 0, 1e-6);
    free(x);
    free(a.rgb);

    // hand values: brightness 0.5 of (0.8, 0.4, 1.0) -> (0.4, 0.2, 0.5); 1.5 clamps to 1
    float p[3] = {0.8f, 0.4f, 1.0f};
    adjust_brightness(p, 1, 1.5);
    float wp[3] = {1.0f, 0.6f, 1.0f};
    check_close("brightness 1.5 of (0.8,0.4,1.0) = (1,0.6,1) clamped", p, wp, 3, 0, 1e-6);
    // saturation 0 of one pixel = its gray 0.2989*0.8 + 0.587*0.4 + 0.114*1.0 = 0.58392
    float q[3] = {0.8f, 0.4f, 1.0f}, g = 0.2989f * 0.8f + 0.587f * 0.4f + 0.114f * 1.0f;
    adjust_saturation(q, 1, 0.0);
    float wq[3] = {g, g, g};
    check_close("saturation 0 = grayscale (0.58392)", q, wq, 3, 0, 1e-6);
    // hue +1/3 turns pure red into pure green, -1/3 into blue; gray is unchanged
    float h[9] = {1, 0, 0.5f, 0, 0, 0.5f, 0, 0, 0.5f};                // (3, 1x3) planar
    adjust_hue(h, 3, 1.0 / 3.0);
    float wh[9] = {0, 0, 0.5f, 1, 0, 0.5f, 0, 0, 0.5f};
    check_close("hue +1/3: red -> green, black and gray kept", h, wh, 9, 0, 1e-6);
}

static void test_jitter_params(void) {
    Rng rng;
    rng_seed(&rng, 7);
    ColorJitter cj = color_jitter_make(0.4, 0.4, 0.4, 0.1, 0.8);
    int n = 20000, applied = 0, inrange = 1, perm_ok = 1, first[4] = {0};
    double mean[4] = {0};
    for (int i = 0; i < n; i++) {
        JitterParams jp = color_jitter_params(&cj, &rng);
        if (!jp.apply) continue;
        applied++;
        int seen = 0;
        for (int k = 0; k < 4; k++) seen |= 1 << jp.order[k];
        perm_ok &= seen == 15;
        first[jp.order[0]]++;
        for (int k = 0; k < 3; k++) inrange &= jp.factor[k] >= 0.6 && jp.factor[k] < 1.4;
        inrange &= jp.factor[3] >= -0.1 && jp.factor[3] < 0.1;
        for (int k = 0; k < 4; k++) mean[k] += jp.factor[k];
    }
    double rate = (double)applied / n, sd = sqrt(0.8 * 0.2 / n);
    check(fabs(rate - 0.8) < 4 * sd, "color jitter applied %.4f of the time (p 0.8)", rate);
    check(perm_ok && inrange, "jitter order is a permutation, factors in [0.6,1.4) / [-0.1,0.1)");
    int fair = 1;
    for (int k = 0; k < 4; k++) {
        double fr = (double)first[k] / applied;
        fair &= fabs(fr - 0.25) < 4 * sqrt(0.25 * 0.75 / applied);
        mean[k] /= applied;
    }
    check(fair, "each adjustment comes first 1/4 of the time (%d %d %d %d)", first[0], first[1],
          first[2], first[3]);
    double tol = 4 * 0.8 / sqrt(12.0 * applied);
    check(fabs(mean[0] - 1) < tol && fabs(mean[1] - 1) < tol && fabs(mean[2] - 1) < tol &&
          fabs(mean[3]) < tol / 4, "mean factors %.4f %.4f %.4f %.4f (1, 1, 1, 0)", mean[0],
          mean[1], mean[2], mean[3]);
    ColorJitter never = color_jitter_make(0.4, 0.4, 0.4, 0.1, 0.0);
    Rng r0 = rng;
    JitterParams jp = color_jitter_params(&never, &rng);
    rng_uniform(&r0);
    check(!jp.apply && rng.s[0] == r0.s[0], "p 0: not applied, one draw taken");
}

// ----------------------------------------------------------------------------
// random resized crop parameters

static void test_rrc_params(void) {
    const double scale[2] = {0.2, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    // fallback boxes (no attempt can fit) == torchvision's
    NamedTensor *fb = fx("fb.params");
    for (int k = 0; fb && k < fb->shape[0]; k++) {
        const int64_t *r = fx_i64(fb) + 6 * k;
        Rng rng;
        rng_seed(&rng, (uint64_t)k);
        CropBox b;
        int f = rrc_get_params((int)r[0], (int)r[1], scale, ratio, &rng, &b);
        check(f == 1 && b.top == r[2] && b.left == r[3] && b.h == r[4] && b.w == r[5],
              "fallback on %dx%d (HxW): box (%d,%d,%dx%d), torchvision (%d,%d,%dx%d)",
              (int)r[0], (int)r[1], b.top, b.left, b.h, b.w, (int)r[2], (int)r[3], (int)r[4],
              (int)r[5]);
    }
    // by hand: H 10, W 1000 -> in_ratio 100 > 4/3: h = 10, w = round(13.33) = 13,
    // top 0, left (1000-13)//2 = 493
    Rng rng;
    rng_seed(&rng, 1);
    CropBox b;
    int f = rrc_get_params(10, 1000, scale, ratio, &rng, &b);
    check(f && b.top == 0 && b.left == 493 && b.h == 10 && b.w == 13, "fallback 10x1000 by hand");
    // a 1x1 image always gives the pixel
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        rrc_get_params(1, 1, scale, ratio, &rng, &b);
        ok &= b.top == 0 && b.left == 0 && b.h == 1 && b.w == 1;
    }
    check(ok, "1x1 image: box (0,0,1x1)");

    // 640x480: boxes inside, area and aspect within the ranges up to rounding of w, h
    rng_seed(&rng, 42);
    int n = 20000, inside = 1, area_ok = 1, ratio_ok = 1, fallbacks = 0;
    int H = 480, W = 640;
    double cx = 0, cy = 0;
    for (int i = 0; i < n; i++) {
        fallbacks += rrc_get_params(H, W, scale, ratio, &rng, &b);
        inside &= b.top >= 0 && b.left >= 0 && b.h > 0 && b.w > 0 && b.top + b.h <= H &&
                  b.left + b.w <= W;
        double A = (double)H * W;
        area_ok &= (b.w + 0.5) * (b.h + 0.5) >= 0.2 * A && (b.w - 0.5) * (b.h - 0.5) <= A;
        ratio_ok &= (b.w + 0.5) / (b.h - 0.5) >= 0.75 && (b.w - 0.5) / (b.h + 0.5) <= 4.0 / 3.0;
        cx += (b.left + b.w / 2.0) / W;
        cy += (b.top + b.h / 2.0) / H;
    }
    check(inside && area_ok && ratio_ok, "640x480: %d boxes inside, area in [0.2,1], "
          "aspect in [3/4,4/3] (up to rounding)", n);
    check(fallbacks < n / 1000, "640x480: %d fallbacks of %d (attempts almost always fit)",
          fallbacks, n);
    check(fabs(cx / n - 0.5) < 0.01 && fabs(cy / n - 0.5) < 0.01,
          "640x480: mean box centre (%.4f, %.4f) ~ (0.5, 0.5)", cx / n, cy / n);

    // 1000x1000 with scale (0.2, 0.5): every first attempt fits, so area/A ~ U(0.2, 0.5)
    // (mean 0.35, sd 0.0866) and log(w/h) ~ U(log 3/4, log 4/3) (mean 0, sd 0.1661).
    const double sc2[2] = {0.2, 0.5};
    rng_seed(&rng, 3);
    double ma = 0, va = 0, ml = 0, vl = 0;
    int bins[4] = {0}, m = 20000;
    for (int i = 0; i < m; i++) {
        f = rrc_get_params(1000, 1000, sc2, ratio, &rng, &b);
        double a = b.w * (double)b.h / 1e6, l = log((double)b.w / b.h);
        ma += a; va += a * a; ml += l; vl += l * l;
        int bin = (int)((l - log(0.75)) / (2 * log(4.0 / 3.0)) * 4);
        bins[bin < 0 ? 0 : bin > 3 ? 3 : bin]++;
    }
    ma /= m; ml /= m;
    va = sqrt(va / m - ma * ma); vl = sqrt(vl / m - ml * ml);
    check(fabs(ma - 0.35) < 4 * 0.0866 / sqrt(m) + 1e-3 && fabs(va - 0.0866) < 0.003,
          "1000x1000 scale (0.2,0.5): area mean %.4f sd %.4f (0.35, 0.0866)", ma, va);
    check(fabs(ml) < 4 * 0.1661 / sqrt(m) && fabs(vl - 0.1661) < 0.004,
          "1000x1000: log aspect mean %.4f sd %.4f (0, 0.1661)", ml, vl);
    int flat = 1;
    for (int k = 0; k < 4; k++) flat &= abs(bins[k] - m / 4) < 4 * sqrt(m * 0.1875) + 0.01 * m;
    check(flat, "log aspect is flat over 4 bins (%d %d %d %d)", bins[0], bins[1], bins[2], bins[3]);

    // same seed, same boxes
    Rng r1, r2;
    rng_seed(&r1, 99);
    rng_seed(&r2, 99);
    int same = 1;
    for (int i = 0; i < 100; i++) {
        CropBox b1, b2;
        rrc_get_params(375, 500, scale, ratio, &r1, &b1);
        rrc_get_params(375, 500, scale, ratio, &r2, &b2);
        same &= !memcmp(&b1, &b2, sizeof b1);
    }
    check(same, "same seed gives the same boxes");
}

// ----------------------------------------------------------------------------
// pipelines

static int noise_px(int y, int x, int c) { return (int)((y * 131u + x * 71u + c * 29u + (x * y) % 17u * 13u) % 256u); }

static int bits_equal(const float *a, const float *b, long n) { return memcmp(a, b, sizeof(float) * n) == 0; }

static void test_pipelines(void) {
    char err[512];
    TransformPipeline tp;
    static const char bad1[][64] = {"random_resized_crop", "rotate"};
    int r = transform_parse(&tp, bad1, 2, 8, 0, err, sizeof err);
    check(r == -1 && strstr(err, "rotate") && strstr(err, "center_crop"), "unknown name: \"%s\"", err);
    static const char bad2[][64] = {"random_resized_crop::{'scale': (0.08, 1.0), 'p': 1}"};
    r = transform_parse(&tp, bad2, 1, 8, 0, err, sizeof err);
    check(r == -1 && strstr(err, "'p'"), "unknown option: \"%s\"", err);
    static const char bad3[][64] = {"random_resized_crop::{'scale': (0.08 1.0)}"};
    r = transform_parse(&tp, bad3, 1, 8, 0, err, sizeof err);
    check(r == -1 && strstr(err, "scale"), "malformed option: \"%s\"", err);
    static const char bad4[][64] = {"color_jitter::{'hue': 0.7}"};
    r = transform_parse(&tp, bad4, 1, 8, 0, err, sizeof err);
    check(r == -1 && strstr(err, "hue"), "hue out of range: \"%s\"", err);
    static const char good[][64] = {"random_resized_crop::{'scale': (0.08, 1.0)}",
                                    " horizontal_flip :: { \"p\" : 0.25 } ",
                                    "color_jitter::{'brightness': 0.2, 'hue': [-0.05, 0.02], 'p': 1}",
                                    "normalize"};
    r = transform_parse(&tp, good, 4, 8, 0, err, sizeof err);
    check(r == 0 && tp.step[0].scale[0] == 0.08 && tp.step[0].scale[1] == 1.0 &&
          tp.step[1].p == 0.25 && tp.step[2].jitter.lo[0] == 0.8 && tp.step[2].jitter.hi[0] == 1.2 &&
          tp.step[2].jitter.lo[3] == -0.05 && tp.step[2].jitter.hi[3] == 0.02 &&
          tp.step[2].jitter.p == 1 && tp.step[2].jitter.lo[1] == 0.6 && tp.R == 8,
          "options parsed (original's \"name::{...}\" syntax) %s", r ? err : "");

    Image im = make_image(37, 53, noise_px);
    int S = 16;
    long n = 3L * S * S;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);

    // the default train list == transform_train, bit for bit, over many seeds
    static const char train[][64] = {"random_resized_crop", "horizontal_flip", "color_jitter",
                                     "normalize"};
    int same = 1, flips = 0, finite = 1;
    for (uint64_t s = 0; s < 40; s++) {
        Rng r1, r2;
        rng_seed(&r1, s);
        rng_seed(&r2, s);
        int f1, f2;
        r = transform_apply(train, 4, &im, a, S, 0, &r1, &f1, err, sizeof err);
        transform_train(&im, b, S, &r2, &f2);
        same &= r == 0 && f1 == f2 && bits_equal(a, b, n) && r1.s[0] == r2.s[0];
        flips += f1;
        for (long i = 0; i < n; i++) finite &= isfinite(a[i]) && fabsf(a[i]) < 3;
    }
    check(same && finite && flips > 5 && flips < 35,
          "train list == transform_train (40 seeds, %d flipped), finite, |x| < 3", flips);

    // val list == transform_val; R defaults to S
    static const char val[][64] = {"smallest_resize", "center_crop", "normalize"};
    Rng rng;
    rng_seed(&rng, 5);
    r = transform_apply(val, 3, &im, a, S, 24, &rng, NULL, err, sizeof err);
    transform_val(&im, b, 24, S);
    check(r == 0 && bits_equal(a, b, n), "val list (R 24) == transform_val");
    r = transform_apply(val, 3, &im, a, S, 0, &rng, NULL, err, sizeof err);
    transform_val(&im, b, S, S);
    check(r == 0 && bits_equal(a, b, n), "val list, R 0 -> R = S");

    // the small config: resize, crop, flip (p 1 here), normalize == pieces by hand
    static const char small[][64] = {"smallest_resize", "center_crop",
                                     "horizontal_flip::{'p': 1.0}", "normalize"};
    int fl = 0;
    r = transform_apply(small, 4, &im, a, S, 0, &rng, &fl, err, sizeof err);
    image_resize_center_crop(&im, S, S, b);
    image_hflip(b, 3, S, S);
    normalize_imagenet(b, (long)S * S);
    check(r == 0 && fl == 1 && bits_equal(a, b, n), "small-config list == resize, crop, flip, normalize");

    // materialised paths: a float source must resample exactly like the u8 one. Two
    // forced flips (2 draws) turn the image into floats and back, then the crop runs.
    static const char lazy[][64] = {"random_resized_crop"};
    static const char eager[][64] = {"horizontal_flip::{'p': 1}", "horizontal_flip::{'p': 1}",
                                     "random_resized_crop"};
    same = 1;
    for (uint64_t s = 0; s < 10; s++) {
        Rng r1, r2;
        rng_seed(&r1, s);
        rng_seed(&r2, s);
        rng_uniform(&r1);
        rng_uniform(&r1);
        int f2;
        r = transform_apply(lazy, 1, &im, a, S, 0, &r1, NULL, err, sizeof err);
        r |= transform_apply(eager, 3, &im, b, S, 0, &r2, &f2, err, sizeof err);
        same &= r == 0 && f2 == 0 && bits_equal(a, b, n);
    }
    check(same, "crop from the float image == crop from the u8 image (flip twice first)");
    // flipping before the crop == cropping the mirrored image
    Image mir = make_image(37, 53, noise_px);
    for (int y = 0; y < mir.h; y++)
        for (int x = 0; x < mir.w; x++)
            for (int c = 0; c < 3; c++)
                mir.rgb[(y * mir.w + x) * 3 + c] = im.rgb[(y * im.w + (im.w - 1 - x)) * 3 + c];
    static const char flipfirst[][64] = {"horizontal_flip::{'p': 1}", "random_resized_crop"};
    Rng r1, r2;
    rng_seed(&r1, 11);
    rng_seed(&r2, 11);
    rng_uniform(&r2);
    r = transform_apply(flipfirst, 2, &im, a, S, 0, &r1, &fl, err, sizeof err);
    r |= transform_apply(lazy, 1, &mir, b, S, 0, &r2, NULL, err, sizeof err);
    check(r == 0 && fl == 1 && bits_equal(a, b, n), "flip then crop == crop of the mirrored image");
    // the same when the image is already S x S (the float image lives in the output)
    Image sq = make_image(S, S, noise_px), sqm = make_image(S, S, noise_px);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++)
                sqm.rgb[(y * S + x) * 3 + c] = sq.rgb[(y * S + S - 1 - x) * 3 + c];
    rng_seed(&r1, 12);
    rng_seed(&r2, 12);
    rng_uniform(&r2);
    r = transform_apply(flipfirst, 2, &sq, a, S, 0, &r1, &fl, err, sizeof err);
    r |= transform_apply(lazy, 1, &sqm, b, S, 0, &r2, NULL, err, sizeof err);
    check(r == 0 && bits_equal(a, b, n), "S x S input: flip then crop (in the output buffer)");
    // padding then a crop: R < S pads, the crop must then read zeros from the padding
    static const char pad1[][64] = {"smallest_resize", "center_crop", "random_resized_crop"};
    static const char pad2[][64] = {"smallest_resize", "center_crop", "horizontal_flip::{'p': 1}",
                                    "horizontal_flip::{'p': 1}", "random_resized_crop"};
    rng_seed(&r1, 13);
    rng_seed(&r2, 13);
    rng_uniform(&r1);
    rng_uniform(&r1);
    r = transform_apply(pad1, 3, &im, a, S, 9, &r1, NULL, err, sizeof err);
    r |= transform_apply(pad2, 5, &im, b, S, 9, &r2, NULL, err, sizeof err);
    check(r == 0 && bits_equal(a, b, n), "padded image then crop: lazy == materialised");
    // two centre crops == one
    static const char cc2[][64] = {"smallest_resize", "center_crop", "center_crop"};
    r = transform_apply(cc2, 3, &im, a, S, 20, &rng, NULL, err, sizeof err);
    image_resize_center_crop(&im, 20, S, b);
    check(r == 0 && bits_equal(a, b, n), "center_crop twice == once");
    // global_resize
    static const char gr[][64] = {"global_resize"};
    r = transform_apply(gr, 1, &im, a, S, 0, &rng, NULL, err, sizeof err);
    image_resized_crop(&im, (CropBox){0, 0, im.h, im.w}, S, S, b);
    check(r == 0 && bits_equal(a, b, n), "global_resize == resized_crop of the whole image");
    // a list that does not end at S x S
    static const char nocrop[][64] = {"smallest_resize", "normalize"};
    r = transform_apply(nocrop, 2, &im, a, S, 0, &rng, NULL, err, sizeof err);
    check(r == -1 && strstr(err, "center_crop"), "no crop in the list: \"%s\"", err);

    free(a);
    free(b);
    free(im.rgb);
    free(mir.rgb);
    free(sq.rgb);
    free(sqm.rgb);
}

// ----------------------------------------------------------------------------
// speed (printed, not asserted)

typedef struct { unsigned char *p; size_t n, cap; } MemBuf;
static void mem_write(void *ctx, void *data, int size) {
    MemBuf *m = ctx;
    if (m->n + (size_t)size > m->cap) {
        m->cap = (m->n + (size_t)size) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

static int photo_px(int y, int x, int c) {
    double v = 128 + 90 * sin(x * 0.021 + c) * cos(y * 0.017 - c) + 30 * sin((x + y) * 0.3);
    v += (double)((x * 7919u + y * 104729u + c * 31u) % 23u) - 11;
    return v < 0 ? 0 : v > 255 ? 255 : (int)v;
}

static void test_speed(void) {
    Image src = make_image(480, 640, photo_px);
    MemBuf jpg = {0};
    stbi_write_jpg_to_func(mem_write, &jpg, 640, 480, 3, src.rgb, 90);
    free(src.rgb);
    int S = 224;
    float *out = malloc(sizeof(float) * 3 * S * S);
    char err[256];
    Rng rng;
    rng_seed(&rng, 1);
    double t0 = now_seconds(), td = 0, tt = 0;
    int n = 0;
    while (n < 3 || (now_seconds() - t0 < 0.6 && n < 400)) {
        double a = now_seconds();
        Image im;
        if (image_load_memory(&im, jpg.p, jpg.n, "bench.jpg", err, sizeof err)) {
            check(0, "speed: %s", err);
            break;
        }
        double b = now_seconds();
        int fl;
        transform_train(&im, out, S, &rng, &fl);
        double c = now_seconds();
        td += b - a;
        tt += c - b;
        image_free(&im);
        n++;
    }
    Image im;
    image_load_memory(&im, jpg.p, jpg.n, "bench.jpg", err, sizeof err);
    double t1 = now_seconds();
    int nv = 0;
    while (nv < 3 || (now_seconds() - t1 < 0.15 && nv < 400)) { transform_val(&im, out, 224, S); nv++; }
    double tv = (now_seconds() - t1) / nv;
    image_free(&im);
    printf("  speed (1 core, 640x480 JPEG q90 %zu bytes): decode %.2f ms + transform_train "
           "%.2f ms = %.1f images/s; transform_val %.2f ms\n", jpg.n, 1e3 * td / n, 1e3 * tt / n,
           n / (td + tt), 1e3 * tv);
    free(out);
    free(jpg.p);
}

void test_image(void) {
    char err[512];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/virtex_test_image_XXXXXX");
    if (!mkdtemp(tmpdir)) { check(0, "mkdtemp"); return; }
    have_fixture = tensorfile_read(&tf, fixture_path("image_transforms.bin"), err, sizeof err) == 0;
    check(have_fixture, "read image_transforms.bin %s", have_fixture ? "" : err);

    test_decode_written();
    test_bilinear_by_hand();
    test_flip();
    test_rrc_params();
    test_jitter_params();
    test_pipelines();
    if (have_fixture) {
        test_decode_png_fixtures();
        test_geometry_fixtures();
        test_color_fixtures();
        tensorfile_free(&tf);
    }
    test_speed();
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tpath(e->d_name));
    if (d) closedir(d);
    rmdir(tmpdir);
}
