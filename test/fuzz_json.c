// test/fuzz_json.c — libFuzzer entry for the JSON reader (data.c). Every input must
// either parse (and then the whole tree is walked and checked) or fail with a located
// "ORIGIN:LINE:COL: ..." message; neither may crash, leak or read out of bounds.
//   make fuzz   (seeds: test/corpus/fuzz_json/)
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../model.h"

// Walk v: every string must be NUL-terminated at its length, every container's items
// readable, every member named.
static size_t walk(const JsonValue *v) {
    size_t n = 1;
    switch (json_type(v)) {
    case JSON_STRING:
        if (json_string(v)[json_string_len(v)] != 0) abort();
        break;
    case JSON_OBJECT:
        for (int i = 0; i < json_len(v); i++) {
            if (!json_key(json_at(v, i))) abort();
            n += walk(json_at(v, i));
        }
        break;
    case JSON_ARRAY:
        for (int i = 0; i < json_len(v); i++) n += walk(json_at(v, i));
        break;
    case JSON_NUMBER: {
        int64_t i;
        if (json_int64(v, &i) && (double)i != json_number(v)) abort();
        break;
    }
    default:
        break;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Json *doc = NULL;
    char err[256];
    if (json_parse(&doc, (const char *)data, size, "fuzz.json", err, sizeof err) == 0) {
        walk(json_root(doc));
        json_free(doc);
    } else if (strncmp(err, "fuzz.json:", 10) != 0) {
        abort();
    }
    return 0;
}
