// test/fuzz_pth.c — libFuzzer entry for the torch.save reader (pytorch.c). Every input
// must either read (and then every tensor is walked: a known dtype, a shape matching
// numel, every element readable) or fail with one line "fuzz.pth: ..."; neither may
// crash, leak or read out of bounds. Seeds: test/fixtures/torch_*.pth.
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. test/fuzz_pth.c pytorch.c ...
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    TensorFile tf;
    char err[1024];
    if (pth_read_state_memory(&tf, data, size, "fuzz.pth", err, sizeof err) == 0) {
        volatile uint64_t sum = 0;
        for (int i = 0; i < tf.n; i++) {
            const NamedTensor *t = &tf.t[i];
            long numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
            if ((t->dtype != DT_F32 && t->dtype != DT_I64) || numel != t->numel || !t->name[0])
                abort();
            const unsigned char *p = t->data;
            for (long j = 0; j < numel * (t->dtype == DT_I64 ? 8 : 4); j++) sum += p[j];
        }
        tensorfile_free(&tf);
    } else if (strncmp(err, "fuzz.pth: ", 10) != 0 || strchr(err, '\n')) {
        abort();
    }
    return 0;
}
