// test/fuzz_yaml.c — libFuzzer target for the YAML config reader (config.c): merge the
// input over the defaults with config_load_string. It must either load or fail with one
// line "ORIGIN:..." naming where; a config that loads must survive config_dump and load
// back to the same dump (what checkpoints rely on). Nothing may crash, leak or read out
// of bounds.   make fuzz   (seeds: test/corpus/fuzz_yaml/)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dump(const Config *c) {
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (!f) abort();
    config_dump(c, f);
    fclose(f);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *yaml = malloc(size + 1), err[512];
    memcpy(yaml, data, size);
    yaml[size] = 0;
    Config c;
    config_defaults(&c);
    if (config_load_string(&c, yaml, "fuzz.yaml", err, sizeof err) != 0) {
        if (strncmp(err, "fuzz.yaml", 9) != 0 || strchr(err, '\n')) abort();
        free(yaml);
        return 0;
    }
    char *a = dump(&c);
    Config back;
    config_defaults(&back);
    if (config_load_string(&back, a, "dump", err, sizeof err) != 0) {
        fprintf(stderr, "the dump of a loaded config does not load: %s\n%s\n", err, a);
        abort();
    }
    char *b = dump(&back);
    if (strcmp(a, b) != 0) {
        fprintf(stderr, "the dump changes when loaded again:\n%s\n----\n%s\n", a, b);
        abort();
    }
    free(a);
    free(b);
    free(yaml);
    return 0;
}
