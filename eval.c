// eval.c — what a trained VirTex is measured by: captions (decoding, CIDEr-D, BLEU,
// attention maps) and the transfer of its ResNet (pooled features, VOC07 SVMs, the
// ImageNet linear probe). model.h section 10 lists what is here.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// 10a. captions: decoding and metrics

// ---- end 10a

// ----------------------------------------------------------------------------
// 10b. transfer: features, VOC07 SVMs, linear probe
//
// The ResNet of a VirTex model as a frozen feature extractor (eval mode, no grad):
// global-average-pooled layer4 features, then the paper's two probes. VOC07: one
// linear SVM per class, solved in the dual by coordinate descent as liblinear's
// L2R_L2LOSS_SVC_DUAL (what the original's sklearn.svm.LinearSVC runs), its cost picked
// by 3-fold cross-validated AP (sklearn's StratifiedKFold without shuffling, AP as
// sklearn.metrics.average_precision_score). ImageNet: a Linear layer trained by SGD on
// top of the frozen features (scripts/clf_linear.py of the original).

#include <dirent.h>
#include <errno.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

void downstream_sizes(const Config *cfg, int *S, int *R) {
    *S = cfg->DATA.IMAGE_CROP_SIZE;
    *R = *S * 256 / 224;
}

// Seed of sample `key` of a feature pass: the same (seed, key) draws the same crop.
static uint64_t sample_seed(uint64_t seed, uint64_t key) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ (key + 0x632BE59BD9B4E019ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- progress on stderr for long passes: rate and ETA, at most once a second on a
// terminal (with \r), every 15 s otherwise; the last call prints the final line.
typedef struct Progress { const char *label; long total; double t0, last; int tty; } Progress;

static void progress_start(Progress *p, const char *label, long total) {
    p->label = label;
    p->total = total;
    p->t0 = p->last = now_seconds();
    p->tty = isatty(2);
}

static void progress_update(Progress *p, long done) {
    if (!p->label) return;
    double t = now_seconds();
    if (done < p->total && t - p->last < (p->tty ? 1.0 : 15.0)) return;
    p->last = t;
    double rate = done / (t - p->t0 + 1e-9);
    double eta = rate > 0 ? (p->total - done) / rate : 0;
    fprintf(stderr, "%s%s: %ld/%ld images, %.1f images/s, ETA %.0fs%s", p->tty ? "\r" : "",
            p->label, done, p->total, rate, eta, p->tty && done < p->total ? "   " : "\n");
}

// ---- pooled features

int features_extract(Model *m, const char *const *paths, long n, const FeatureOptions *o,
                     float *out, char *err, size_t errlen) {
    const TransformPipeline *tp = o->tp;
    int S = tp->S, C = m->cnn.out_channels, B = o->batch_size > 0 ? o->batch_size : 64;
    Device dev = m->ntensors ? m->tensors[0].device : DEV_CPU;
    const Backend *be = backend_for(dev);
    float *images = xmalloc((size_t)B * 3 * S * S * sizeof(float));
    Graph g;
    graph_init(&g, dev, 0);
    g.grad_enabled = 0;                            // frozen: no tape
    g.training = 0;                                // BatchNorm running stats
    Progress pr = {0};
    if (o->progress) progress_start(&pr, o->progress, n);
    int rc = 0;
    for (long i0 = 0; i0 < n && !rc; i0 += B) {
        int nb = n - i0 < B ? (int)(n - i0) : B;
        long bad = -1;
        // decode and transform the batch on every core
        #pragma omp parallel for schedule(dynamic)
        for (int b = 0; b < nb; b++) {
            Image img = {0};
            char e[512];
            Rng rng;
            rng_seed(&rng, sample_seed(o->seed, (uint64_t)(i0 + b)));
            int fail = image_load(&img, paths[i0 + b], e, sizeof e) ||
                       transform_run(tp, &img, images + (size_t)b * 3 * S * S, &rng, NULL, e, sizeof e);
            image_free(&img);
            if (fail) {
                #pragma omp critical(features_error)
                if (bad < 0 || i0 + b < bad) {
                    bad = i0 + b;
                    snprintf(err, errlen, "%s", e);
                }
            }
        }
        if (bad >= 0) { rc = -1; break; }
        graph_reset(&g);
        Tensor *x = tensor_new(&g, 4, (int[]){nb, 3, S, S});
        be->from_host(x->data, images, (size_t)nb * 3 * S * S * sizeof(float));
        Tensor *pooled = op_avgpool(&g, visual_forward(&g, m, x));      // (nb, C)
        float *dst = out + i0 * C;
        be->to_host(dst, pooled->data, (size_t)nb * C * sizeof(float));
        if (o->l2_normalize)                       // features / ||features|| (the original)
            for (int b = 0; b < nb; b++) {
                double ss = 0;
                for (int c = 0; c < C; c++) ss += (double)dst[b * C + c] * dst[b * C + c];
                float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
                for (int c = 0; c < C; c++) dst[b * C + c] *= inv;
            }
        progress_update(&pr, i0 + nb);
    }
    graph_free(&g);
    free(images);
    return rc;
}

// ---- image lists

static int has_image_ext(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".ppm",
                                      ".pgm", ".pnm", ".psd", ".hdr"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

typedef struct StrList { char **s; long n, cap; } StrList;

static void strlist_push(StrList *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->s = realloc(l->s, (size_t)l->cap * sizeof *l->s);
        if (!l->s) fatal("out of memory");
    }
    l->s[l->n++] = s;
}

static void strlist_free(StrList *l) {
    for (long i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The entries of dir (files when want_dirs is 0, else directories), sorted by name,
// hidden ones skipped. Returns -1 with a message when dir cannot be read.
static int list_dir(const char *dir, int want_dirs, StrList *out, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *path = xmalloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(path, "%s/%s", dir, e->d_name);
        struct stat st;
        int ok = stat(path, &st) == 0 && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
        free(path);
        if (ok) strlist_push(out, xstrdup(e->d_name));
    }
    closedir(d);
    qsort(out->s, (size_t)out->n, sizeof *out->s, cmp_str);
    return 0;
}

// Append the images under dir/rel (recursively, each directory in name order) as
// paths relative to dir.
static int walk_images(const char *dir, const char *rel, StrList *out, int depth, char *err,
                       size_t errlen) {
    char *here = xmalloc(strlen(dir) + strlen(rel) + 2);
    sprintf(here, "%s%s%s", dir, *rel ? "/" : "", rel);
    StrList names = {0};
    int rc = list_dir(here, 0, &names, err, errlen);
    for (long i = 0; i < names.n && !rc; i++) {
        char *sub = xmalloc(strlen(rel) + strlen(names.s[i]) + 2);
        sprintf(sub, "%s%s%s", rel, *rel ? "/" : "", names.s[i]);
        char *full = xmalloc(strlen(here) + strlen(names.s[i]) + 2);
        sprintf(full, "%s/%s", here, names.s[i]);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < 16) rc = walk_images(dir, sub, out, depth + 1, err, errlen);
            free(sub);
        } else if (has_image_ext(names.s[i])) {
            strlist_push(out, sub);
        } else {
            free(sub);
        }
        free(full);
    }
    strlist_free(&names);
    free(here);
    return rc;
}

char **list_images(const char *dir, long *n, char *err, size_t errlen) {
    StrList l = {0};
    *n = 0;
    if (walk_images(dir, "", &l, 0, err, errlen)) { strlist_free(&l); return NULL; }
    if (l.n == 0) {
        snprintf(err, errlen, "%s: no images (.jpg .jpeg .png .bmp .gif .tga .ppm .pgm .pnm .psd .hdr)", dir);
        strlist_free(&l);
        return NULL;
    }
    *n = l.n;
    return l.s;
}

void free_strings(char **s, long n) {
    for (long i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

// ---- NumPy .npy v1.0, written as numpy 1.24's np.save writes it (byte for byte): the
// header dict, spare spaces for growing axis 0, padded with spaces and '\n' so the
// data starts at a multiple of 64 bytes.
int npy_write(const char *path, const float *x, long rows, long cols, char *err, size_t errlen) {
    char dict[160], num[32];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%ld, %ld), }",
                       rows, cols);
    int grow = 21 - snprintf(num, sizeof num, "%ld", rows);
    int hlen = len + (grow > 0 ? grow : 0) + 1;
    int pad = 64 - (10 + hlen) % 64;
    AtomicFile af;
    if (atomic_open(&af, path)) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return -1;
    }
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    pre[8] = (unsigned char)((hlen + pad) & 0xFF);
    pre[9] = (unsigned char)((hlen + pad) >> 8);
    fwrite(pre, 1, 10, af.f);
    fputs(dict, af.f);
    fprintf(af.f, "%*s\n", (grow > 0 ? grow : 0) + pad, "");
    fwrite(x, sizeof(float), (size_t)(rows * cols), af.f);   // little-endian hosts
    if (atomic_commit(&af)) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

// ---- average precision, folds, the SVM

typedef struct ScoreIndex { double s; long i; } ScoreIndex;
static int cmp_score_desc(const void *a, const void *b) {
    const ScoreIndex *x = a, *y = b;
    return x->s < y->s ? 1 : x->s > y->s ? -1 : (x->i > y->i) - (x->i < y->i);
}

double average_precision(const double *scores, const int *positive, long n) {
    ScoreIndex *order = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    long npos = 0;
    for (long i = 0; i < n; i++) {
        order[i] = (ScoreIndex){scores[i], i};
        npos += positive[i] != 0;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_score_desc);      // highest score first
    double ap = 0, prev_recall = 0;
    long tp = 0, fp = 0;
    for (long i = 0; i < n && npos > 0;) {
        long j = i;                                // one threshold per distinct score
        for (; j < n && order[j].s == order[i].s; j++) {
            if (positive[order[j].i]) tp++;
            else fp++;
        }
        double recall = (double)tp / npos, precision = (double)tp / (tp + fp);
        ap += (recall - prev_recall) * precision;  // sum of (R_k - R_k-1) P_k
        prev_recall = recall;
        i = j;
    }
    free(order);
    return ap;                                     // no positives: 0, as sklearn 1.2
}

void stratified_folds(const int *y, long n, int k, int *fold) {
    // classes numbered in order of first appearance; the sorted labels dealt round-robin
    // give each class's count per fold; then each class's samples, in order, fill fold
    // 0 first, then fold 1, ...
    int first = n ? y[0] : 0;
    long count[2] = {0, 0};
    for (long i = 0; i < n; i++) count[y[i] != first]++;
    for (int c = 0; c < 2; c++) {
        long start = c ? count[0] : 0, end = start + count[c];
        long alloc[64] = {0};
        for (long p = start; p < end; p++) alloc[p % k]++;
        int f = 0;
        long used = 0;
        for (long i = 0; i < n; i++) {
            if ((y[i] != first) != c) continue;
            while (f < k - 1 && used >= alloc[f]) { f++; used = 0; }
            fold[i] = f;
            used++;
        }
    }
}

long svm_train(const float *X, int d, const long *rows, long n, const int *y, const SvmOptions *o,
               double *w) {
    double diag[2] = {0.5 / o->C, 0.5 / (o->C * o->pos_weight)};   // [y == +1]
    double *alpha = xcalloc((size_t)n + 1, sizeof *alpha), *QD = xmalloc(((size_t)n + 1) * sizeof *QD);
    long *index = xmalloc(((size_t)n + 1) * sizeof *index);
    memset(w, 0, (size_t)(d + 1) * sizeof *w);
    for (long i = 0; i < n; i++) {
        const float *x = X + (size_t)(rows ? rows[i] : i) * d;
        double s = 1.0;                            // the bias feature, intercept_scaling = 1
        for (int j = 0; j < d; j++) s += (double)x[j] * x[j];
        QD[i] = diag[y[i] > 0] + s;
        index[i] = i;
    }
    Rng rng;
    rng_seed(&rng, o->seed);
    long active = n, iter = 0;
    double PGmax_old = INFINITY;                   // (no upper bound: no PGmin shrinking)
    while (iter < o->max_iter) {
        double PGmax_new = -INFINITY, PGmin_new = INFINITY;
        for (long i = 0; i < active; i++) {        // visit the active set in random order
            long j = i + (long)(rng_next(&rng) % (uint64_t)(active - i));
            long t = index[i]; index[i] = index[j]; index[j] = t;
        }
        for (long s = 0; s < active; s++) {
            long i = index[s];
            const float *x = X + (size_t)(rows ? rows[i] : i) * d;
            double yi = y[i] > 0 ? 1.0 : -1.0, dot = w[d];
            for (int j = 0; j < d; j++) dot += w[j] * x[j];
            double G = yi * dot - 1 + alpha[i] * diag[y[i] > 0], PG = 0;
            if (alpha[i] == 0) {
                if (G > PGmax_old) {               // shrink: stays at the bound
                    active--;
                    long t = index[s]; index[s] = index[active]; index[active] = t;
                    s--;
                    continue;
                } else if (G < 0) PG = G;
            } else PG = G;                         // no upper bound for the squared hinge
            if (PG > PGmax_new) PGmax_new = PG;
            if (PG < PGmin_new) PGmin_new = PG;
            if (fabs(PG) > 1e-12) {
                double old = alpha[i];
                alpha[i] = fmax(alpha[i] - G / QD[i], 0.0);
                double step = (alpha[i] - old) * yi;
                for (int j = 0; j < d; j++) w[j] += step * x[j];
                w[d] += step;
            }
        }
        iter++;
        if (PGmax_new - PGmin_new <= o->tol) {
            if (active == n) break;
            active = n;                            // check the shrunk ones once more
            PGmax_old = INFINITY;
            continue;
        }
        PGmax_old = PGmax_new <= 0 ? INFINITY : PGmax_new;
    }
    free(alpha);
    free(QD);
    free(index);
    return iter;
}

double svm_decision(const double *w, const float *x, int d) {
    double s = w[d];
    for (int j = 0; j < d; j++) s += w[j] * x[j];
    return s;
}

const double VOC07_COSTS[4] = {0.01, 0.1, 1.0, 10.0};

// Mean AP of the 3 folds at one cost; NaN when a fold's training part has one class
// (sklearn's LinearSVC refuses it and cross_val_score scores it NaN).
static double crossval_ap(const float *X, int d, long n, const int *y, const int *fold, double C,
                          long *rows, double *scores, int *pos) {
    double sum = 0;
    for (int f = 0; f < 3; f++) {
        long nt = 0, nv = 0, np = 0;
        for (long i = 0; i < n; i++)
            if (fold[i] != f) { rows[nt++] = i; np += y[i] > 0; }
        if (np == 0 || np == nt) return NAN;
        int *yt = xmalloc((size_t)nt * sizeof *yt);
        for (long t = 0; t < nt; t++) yt[t] = y[rows[t]];
        double *w = xmalloc((size_t)(d + 1) * sizeof *w);
        SvmOptions o = {C, 2.0, 1e-4, 2000, 0};
        svm_train(X, d, rows, nt, yt, &o, w);
        for (long i = 0; i < n; i++)
            if (fold[i] == f) { scores[nv] = svm_decision(w, X + (size_t)i * d, d); pos[nv++] = y[i] > 0; }
        sum += average_precision(scores, pos, nv);
        free(yt);
        free(w);
    }
    return sum / 3;
}

void voc07_class_svm(const float *Xtr, const signed char *ltr, long ntr, const float *Xte,
                     const signed char *lte, long nte, int d, VocClassResult *r) {
    int *y = xmalloc((size_t)(ntr + 1) * sizeof *y), *fold = xmalloc((size_t)(ntr + 1) * sizeof *fold);
    long n = ntr > nte ? ntr : nte;
    long *rows = xmalloc((size_t)(n + 1) * sizeof *rows);
    double *scores = xmalloc((size_t)(n + 1) * sizeof *scores);
    int *pos = xmalloc((size_t)(n + 1) * sizeof *pos);
    r->npos_train = r->npos_test = 0;
    for (long i = 0; i < ntr; i++) {               // difficult (0) trains as a negative
        y[i] = ltr[i] == 1 ? 1 : -1;
        r->npos_train += y[i] > 0;
    }
    stratified_folds(y, ntr, 3, fold);
    double best = 0.0;
    int best_k = -1;
    for (int k = 0; k < 4; k++) {
        r->cv_ap[k] = crossval_ap(Xtr, d, ntr, y, fold, VOC07_COSTS[k], rows, scores, pos);
        if (r->cv_ap[k] > best) { best = r->cv_ap[k]; best_k = k; }   // NaN never wins
    }
    r->cost_index = best_k < 0 ? 0 : best_k;      // no cost beat AP 0: the smallest
    r->ap = NAN;
    if (r->npos_train > 0 && r->npos_train < ntr) {
        double *w = xmalloc((size_t)(d + 1) * sizeof *w);
        SvmOptions o = {VOC07_COSTS[r->cost_index], 2.0, 1e-4, 2000, 0};
        svm_train(Xtr, d, NULL, ntr, y, &o, w);
        long nv = 0;
        for (long i = 0; i < nte; i++)
            if (lte[i] != 0) {                     // difficult test images are ignored
                scores[nv] = svm_decision(w, Xte + (size_t)i * d, d);
                pos[nv] = lte[i] == 1;
                r->npos_test += pos[nv++];
            }
        r->ap = average_precision(scores, pos, nv);
        free(w);
    }
    free(y);
    free(fold);
    free(rows);
    free(scores);
    free(pos);
}

// ---- the VOC07 layout

// A string -> index map (open addressing, FNV-1a) for image names.
typedef struct NameMap { long *slot; long cap; } NameMap;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

// Index of name among names[0..n) (the map indexes them), or -1.
static long namemap_find(const NameMap *m, char *const *names, const char *name, long *slot) {
    long k = (long)(fnv1a(name) & (uint64_t)(m->cap - 1));
    while (m->slot[k] >= 0 && strcmp(names[m->slot[k]], name)) k = (k + 1) & (m->cap - 1);
    *slot = k;
    return m->slot[k];
}

static void namemap_rebuild(NameMap *m, char *const *names, long n) {
    free(m->slot);
    m->cap = 64;
    while (m->cap < 2 * n + 2) m->cap *= 2;
    m->slot = xmalloc((size_t)m->cap * sizeof *m->slot);
    for (long k = 0; k < m->cap; k++) m->slot[k] = -1;
    for (long i = 0, k; i < n; i++) {
        namemap_find(m, names, names[i], &k);
        m->slot[k] = i;
    }
}

void voc07_free(VocSplit *v) {
    free_strings(v->classes, v->nclasses);
    free_strings(v->images, v->n);
    free(v->labels);
    memset(v, 0, sizeof *v);
}

// Read one CLASS_split.txt into column c of the labels, adding new images as they come.
static int voc07_read_class(VocSplit *v, StrList *names, NameMap *map, long *cap, const char *path,
                            int c, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    char line[512];
    int rc = 0;
    for (long ln = 1; fgets(line, sizeof line, f); ln++) {
        char name[256], extra[2];
        int label;
        int got = sscanf(line, "%255s %d %1s", name, &label, extra);
        if (got <= 0) continue;                    // blank line
        size_t len = strlen(line);
        if (got != 2 || (label != 1 && label != -1 && label != 0) ||
            (len == sizeof line - 1 && line[len - 1] != '\n')) {   // or a line too long
            snprintf(err, errlen, "%s:%ld: expected 'IMAGE LABEL' with LABEL 1, -1 or 0", path, ln);
            rc = -1;
            break;
        }
        long slot, i = namemap_find(map, names->s, name, &slot);
        if (i < 0) {                               // a new image: absent from other classes
            i = names->n;
            strlist_push(names, xstrdup(name));
            if (names->n > *cap) {
                *cap = 2 * names->n;
                v->labels = realloc(v->labels, (size_t)*cap * v->nclasses);
                if (!v->labels) fatal("out of memory");
            }
            memset(v->labels + (size_t)i * v->nclasses, 0, (size_t)v->nclasses);
            if (2 * names->n + 2 > map->cap) namemap_rebuild(map, names->s, names->n);
            else map->slot[slot] = i;
        }
        v->labels[(size_t)i * v->nclasses + c] = (signed char)label;
    }
    if (!rc && ferror(f)) { snprintf(err, errlen, "%s: read error", path); rc = -1; }
    fclose(f);
    return rc;
}

int voc07_read(VocSplit *v, const char *root, const char *split, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ImageSets/Main", root);
    StrList files = {0}, classes = {0}, names = {0};
    if (list_dir(dir, 0, &files, err, errlen)) return -1;
    char suffix[64];
    snprintf(suffix, sizeof suffix, "_%s.txt", split);
    size_t sl = strlen(suffix);
    for (long i = 0; i < files.n; i++) {          // CLASS_split.txt, in file name order
        size_t l = strlen(files.s[i]);
        if (l > sl && !strcmp(files.s[i] + l - sl, suffix))
            strlist_push(&classes, strndup(files.s[i], l - sl));
    }
    strlist_free(&files);
    if (classes.n == 0) {
        snprintf(err, errlen, "%s: no CLASS%s files (expected the PASCAL VOC 2007 layout)", dir, suffix);
        return -1;
    }
    v->classes = classes.s;
    v->nclasses = (int)classes.n;
    NameMap map = {0};
    namemap_rebuild(&map, NULL, 0);
    long cap = 0;
    int rc = 0;
    for (int c = 0; c < v->nclasses && !rc; c++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s%s", dir, v->classes[c], suffix);
        rc = voc07_read_class(v, &names, &map, &cap, path, c, err, errlen);
    }
    free(map.slot);
    v->images = names.s;
    v->n = names.n;
    if (!rc && v->n == 0) {
        snprintf(err, errlen, "%s: the CLASS%s files list no images", dir, suffix);
        rc = -1;
    }
    if (rc) voc07_free(v);
    return rc;
}

// Features of a VOC split: JPEGImages/NAME.jpg through the downstream val transform,
// L2-normalised.
static float *voc07_features(Model *m, const char *root, const VocSplit *v, const TransformPipeline *tp,
                             int batch, const char *label, char *err, size_t errlen) {
    char **paths = xmalloc((size_t)v->n * sizeof *paths);
    for (long i = 0; i < v->n; i++) {
        paths[i] = xmalloc(strlen(root) + strlen(v->images[i]) + 20);
        sprintf(paths[i], "%s/JPEGImages/%s.jpg", root, v->images[i]);
    }
    float *f = xmalloc((size_t)v->n * m->cnn.out_channels * sizeof(float));
    FeatureOptions o = {tp, 0, batch, 1, label};
    if (features_extract(m, (const char *const *)paths, v->n, &o, f, err, errlen)) {
        free(f);
        f = NULL;
    }
    free_strings(paths, v->n);
    return f;
}

int eval_voc07(Model *m, const char *root, const TransferOptions *o, double *map, FILE *out,
               char *err, size_t errlen) {
    VocSplit tr, te;
    if (voc07_read(&tr, root, "trainval", err, errlen)) return -1;
    if (voc07_read(&te, root, "test", err, errlen)) { voc07_free(&tr); return -1; }
    int rc = -1;
    float *ftr = NULL, *fte = NULL;
    VocClassResult *res = NULL;
    int same = tr.nclasses == te.nclasses;
    for (int c = 0; same && c < tr.nclasses; c++) same = !strcmp(tr.classes[c], te.classes[c]);
    if (!same) {
        snprintf(err, errlen, "%s/ImageSets/Main: the classes of *_trainval.txt and *_test.txt differ", root);
        goto done;
    }
    int S, R, d = m->cnn.out_channels;
    downstream_sizes(&m->cfg, &S, &R);
    TransformPipeline tp;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    if (transform_parse(&tp, val, 3, S, R, err, errlen)) goto done;
    if (!o->quiet)
        fprintf(out, "VOC07 SVMs: %s, %d classes, trainval %ld images, test %ld; %s features (%d), "
                "resize %d, crop %d, L2-normalised\n", root, tr.nclasses, tr.n, te.n,
                o->random_weights ? "random-init" : "pretrained", d, R, S);
    fflush(out);
    if (!(ftr = voc07_features(m, root, &tr, &tp, o->batch_size, o->quiet ? NULL : "trainval features", err, errlen)) ||
        !(fte = voc07_features(m, root, &te, &tp, o->batch_size, o->quiet ? NULL : "test features", err, errlen)))
        goto done;
    res = xcalloc((size_t)tr.nclasses, sizeof *res);
    // one class's column of labels per task; classes run in parallel
    double t0 = now_seconds();
    #pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < tr.nclasses; c++) {
        signed char *ltr = xmalloc((size_t)tr.n + 1), *lte = xmalloc((size_t)te.n + 1);
        for (long i = 0; i < tr.n; i++) ltr[i] = tr.labels[(size_t)i * tr.nclasses + c];
        for (long i = 0; i < te.n; i++) lte[i] = te.labels[(size_t)i * te.nclasses + c];
        voc07_class_svm(ftr, ltr, tr.n, fte, lte, te.n, d, &res[c]);
        free(ltr);
        free(lte);
    }
    double sum = 0;
    int counted = 0;
    fprintf(out, "%-20s %6s %6s %6s %8s %7s\n", "class", "pos/tv", "pos/te", "C", "cv AP", "AP");
    for (int c = 0; c < tr.nclasses; c++) {
        VocClassResult *r = &res[c];
        if (isnan(r->ap)) {
            fprintf(out, "%-20s %6ld %6s %6s %8s %7s  (no SVM: trainval holds one label only)\n",
                    tr.classes[c], r->npos_train, "-", "-", "-", "-");
            continue;
        }
        double cv = r->cv_ap[r->cost_index];
        fprintf(out, "%-20s %6ld %6ld %6g %8.2f %7.2f%s\n", tr.classes[c], r->npos_train, r->npos_test,
                VOC07_COSTS[r->cost_index], 100 * cv, 100 * r->ap,
                r->npos_test ? "" : "  (no positive test image: AP 0, as sklearn)");
        sum += r->ap;
        counted++;
    }
    *map = counted ? 100 * sum / counted : NAN;
    fprintf(out, "mAP %.2f over %d classes (VOC07 test, difficult ignored; SVMs %.1fs)\n", *map,
            counted, now_seconds() - t0);
    rc = 0;
done:
    free(res);
    free(ftr);
    free(fte);
    voc07_free(&tr);
    voc07_free(&te);
    return rc;
}

// ---- the ImageNet folder layout and the linear probe

void image_folder_free(ImageFolder *f) {
    free_strings(f->classes, f->nclasses);
    free_strings(f->paths, f->n);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

int image_folder_read(ImageFolder *f, const char *dir, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    StrList classes = {0}, paths = {0};
    if (list_dir(dir, 1, &classes, err, errlen)) return -1;
    f->classes = classes.s;
    f->nclasses = (int)classes.n;
    long cap = 0;
    int rc = 0;
    if (classes.n == 0) {
        snprintf(err, errlen, "%s: no class folders (expected %s/CLASS/IMAGE.jpg)", dir, dir);
        rc = -1;
    }
    for (int c = 0; c < f->nclasses && !rc; c++) {
        char *cdir = xmalloc(strlen(dir) + strlen(f->classes[c]) + 2);
        sprintf(cdir, "%s/%s", dir, f->classes[c]);
        StrList rel = {0};
        rc = walk_images(cdir, "", &rel, 0, err, errlen);
        if (!rc && rel.n == 0) {
            snprintf(err, errlen, "%s: no images in this class folder", cdir);
            rc = -1;
        }
        for (long i = 0; i < rel.n && !rc; i++) {
            char *p = xmalloc(strlen(cdir) + strlen(rel.s[i]) + 2);
            sprintf(p, "%s/%s", cdir, rel.s[i]);
            strlist_push(&paths, p);
            if (paths.n > cap) {
                cap = paths.cap;
                f->labels = realloc(f->labels, (size_t)cap * sizeof *f->labels);
                if (!f->labels) fatal("out of memory");
            }
            f->labels[paths.n - 1] = c;
        }
        strlist_free(&rel);
        free(cdir);
    }
    f->paths = paths.s;
    f->n = paths.n;
    if (rc) image_folder_free(f);
    return rc;
}

void linear_probe_init(LinearProbe *p, int C, int K, uint64_t seed) {
    p->C = C;
    p->K = K;
    p->w = xmalloc((size_t)K * C * sizeof(float));
    p->b = xcalloc((size_t)K, sizeof(float));                       // bias 0
    p->mw = xcalloc((size_t)K * C, sizeof(float));                  // momentum buffers
    p->mb = xcalloc((size_t)K, sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (long i = 0; i < (long)K * C; i++) p->w[i] = (float)(0.01 * rng_normal(&r));   // N(0, 0.01)
}

void linear_probe_free(LinearProbe *p) {
    free(p->w);
    free(p->b);
    free(p->mw);
    free(p->mb);
    memset(p, 0, sizeof *p);
}

void linear_probe_forward(const LinearProbe *p, const float *x, int B, float *logits) {
    for (int i = 0; i < B; i++) memcpy(logits + (size_t)i * p->K, p->b, (size_t)p->K * sizeof(float));
    sgemm(0, 1, B, p->K, p->C, 1.0f, x, p->C, p->w, p->C, 1.0f, logits, p->K);   // x W^T + b
}

float linear_probe_step(LinearProbe *p, const float *x, const int *y, int B, float lr, float momentum) {
    int K = p->K, C = p->C;
    float *dl = xmalloc((size_t)B * K * sizeof(float)), *gw = xmalloc((size_t)K * C * sizeof(float));
    linear_probe_forward(p, x, B, dl);
    double loss = 0;
    for (int i = 0; i < B; i++) {                  // d mean CE / d logits = (softmax - onehot) / B
        float *row = dl + (size_t)i * K, mx = row[0];
        for (int k = 1; k < K; k++) mx = fmaxf(mx, row[k]);
        double z = 0;
        for (int k = 0; k < K; k++) z += exp((double)row[k] - mx);
        loss += log(z) + mx - row[y[i]];
        for (int k = 0; k < K; k++) row[k] = (float)(exp((double)row[k] - mx) / z / B);
        row[y[i]] -= 1.0f / B;
    }
    sgemm(1, 0, K, C, B, 1.0f, dl, K, x, C, 0.0f, gw, C);          // dW = dlogits^T x
    for (int k = 0; k < K; k++) {                  // SGD with momentum, as torch.optim.SGD
        float gb = 0;
        for (int i = 0; i < B; i++) gb += dl[(size_t)i * K + k];
        p->mb[k] = momentum * p->mb[k] + gb;
        p->b[k] -= lr * p->mb[k];
    }
    for (long j = 0; j < (long)K * C; j++) {
        p->mw[j] = momentum * p->mw[j] + gw[j];
        p->w[j] -= lr * p->mw[j];
    }
    free(dl);
    free(gw);
    return (float)(loss / B);
}

double cosine_lr(double base, long step, long total) {
    double c = cos((double)step / (double)total * (M_PI / 2));    // the original's cos^2 form
    return base * c * c;
}

void topk_correct(const float *logits, const int *y, int B, int K, long *top1, long *top5) {
    for (int i = 0; i < B; i++) {
        const float *row = logits + (size_t)i * K;
        int above = 0;                             // classes scored above the true one
        for (int k = 0; k < K; k++) above += row[k] > row[y[i]] || (row[k] == row[y[i]] && k < y[i]);
        *top1 += above < 1;
        *top5 += above < 5;
    }
}

// Features of rows [0, n) of `paths` picked by idx (NULL: in order).
static int gather_features(Model *m, char *const *paths, const long *idx, long n, const TransformPipeline *tp,
                           uint64_t seed, int batch, const char *label, float *out, char *err, size_t errlen) {
    const char **sel = xmalloc((size_t)(n + 1) * sizeof *sel);
    for (long i = 0; i < n; i++) sel[i] = paths[idx ? idx[i] : i];
    FeatureOptions o = {tp, seed, batch, 0, label};
    int rc = features_extract(m, sel, n, &o, out, err, errlen);
    free(sel);
    return rc;
}

int eval_linear(Model *m, const char *root, const TransferOptions *o, double acc[2], FILE *out,
                char *err, size_t errlen) {
    ImageFolder tr, va;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/train", root);
    if (image_folder_read(&tr, dir, err, errlen)) return -1;
    snprintf(dir, sizeof dir, "%s/val", root);
    if (image_folder_read(&va, dir, err, errlen)) { image_folder_free(&tr); return -1; }
    int rc = -1, C = m->cnn.out_channels, K = tr.nclasses, B = o->probe_batch;
    float *ftrain = NULL, *fval = NULL, *fb = NULL, *logits = NULL;
    long *perm = NULL;
    int *yb = NULL;
    LinearProbe p = {0};
    int same = tr.nclasses == va.nclasses;
    for (int c = 0; same && c < K; c++) same = !strcmp(tr.classes[c], va.classes[c]);
    if (!same) {
        snprintf(err, errlen, "%s: the class folders of train/ and val/ differ", root);
        goto done;
    }
    if (B < 1 || o->epochs < 1) {
        snprintf(err, errlen, "linear probe: batch size %d and epochs %d must be at least 1", B, o->epochs);
        goto done;
    }
    int S, R;
    downstream_sizes(&m->cfg, &S, &R);
    TransformPipeline tpv, tpt;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    const char train[3][64] = {"random_resized_crop::{'scale': (0.08, 1.0)}", "horizontal_flip", "normalize"};
    if (transform_parse(&tpv, val, 3, S, R, err, errlen) || transform_parse(&tpt, train, 3, S, R, err, errlen))
        goto done;
    long ipe = (tr.n + B - 1) / B, T = ipe * o->epochs;
    if (!o->quiet)
        fprintf(out, "linear probe: %s, %d classes, train %ld images, val %ld; %s features (%d); "
                "%d epochs x %ld iterations, batch %d, SGD momentum 0.9, LR %g cosine, no weight decay; %s\n",
                root, K, tr.n, va.n, o->random_weights ? "random-init" : "pretrained", C, o->epochs, ipe, B,
                o->lr, o->precomputed ? "PRECOMPUTED center-crop train features (fast path, no augmentation)"
                                      : "train: random resized crop 8-100% + flip");
    fflush(out);                                   // before the progress lines on stderr
    fval = xmalloc((size_t)va.n * C * sizeof(float));
    if (gather_features(m, va.paths, NULL, va.n, &tpv, 0, o->batch_size, o->quiet ? NULL : "val features", fval,
                        err, errlen))
        goto done;
    if (o->precomputed) {
        ftrain = xmalloc((size_t)tr.n * C * sizeof(float));
        if (gather_features(m, tr.paths, NULL, tr.n, &tpv, 0, o->batch_size, o->quiet ? NULL : "train features",
                            ftrain, err, errlen))
            goto done;
    }
    linear_probe_init(&p, C, K, o->seed);
    perm = xmalloc((size_t)tr.n * sizeof *perm);
    fb = xmalloc((size_t)B * C * sizeof(float));
    yb = xmalloc((size_t)B * sizeof *yb);
    long t = 0;
    double t0 = now_seconds();
    for (int e = 0; e < o->epochs; e++) {
        Rng rng;                                   // epoch e: a fresh shuffle of train
        rng_seed(&rng, sample_seed(o->seed, 0x5EED0000ull + (uint64_t)e));
        for (long i = 0; i < tr.n; i++) perm[i] = i;
        for (long i = tr.n - 1; i > 0; i--) {
            long j = (long)(rng_next(&rng) % (uint64_t)(i + 1)), s = perm[i];
            perm[i] = perm[j];
            perm[j] = s;
        }
        double loss = 0;
        for (long it = 0; it < ipe; it++, t++) {
            long i0 = it * B;
            int nb = tr.n - i0 < B ? (int)(tr.n - i0) : B;   // the last batch may be short
            for (int b = 0; b < nb; b++) {
                yb[b] = tr.labels[perm[i0 + b]];
                if (o->precomputed) memcpy(fb + (size_t)b * C, ftrain + (size_t)perm[i0 + b] * C, C * sizeof(float));
            }
            if (!o->precomputed &&
                gather_features(m, tr.paths, perm + i0, nb, &tpt, sample_seed(o->seed, (uint64_t)t), o->batch_size,
                                NULL, fb, err, errlen))
                goto done;
            loss += linear_probe_step(&p, fb, yb, nb, (float)cosine_lr(o->lr, t, T), 0.9f);
        }
        if (!o->quiet) {
            double el = now_seconds() - t0;
            fprintf(stderr, "epoch %d/%d: loss %.4f, last lr %.4g, %.1f images/s, ETA %.0fs\n", e + 1, o->epochs,
                    loss / ipe, cosine_lr(o->lr, t - 1, T), (double)(e + 1) * tr.n / el, el / (e + 1) * (o->epochs - e - 1));
        }
    }
    logits = xmalloc((size_t)va.n * K * sizeof(float));
    linear_probe_forward(&p, fval, (int)va.n, logits);
    long top1 = 0, top5 = 0;
    topk_correct(logits, va.labels, (int)va.n, K, &top1, &top5);
    acc[0] = 100.0 * top1 / va.n;
    acc[1] = 100.0 * top5 / va.n;
    fprintf(out, "top-1 %.2f  top-5 %.2f  (val, %ld images, center crop%s)\n", acc[0], acc[1], va.n,
            o->precomputed ? "; trained on precomputed features: fast path" : "");
    rc = 0;
done:
    linear_probe_free(&p);
    free(ftrain);
    free(fval);
    free(fb);
    free(yb);
    free(perm);
    free(logits);
    image_folder_free(&tr);
    image_folder_free(&va);
    return rc;
}


// ---- end 10b
