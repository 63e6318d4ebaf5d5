// test/fuzz_model.c — libFuzzer target for the SentencePiece .model reader: load the
// input as a model; when it loads, encode and decode some text with it (including the
// input's own bytes as text, so hostile charsmaps meet hostile text).
//
//   make fuzz   (seeds: test/corpus/fuzz_model/, copies of test/fixtures/tokenizer_*.model)
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    Tokenizer *tk = tokenizer_load_memory(data, size, "fuzz.model", err, sizeof err);
    if (!tk) {
        if (!err[0]) abort();              // a rejection always says why
        return 0;
    }
    static const char *texts[] = {
        "a man riding a wave on top of a surfboard.",
        "  Two\tdogs\u3000play  ＡＢＣ ﬁsh caf\xc3\xa9 \xff\xfe \xe2\x96\x81 ",
        "",
    };
    int ids[1024];
    char out[8192];
    for (size_t i = 0; i < sizeof texts / sizeof *texts + 1; i++) {
        const char *t = i < 3 ? texts[i] : (const char *)data;
        size_t n = i < 3 ? strlen(t) : (size < 256 ? size : 256);
        int k = tokenizer_encode(tk, t, n, ids, 1024);
        if (k > 1024) k = 1024;
        if (k > 0) {
            for (int j = 0; j < k; j++)
                if (ids[j] < 0 || ids[j] >= tokenizer_size(tk)) abort();
            if (tokenizer_decode(tk, ids, k, out, sizeof out) < 0) abort();
        }
        int np;
        char **p = tokenizer_encode_pieces(tk, t, n, &np);
        free(p);
        free(tokenizer_normalize(tk, t, n, NULL));
    }
    int all[16];
    int n = tokenizer_size(tk) < 16 ? tokenizer_size(tk) : 16;
    for (int j = 0; j < n; j++) all[j] = j;
    tokenizer_decode(tk, all, n, out, sizeof out);
    tokenizer_free(tk);
    return 0;
}
