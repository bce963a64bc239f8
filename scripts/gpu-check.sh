#!/usr/bin/env bash
# CUDA fp16 check of the shipped models, for a machine with an NVIDIA GPU and the CUDA
# toolkit: builds with `--features cuda` and runs both networks in f16 and f32 on the same
# held-out phantom input, printing the largest output difference and the latency of each.
#
#   CUDA_COMPUTE_CAP=90 scripts/gpu-check.sh      # H100/H200
#   CUDA_COMPUTE_CAP=87 scripts/gpu-check.sh      # Jetson AGX Orin
#
# CUDA_COMPUTE_CAP defaults to what nvidia-smi reports for GPU 0 (a Jetson has no
# nvidia-smi: set it). cudarc may need CUDARC_CUDA_VERSION (e.g. 12060) where it cannot
# find the toolkit's version. The build does not use cuDNN (JetPack 6.0 ships cuDNN 8.9).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
    export CUDA_COMPUTE_CAP
fi
echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
cargo build --release --features cuda --example precision
echo "--- CPU (f32 product path; f16 for comparison)"
./target/release/examples/precision --device cpu --runs 3
echo "--- CUDA"
./target/release/examples/precision --device cuda --runs 20
