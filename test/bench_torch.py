#!/usr/bin/python3
r"""test/bench_torch.py -- the PyTorch reference timing for `make bench`.

One training step (forward + backward, gradients zeroed each step; no optimizer
update) of the real best VirTex model in PyTorch on the CPU:
ResNet-50 (torchvision, zero_init_residual) + transdec_postnorm::L1_H2048_A32_F8192,
bicaptioning, V = 10000, positions 30, dropout 0.1, model.train();
batch 8 of 224x224 images, captions of 18..22 tokens right-padded to 30.
The model is the one test/make_fixtures.py builds (the same classes).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 test/bench_torch.py [N]
        [--threads 2] [--batch 8] [--peak-mem]

(the two OpenBLAS variables, set on the build machine, slow OpenBLAS down).
Prints one machine-readable line `torch_step_ms <median ms over N steps>` (N default 3,
after 1 warm-up step), a human-readable line, the BLAS library torch ran on, and with
--peak-mem `torch_peak_rss_mb <MiB>` (resource.getrusage ru_maxrss of this process).

BLAS matters: Debian's torch runs convolutions on oneDNN but Linear layers on
libblas.so.3. Where that is netlib's reference BLAS (this machine's default, no OpenBLAS
installed) a step takes ~53 s; with Debian's libopenblas0-pthread ~3.2 s (2 cores). The script says on stderr when it ran on the reference BLAS.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torchvision
from torch import nn

sys.dont_write_bytecode = True      # no test/__pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import build_model  # noqa: E402


def blas_libraries():
    """The BLAS shared objects this process has loaded (torch's Linear layers run on it;
    Debian's torch links libblas.so.3, i.e. whatever the alternatives system or
    LD_LIBRARY_PATH points at: netlib's reference BLAS or OpenBLAS)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "blas" in os.path.basename(path).lower():
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs) or ["unknown"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("steps", nargs="?", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--peak-mem", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cnn = torchvision.models.resnet50(weights=None, zero_init_residual=True)
    cnn.fc = nn.Identity()
    model = build_model("virtex", "transdec_postnorm::L1_H2048_A32_F8192", 10000, 30,
                        dropout=0.1, cnn=cnn)
    model.train()

    B, S, T = args.batch, args.size, 30
    images = torch.randn(B, 3, S, S, generator=g)
    lengths = torch.randint(18, 23, (B,), generator=g)
    tokens = torch.zeros(B, T, dtype=torch.long)
    noitpac = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        n = int(lengths[b])
        seq = torch.cat([torch.tensor([1]), torch.randint(4, 10000, (n - 2,), generator=g),
                         torch.tensor([2])])
        tokens[b, :n] = seq
        noitpac[b, :n] = seq.flip(0)

    def step():
        model.zero_grad(set_to_none=False)
        out = model(images, tokens, lengths, noitpac)
        out["loss"].backward()
        return out["loss"].item()

    step()                                        # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - t0) * 1000.0)
    med = statistics.median(times)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"torch_step_ms {med:.1f}")
    print(f"PyTorch {torch.__version__} CPU, {args.threads} threads: R-50 + L1_H2048 "
          f"bicaptioning ({nparams / 1e6:.1f}M params), batch {B}, {S}px, T {T}: "
          f"forward+backward median {med:.0f} ms over {args.steps} steps "
          f"({', '.join(f'{t:.0f}' for t in times)}), loss {loss:.3f}")
    libs = blas_libraries()
    print(f"BLAS: {', '.join(libs)}")
    if not any("openblas" in lib.lower() or "mkl" in lib.lower() for lib in libs):
        print("note: torch's Linear layers ran on the reference (netlib) BLAS, ~15x slower "
              "than OpenBLAS here; with Debian's libopenblas0-pthread (alternatives or "
              "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread) this step took "
              "~3.2 s instead of ~53 s", file=sys.stderr)
    if args.peak_mem:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"torch_peak_rss_mb {rss_kb / 1024.0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
