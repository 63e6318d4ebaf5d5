// test/test_json.c — the JSON reader and COCO Captions (data.c): escapes, unicode,
// nesting to the limit and past it, numbers, accessors, malformed inputs (each error
// located by line:col with a phrase), every truncation of a document, random byte
// mutations, a ~20 MB document (time printed), caption normalisation, and the COCO
// reader on a small captions file written to a temporary directory (grouping, order,
// normalisation, dropped images, and errors that name the file and the field).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "test.h"

static char errbuf[512];

// Parse text (len bytes); NULL on error (message in errbuf).
static Json *parse_n(const char *text, size_t len) {
    Json *doc = NULL;
    errbuf[0] = 0;
    if (json_parse(&doc, text, len, "t.json", errbuf, sizeof errbuf)) return NULL;
    return doc;
}

static Json *parse(const char *text) { return parse_n(text, strlen(text)); }

// The text must fail with "t.json:<where>: ..." containing phrase.
static void expect_error(const char *what, const char *text, size_t len, const char *where,
                         const char *phrase) {
    Json *doc = parse_n(text, len);
    char want[64];
    snprintf(want, sizeof want, "t.json:%s: ", where);
    int ok = !doc && strncmp(errbuf, want, strlen(want)) == 0 && strstr(errbuf, phrase);
    check(ok, "error %-28s -> %s", what, doc ? "(parsed!)" : errbuf);
    if (!ok) printf("       want \"%s... %s\"\n", want, phrase);
    json_free(doc);
}
#define EXPECT_ERROR(what, lit, where, phrase) \
    expect_error(what, lit, sizeof(lit) - 1, where, phrase)

static void test_escapes_unicode(void) {
    Json *doc = parse("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\","
                      " \"a\\u0000b\", \"\", \"Ünïcödé 日本 😀\"]");
    check(doc != NULL, "escapes parse (%s)", errbuf);
    const JsonValue *r = json_root(doc);
    check(json_type(r) == JSON_ARRAY && json_len(r) == 5, "root is an array of 5");
    const char *s0 = json_string(json_at(r, 0));
    check(s0 && strcmp(s0, "\"\\/\b\f\n\r\t") == 0 && json_string_len(json_at(r, 0)) == 8,
          "\\\" \\\\ \\/ \\b \\f \\n \\r \\t decode");
    const char *s1 = json_string(json_at(r, 1));
    check(s1 && strcmp(s1, "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") == 0,
          "\\u0041 \\u00e9 \\u20AC and the pair \\ud83d\\ude00 -> 1/2/3/4-byte UTF-8");
    check(json_string_len(json_at(r, 2)) == 3 && memcmp(json_string(json_at(r, 2)), "a\0b", 4) == 0,
          "\\u0000 kept inside the string (length 3)");
    check(json_string(json_at(r, 3)) && json_string(json_at(r, 3))[0] == 0 &&
          json_string_len(json_at(r, 3)) == 0, "empty string");
    check(json_string(json_at(r, 4)) && strcmp(json_string(json_at(r, 4)), "Ünïcödé 日本 😀") == 0,
          "raw UTF-8 passes through unchanged");
    json_free(doc);

    doc = parse("\xEF\xBB\xBF{\"k\": \"v\"}");
    check(doc && strcmp(json_string(json_get(json_root(doc), "k")), "v") == 0,
          "a leading byte order mark is skipped");
    json_free(doc);
}

static void test_nesting(void) {
    int n = JSON_MAX_DEPTH + 1;
    char *text = malloc(2 * (size_t)n + 64);
    // exactly the limit: arrays
    memset(text, '[', JSON_MAX_DEPTH);
    memset(text + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    Json *doc = parse_n(text, 2 * (size_t)JSON_MAX_DEPTH);
    int depth = 0;
    for (const JsonValue *v = doc ? json_root(doc) : NULL; v; v = json_at(v, 0)) depth++;
    check(doc && depth == JSON_MAX_DEPTH, "%d nested arrays parse (depth %d)", JSON_MAX_DEPTH, depth);
    json_free(doc);
    // one past it
    memset(text, '[', n);
    memset(text + n, ']', n);
    char where[32];
    snprintf(where, sizeof where, "1:%d", n);
    expect_error("513 nested arrays", text, 2 * (size_t)n, where, "nesting deeper than 512");
    // objects to the limit: {"a":{"a":...{}}}
    size_t len = 0;
    char *obj = malloc(8 * (size_t)n);
    for (int i = 0; i < JSON_MAX_DEPTH - 1; i++) len += (size_t)sprintf(obj + len, "{\"a\":");
    len += (size_t)sprintf(obj + len, "{}");
    for (int i = 0; i < JSON_MAX_DEPTH - 1; i++) obj[len++] = '}';
    doc = parse_n(obj, len);
    depth = 0;
    for (const JsonValue *v = doc ? json_root(doc) : NULL; v; v = json_get(v, "a")) depth++;
    check(doc && depth == JSON_MAX_DEPTH, "%d nested objects parse (depth %d)", JSON_MAX_DEPTH, depth);
    json_free(doc);
    free(obj);
    // far past it: no stack overflow
    char *deep = malloc(1000000);
    memset(deep, '[', 1000000);
    doc = parse_n(deep, 1000000);
    check(!doc && strstr(errbuf, "nesting deeper"), "10^6 '[' -> error, no crash");
    json_free(doc);
    free(deep);
    free(text);
}

static void test_numbers(void) {
    Json *doc = parse("[0, -0, 1, -1, 1e10, 1.5E-3, 1E+2, 0.1, 123456789012345678,"
                      " 9223372036854775807, -9223372036854775808, 9223372036854775808,"
                      " -12345678901234567890123, 2.5e-400, 3.14159, 1e308]");
    check(doc != NULL, "numbers parse (%s)", errbuf);
    const JsonValue *r = json_root(doc);
    int64_t i = 99;
    check(json_number(json_at(r, 0)) == 0 && json_int64(json_at(r, 0), &i) && i == 0, "0");
    double mz = json_number(json_at(r, 1));
    i = 99;
    check(mz == 0 && signbit(mz) && json_int64(json_at(r, 1), &i) && i == 0,
          "-0: the double is -0.0, the integer 0");
    check(json_int64(json_at(r, 2), &i) && i == 1 && json_int64(json_at(r, 3), &i) && i == -1,
          "1, -1 are integers");
    check(json_number(json_at(r, 4)) == 1e10 && !json_int64(json_at(r, 4), &i),
          "1e10 = 1e10, not an integer literal");
    check(json_number(json_at(r, 5)) == 1.5e-3 && json_number(json_at(r, 6)) == 100.0 &&
          json_number(json_at(r, 7)) == 0.1, "1.5E-3, 1E+2, 0.1 exact doubles");
    check(json_int64(json_at(r, 8), &i) && i == 123456789012345678LL, "123456789012345678 exact");
    check(json_int64(json_at(r, 9), &i) && i == INT64_MAX &&
          json_number(json_at(r, 9)) == 9223372036854775807.0, "INT64_MAX exact");
    check(json_int64(json_at(r, 10), &i) && i == INT64_MIN, "INT64_MIN exact");
    check(!json_int64(json_at(r, 11), &i) && json_number(json_at(r, 11)) == 9223372036854775808.0,
          "2^63 is not an int64 (double 2^63)");
    check(!json_int64(json_at(r, 12), &i) && json_number(json_at(r, 12)) == -12345678901234567890123.0,
          "a 23-digit integer -> double");
    check(json_number(json_at(r, 13)) == 0, "2.5e-400 underflows to 0");
    check(json_number(json_at(r, 14)) == 3.14159 && json_number(json_at(r, 15)) == 1e308,
          "3.14159, 1e308");
    check(json_type(json_at(r, 0)) == JSON_NUMBER && isnan(json_number(json_at(r, 16))),
          "json_number past the end is NAN");
    json_free(doc);
}

static void test_access(void) {
    Json *doc = parse("{\"b\": 1, \"a\": [true, false, null], \"b\": \"two\", \"a\\u0000\": 3}");
    const JsonValue *r = json_root(doc);
    check(doc && json_len(r) == 4, "object with 4 members");
    check(json_key(json_at(r, 0)) && strcmp(json_key(json_at(r, 0)), "b") == 0 &&
          strcmp(json_key(json_at(r, 1)), "a") == 0 && strcmp(json_key(json_at(r, 2)), "b") == 0,
          "members keep their order");
    check(json_string(json_get(r, "b")) && strcmp(json_string(json_get(r, "b")), "two") == 0,
          "json_get: the last of repeated names wins");
    const JsonValue *a = json_get(r, "a");
    check(json_type(a) == JSON_ARRAY && json_len(a) == 3, "\"a\" is the array, not \"a\\u0000\"");
    check(json_type(json_at(a, 0)) == JSON_BOOL && json_bool(json_at(a, 0)) &&
          !json_bool(json_at(a, 1)) && json_type(json_at(a, 2)) == JSON_NULL, "true false null");
    check(json_get(r, "missing") == NULL && json_at(a, 3) == NULL && json_at(a, -1) == NULL &&
          json_get(a, "x") == NULL && json_type(NULL) == JSON_NONE && json_string(NULL) == NULL &&
          json_len(NULL) == 0 && json_string(json_get(json_at(NULL, 0), "x")) == NULL,
          "missing lookups give NULL and chain");
    check(strcmp(json_type_name(JSON_OBJECT), "an object") == 0 &&
          strcmp(json_type_name(JSON_NONE), "nothing") == 0, "type names");
    json_free(doc);
    doc = parse(" 42 ");
    check(doc && json_type(json_root(doc)) == JSON_NUMBER && json_number(json_root(doc)) == 42,
          "a scalar root");
    json_free(doc);
}

static void test_malformed(void) {
    EXPECT_ERROR("empty input", "", "1:1", "empty input");
    EXPECT_ERROR("whitespace only", "  \n ", "2:2", "expected a value, found end of input");
    EXPECT_ERROR("truncated object", "{\"a\": 1", "1:8", "expected ',' or '}' after object member");
    EXPECT_ERROR("truncated object (key)", "{\"a\"", "1:5", "expected ':' after member name");
    EXPECT_ERROR("truncated array", "[1, 2", "1:6", "expected ',' or ']' after array element");
    EXPECT_ERROR("truncated array (value)", "[1,", "1:4", "expected a value, found end of input");
    EXPECT_ERROR("truncated string", "[\"abc", "1:2", "unterminated string");
    EXPECT_ERROR("truncated escape", "[\"abc\\", "1:2", "unterminated string");
    EXPECT_ERROR("trailing comma in object", "{\"a\": 1,}", "1:8", "trailing comma in object");
    EXPECT_ERROR("trailing comma in array", "[1, 2 , ]", "1:7", "trailing comma in array");
    EXPECT_ERROR("bad escape", "[\"ab\\x\"]", "1:5", "invalid escape '\\x'");
    EXPECT_ERROR("short \\u escape", "[\"\\u12\"]", "1:3", "expected 4 hex digits");
    EXPECT_ERROR("invalid UTF-8 0xff", "[\"a\xff\"]", "1:4", "invalid UTF-8 byte 0xff");
    EXPECT_ERROR("bad continuation", "[\"\xc3\x28\"]", "1:4", "invalid UTF-8 byte 0x28");
    EXPECT_ERROR("overlong UTF-8", "[\"\xc0\xaf\"]", "1:3", "invalid UTF-8 byte 0xc0");
    EXPECT_ERROR("UTF-8 surrogate", "[\"\xed\xa0\x80\"]", "1:3", "invalid UTF-8 byte 0xed");
    EXPECT_ERROR("UTF-8 outside a string", "[\xff]", "1:2", "invalid UTF-8 byte 0xff");
    EXPECT_ERROR("control char in string", "[\"a\nb\"]", "1:4", "unescaped control character 0x0a");
    EXPECT_ERROR("tab in string", "[\"a\tb\"]", "1:4", "unescaped control character 0x09");
    EXPECT_ERROR("leading zero", "[01]", "1:2", "leading zero");
    EXPECT_ERROR("leading zero (negative)", "[-012]", "1:2", "leading zero");
    EXPECT_ERROR("lone high surrogate", "[\"\\ud800\"]", "1:3", "lone surrogate \\uD800");
    EXPECT_ERROR("high + non-low", "[\"\\ud800\\u0041\"]", "1:3", "lone surrogate");
    EXPECT_ERROR("lone low surrogate", "[\"x\\udc00\"]", "1:4", "lone surrogate \\uDC00");
    EXPECT_ERROR("garbage after the root", "[1] x", "1:5", "unexpected 'x' after the JSON value");
    EXPECT_ERROR("second root", "{} {}", "1:4", "after the JSON value");
    EXPECT_ERROR("plus sign", "[+1]", "1:2", "expected a value, found '+'");
    EXPECT_ERROR(".5", "[.5]", "1:2", "expected a value, found '.'");
    EXPECT_ERROR("NaN", "[NaN]", "1:2", "expected a value, found 'NaN'");
    EXPECT_ERROR("Infinity", "[-Infinity]", "1:3", "expected a digit after '-'");
    EXPECT_ERROR("1.", "[1.]", "1:4", "expected a digit after the decimal point");
    EXPECT_ERROR("1e", "[1e]", "1:4", "expected a digit in the exponent");
    EXPECT_ERROR("1e400", "[1e400]", "1:2", "out of range");
    EXPECT_ERROR("hex number", "[0x10]", "1:3", "expected ',' or ']' after array element, found 'x10'");
    EXPECT_ERROR("tru", "[tru]", "1:2", "found 'tru'");
    EXPECT_ERROR("True", "True", "1:1", "found 'True'");
    EXPECT_ERROR("missing comma", "[1 2]", "1:4", "expected ',' or ']'");
    EXPECT_ERROR("number key", "{1: 2}", "1:2", "expected a member name (a string) or '}'");
    EXPECT_ERROR("key after comma", "{\"a\":1, 2}", "1:9", "member name (a string) after ','");
    EXPECT_ERROR("single quotes", "['a']", "1:2", "found '''");
    EXPECT_ERROR("comment", "[1] // c", "1:5", "after the JSON value");
    EXPECT_ERROR("NUL byte", "[1,\0]", "1:4", "found byte 0x00");
    EXPECT_ERROR("mismatched close", "[1}", "1:3", "expected ',' or ']'");
    EXPECT_ERROR("line and column", "{\n  \"a\": 1,\n  \"b\" 2\n}", "3:7", "expected ':'");
    EXPECT_ERROR("columns count characters", "[\"é日\", x]", "1:8", "found 'x'");
}

// Every strict prefix of a document is an error; random byte edits never crash.
static void test_truncations_mutations(void) {
    const char *text = "{\"images\": [{\"id\": 1, \"file_name\": \"a\\u00e9.jpg\"}],\n"
                       " \"annotations\": [{\"image_id\": -1.5e3, \"caption\": \"x\\ud83d\\ude00\"},"
                       " true, false, null, [], {}, \"Ü\"]}";
    size_t n = strlen(text);
    int all = 1;
    for (size_t k = 0; k < n; k++) {
        Json *doc = parse_n(text, k);
        if (doc || !strstr(errbuf, "t.json:")) {
            all = 0;
            printf("       prefix %zu: %s\n", k, doc ? "parsed" : errbuf);
        }
        json_free(doc);
    }
    Json *doc = parse_n(text, n);
    check(all && doc, "all %zu strict prefixes fail with a located error; the whole parses", n);
    json_free(doc);
    Rng rng;
    rng_seed(&rng, 7);
    char *buf = malloc(n);
    int parsed = 0, failed = 0;
    static const char alphabet[] = "{}[]\",:\\u0e-+.tfn \n\x80\xff\xc3";
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, text, n);
        int edits = 1 + (int)(rng_next(&rng) % 4);
        for (int e = 0; e < edits; e++)
            buf[rng_next(&rng) % n] = alphabet[rng_next(&rng) % (sizeof alphabet - 1)];
        size_t len = n - rng_next(&rng) % 3;
        doc = parse_n(buf, len);
        if (doc) parsed++;
        else if (strncmp(errbuf, "t.json:", 7) == 0) failed++;
        json_free(doc);
    }
    check(parsed + failed == 3000, "3000 random mutations: %d parse, %d fail with a located error",
          parsed, failed);
    free(buf);
}

static void test_large(void) {
    int n = 200000;
    size_t cap = (size_t)n * 128 + 64, len = 0;
    char *text = malloc(cap);
    if (!text) { check(0, "out of memory"); return; }
    len += (size_t)snprintf(text, cap, "{\"annotations\": [\n");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "{\"image_id\": %d, \"id\": %d, \"caption\": "
                               "\"A man riding a wave on top of a surfboard \\u00fc %d.\"}%s\n",
                               i % 1000, i, i, i + 1 < n ? "," : "");
    len += (size_t)snprintf(text + len, cap - len, "]}");
    double t0 = now_seconds();
    Json *doc = parse_n(text, len);
    double t = now_seconds() - t0;
    const JsonValue *a = json_get(json_root(doc), "annotations");
    int64_t id = -1, img = -1;
    const JsonValue *last = json_at(a, n - 1);
    json_int64(json_get(last, "id"), &id);
    json_int64(json_get(last, "image_id"), &img);
    char want[80];
    snprintf(want, sizeof want, "A man riding a wave on top of a surfboard \xc3\xbc %d.", n - 1);
    check(doc && json_len(a) == n && id == n - 1 && img == (n - 1) % 1000 &&
          strcmp(json_string(json_get(last, "caption")), want) == 0,
          "%d objects, %.1f MB: parsed in %.3f s (%.0f MB/s)", n, len / 1e6, t, len / 1e6 / t);
    json_free(doc);
    free(text);
}

static void test_normalize(void) {
    static const char *cases[][2] = {
        {"Café Über Ångström Œuvre", "cafe uber angstrom œuvre"},
        {"  \xef\xac\x81ne  \t", "fine"},                   // U+FB01 ligature
        {"Straße", "straße"},                                // NFKD keeps ß
        {"İstanbul", "istanbul"},                            // lower() gives i + U+0307
        {"e\xcc\x81te", "ete"},                              // decomposed input
        {"ＡＢＣ ｘ！", "abc x!"},                            // fullwidth
        {"½ cup", "1\xe2\x81\x84" "2 cup"},                  // fraction slash U+2044
        {"Naïve RÉSUMÉ", "naive resume"},
        {"Ĳssel", "ijssel"},
        {"ŁÓDŹ Ærø", "łodz ærø"},
        {"\xc2\xa0" "A\xe2\x80\x83" "B\xe2\x80\xa6 ", "a b..."}, // NBSP, em space, ellipsis
        {"Đà Nẵng", "đa nang"},
        {"Ǆ", "dz"},
        {"A DOG ON THE LEFT.", "a dog on the left."},
        {"   ", ""},
        {"日本 \xff ok", "日本 \xff ok"},                     // others and bad bytes pass
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = caption_normalize(cases[i][0]);
        check(got && strcmp(got, cases[i][1]) == 0, "normalize \"%s\" -> \"%s\"", cases[i][0],
              got ? got : "(null)");
        free(got);
    }
}

// ----------------------------------------------------------------------------
// COCO

static char tmpdir[256];

static void write_file(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "wb");
    if (!f) { check(0, "cannot write %s", path); return; }
    fputs(text, f);
    fclose(f);
}

static void expect_coco_error(const char *what, const char *json, const char *phrase) {
    if (json) write_file("annotations/captions_val2017.json", json);
    else {
        char path[512];
        snprintf(path, sizeof path, "%s/annotations/captions_val2017.json", tmpdir);
        remove(path);
    }
    CocoCaptions cc;
    char err[512] = "";
    int rc = coco_captions_load(&cc, tmpdir, "val", err, sizeof err);
    int ok = rc != 0 && strstr(err, "annotations/captions_val2017.json:") && strstr(err, phrase) &&
             cc.images == NULL;
    check(ok, "coco error %-22s -> %s", what, rc ? err : "(loaded!)");
    if (!ok) printf("       want \"...captions_val2017.json: ... %s\"\n", phrase);
    if (!rc) coco_captions_free(&cc);
}

static void test_coco(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/virtex_json_XXXXXX");
    if (!mkdtemp(tmpdir)) { check(0, "mkdtemp"); return; }
    char sub[512];
    snprintf(sub, sizeof sub, "%s/annotations", tmpdir);
    mkdir(sub, 0755);
    write_file("annotations/captions_val2017.json",
               "{\"info\": {\"year\": 2017}, \"licenses\": [],\n"
               " \"images\": [{\"id\": 10, \"file_name\": \"000000000010.jpg\", \"height\": 480},\n"
               "             {\"id\": 20, \"file_name\": \"000000000020.jpg\"},\n"
               "             {\"id\": 30, \"file_name\": \"000000000030.jpg\"},\n"
               "             {\"id\": 5, \"file_name\": \"000000000005.jpg\"}],\n"
               " \"annotations\": [\n"
               "  {\"image_id\": 20, \"id\": 1, \"caption\": \"A Dog on the LEFT of a cat.\"},\n"
               "  {\"image_id\": 10, \"id\": 2, \"caption\": \"  A café in Zürich. \\n\"},\n"
               "  {\"image_id\": 5, \"id\": 3, \"caption\": \"\\u00c9L\\u00c8VE \\ufb01lling\"},\n"
               "  {\"image_id\": 20, \"id\": 4, \"caption\": \"Two   dogs\"},\n"
               "  {\"image_id\": 10, \"id\": 5, \"caption\": \"Œuvre Ångström\"}]}\n");
    CocoCaptions cc;
    char err[512] = "";
    int rc = coco_captions_load(&cc, tmpdir, "val", err, sizeof err);
    check(rc == 0, "coco_captions_load (%s)", err);
    if (rc == 0) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/val2017", tmpdir);
        check(cc.n == 3 && cc.dropped == 1 && cc.ncaptions == 5,
              "3 images kept, 1 without captions dropped, 5 captions (n %d dropped %d captions %ld)",
              cc.n, cc.dropped, cc.ncaptions);
        check(strcmp(cc.image_dir, dir) == 0, "image_dir %s", cc.image_dir);
        if (cc.n == 3) {
            CocoImage *a = &cc.images[0], *b = &cc.images[1], *c = &cc.images[2];
            check(a->id == 10 && b->id == 20 && c->id == 5 &&
                  strcmp(a->file_name, "000000000010.jpg") == 0 &&
                  strcmp(c->file_name, "000000000005.jpg") == 0, "images in images[] order");
            check(a->ncaptions == 2 && strcmp(a->captions[0], "a cafe in zurich.") == 0 &&
                  strcmp(a->captions[1], "œuvre angstrom") == 0,
                  "image 10: [\"%s\", \"%s\"]", a->captions[0], a->captions[1]);
            check(b->ncaptions == 2 && strcmp(b->captions[0], "a dog on the left of a cat.") == 0 &&
                  strcmp(b->captions[1], "two   dogs") == 0,
                  "image 20: [\"%s\", \"%s\"]", b->captions[0], b->captions[1]);
            check(c->ncaptions == 1 && strcmp(c->captions[0], "eleve filling") == 0,
                  "image 5: [\"%s\"]", c->captions[0]);
        }
        coco_captions_free(&cc);
    }
    char path[512], **caps = NULL;
    long n = 0;
    snprintf(path, sizeof path, "%s/annotations/captions_val2017.json", tmpdir);
    rc = coco_read_captions(path, &caps, &n, err, sizeof err);
    check(rc == 0 && n == 5 && strcmp(caps[0], "a dog on the left of a cat.") == 0 &&
          strcmp(caps[2], "eleve filling") == 0 && strcmp(caps[4], "œuvre angstrom") == 0,
          "coco_read_captions: 5 normalised captions in file order (%s)", rc ? err : "ok");
    free(caps);

    expect_coco_error("syntax error", "{\"images\": [}", "1:13: expected a value, found '}'");
    expect_coco_error("not an object", "[]", "expected an object at the top level, found an array");
    expect_coco_error("missing images", "{\"annotations\": []}", "images: missing (expected an array)");
    expect_coco_error("missing annotations", "{\"images\": []}",
                      "annotations: missing (expected an array)");
    expect_coco_error("non-string caption",
                      "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\"}], \"annotations\": ["
                      "{\"image_id\": 1, \"caption\": \"ok\"}, {\"image_id\": 1, \"caption\": 7}]}",
                      "annotations[1].caption: expected a string, found a number");
    expect_coco_error("unknown image_id",
                      "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\"}], \"annotations\": ["
                      "{\"image_id\": 99, \"caption\": \"x\"}]}",
                      "annotations[0].image_id: unknown image id 99");
    expect_coco_error("float image_id",
                      "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\"}], \"annotations\": ["
                      "{\"image_id\": 1.5, \"caption\": \"x\"}]}",
                      "annotations[0].image_id: expected an integer, found a non-integer number");
    expect_coco_error("missing file_name", "{\"images\": [{\"id\": 1}], \"annotations\": []}",
                      "images[0].file_name: missing (expected a string)");
    expect_coco_error("duplicate image id",
                      "{\"images\": [{\"id\": 1, \"file_name\": \"a\"}, {\"id\": 1, \"file_name\": "
                      "\"b\"}], \"annotations\": []}", "images[1].id: duplicate image id 1");
    expect_coco_error("missing file", NULL, "cannot open");

    rc = coco_read_captions(path, &caps, &n, err, sizeof err);
    check(rc != 0 && caps == NULL && strstr(err, "captions_val2017.json: cannot open"),
          "coco_read_captions of a missing file -> %s", err);
    Json *doc = NULL;
    rc = json_parse_file(&doc, tmpdir, err, sizeof err);
    check(rc != 0 && !doc && strstr(err, "is a directory"), "json_parse_file of a directory -> %s", err);
    rmdir(sub);
    rmdir(tmpdir);
}

void test_json(void) {
    test_escapes_unicode();
    test_nesting();
    test_numbers();
    test_access();
    test_malformed();
    test_truncations_mutations();
    test_large();
    test_normalize();
    test_coco();
}
