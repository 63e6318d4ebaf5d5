# virtex.c — `make` builds ./virtex, `make test` runs the tests, `make bench` measures.
CC      ?= gcc
CFLAGS  ?= -O3 -march=native
override CFLAGS += -std=c11 -D_GNU_SOURCE -fopenmp -Wall -Wextra -g
LDLIBS  += -lstb -lm -lpthread
SRC      = tape.c gemm.c ops.c config.c model.c checkpoint.c data.c train.c eval.c pytorch.c
HDR      = model.h
TESTSRC  = test/main.c $(wildcard test/test_*.c)

# CUDA: compile kernels.cu when nvcc is found (print what was detected).
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(NO_CUDA),1)
  NVCC :=
endif
ifneq ($(NVCC),)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_OBJ  = build/kernels.o
  LDLIBS   += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
  $(info [virtex] nvcc found: $(NVCC) — building the CUDA backend for sm_90)
else
  CUDA_OBJ  = build/nocuda.o
  $(info [virtex] nvcc not found — building the CPU backend only)
endif

all: virtex

virtex: virtex.c $(SRC) $(HDR) $(CUDA_OBJ)
	$(CC) $(CFLAGS) -o $@ virtex.c $(SRC) $(CUDA_OBJ) $(LDLIBS)

build/kernels.o: kernels.cu $(HDR)
	@mkdir -p build
	$(NVCC) -O3 -std=c++20 -arch=sm_90 -Xcompiler -Wall -c kernels.cu -o $@

build/nocuda.c:
	@mkdir -p build
	printf '#include "../model.h"\nconst Backend *const cuda_backend = 0;\n' > $@

build/nocuda.o: build/nocuda.c $(HDR)
	$(CC) $(CFLAGS) -c build/nocuda.c -o $@

test/run_tests: $(TESTSRC) test/test.h $(SRC) $(HDR) $(CUDA_OBJ)
	$(CC) $(CFLAGS) -o $@ $(TESTSRC) $(SRC) $(CUDA_OBJ) $(LDLIBS)

test: virtex test/run_tests
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./test/run_tests

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (CPU backend).
SANFLAGS = -O1 -g -march=native -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
test-san:
	$(MAKE) --no-print-directory clean-san
	$(MAKE) --no-print-directory NO_CUDA=1 CFLAGS="$(SANFLAGS)" test/run_tests virtex
	ASAN_OPTIONS=detect_leaks=1 OMP_NUM_THREADS=2 ./test/run_tests
	$(MAKE) --no-print-directory clean-san

clean-san:
	rm -f test/run_tests virtex build/nocuda.o

test/bench: test/bench.c $(SRC) $(HDR) $(CUDA_OBJ)
	$(CC) $(CFLAGS) -o $@ test/bench.c $(SRC) $(CUDA_OBJ) $(LDLIBS)

bench: test/bench virtex
	./test/bench

# libFuzzer (clang): every test/fuzz_*.c against the sources (CPU backend), ASan+UBSan,
# each run for FUZZ_SECONDS from its seeds in test/corpus/<target>/; what it learns goes
# to build/corpus/<target>/, a crashing input to build/<target>-crash-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 20
FUZZFLAGS     = -g -O1 -std=c11 -D_GNU_SOURCE -march=native -fopenmp -Wno-pass-failed
FUZZ_TARGETS  = $(patsubst test/%.c,build/%,$(wildcard test/fuzz_*.c))
FUZZ_OBJS     = $(patsubst %.c,build/fuzz-obj/%.o,$(SRC)) build/fuzz-obj/nocuda.o

build/fuzz-obj/%.o: %.c $(HDR)
	@mkdir -p build/fuzz-obj
	$(FUZZ_CC) $(FUZZFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build/fuzz-obj/nocuda.o: build/nocuda.c $(HDR)
	@mkdir -p build/fuzz-obj
	$(FUZZ_CC) $(FUZZFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build/fuzz_%: test/fuzz_%.c $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJS) -lstb -lm -lpthread

.SECONDARY: $(FUZZ_OBJS)
fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do n=$${t#build/}; mkdir -p build/corpus/$$n; \
	  echo "== $$n: $(FUZZ_SECONDS)s from test/corpus/$$n"; \
	  OMP_NUM_THREADS=1 $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=build/$$n- build/corpus/$$n test/corpus/$$n >build/$$n.log 2>&1 \
	    || { tail -n 60 build/$$n.log; echo "$$n FAILED (log: build/$$n.log)"; exit 1; }; \
	  grep -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' build/$$n.log; \
	done

clean:
	rm -rf virtex test/run_tests test/bench build

.PHONY: all test test-san clean clean-san bench fuzz
