#!/usr/bin/env bash
# Build the CUDA binaries on a machine with neither a GPU nor a CUDA toolkit, for a GPU
# machine that has the NVIDIA driver and the CUDA 13 libraries but no Rust (then run
# scripts/gpu-run-prebuilt.sh there). nvcc and the CUDA headers come from NVIDIA's PyPI
# wheels; the driver and math libraries are linked against stand-ins generated from the
# symbols cudarc references (only their names matter: the real libraries are loaded at run
# time). Writes .gpu/bin.tar.xz: the stripped `onfh-edge` and `precision`, and libcudart.
#
#   CUDA_COMPUTE_CAP=90 scripts/gpu-prebuild.sh      # H100/H200 (the default)
#
# The wheels' CUDA release (CUDA_WHEEL_VERSION, default 13.0.88) must not be newer than
# what the GPU machine's driver supports: the kernels are loaded as PTX by that driver.
set -euo pipefail
cd "$(dirname "$0")/.."
cap=${CUDA_COMPUTE_CAP:-90}
ver=${CUDA_WHEEL_VERSION:-13.0.88}
cccl=${CUDA_CCCL_VERSION:-13.0.85}
work=$PWD/target/cuda-toolkit
kit=$work/nvidia/cu13
if [ ! -x "$kit/bin/nvcc" ]; then
    mkdir -p "$work/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 -d "$work/wheels" \
        "nvidia-cuda-nvcc==$ver" "nvidia-cuda-runtime==$ver" "nvidia-cuda-crt==$ver" \
        "nvidia-nvvm==$ver" "nvidia-cuda-cccl==$cccl"
    for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$work"; done
    chmod +x "$kit"/bin/* "$kit"/nvvm/bin/*
    ln -sf libcudart.so.13 "$kit/lib/libcudart.so"
fi
export CUDA_HOME=$kit PATH=$kit/bin:$PATH CUDA_COMPUTE_CAP=$cap CARGO_TARGET_DIR=target/cuda
export RUSTFLAGS="-L native=$kit/lib"
build() { cargo build --release --locked --features cuda --bin onfh-edge --example precision; }
if [ ! -e "$kit/lib/libcublas.so" ]; then
    # The stand-ins need the compiled cudarc, so the first build stops at the link.
    build || true
    rlib=$(ls target/cuda/release/deps/libcudarc-*.rlib | head -1)
    nm -u --format=just-symbols "$rlib" 2>/dev/null | sort -u > "$work/undefined.txt"
    stub() { # name soname include-pattern [exclude-pattern]
        grep -E "$3" "$work/undefined.txt" | grep -Ev "${4:-^$}" |
            sed 's/.*/void &(void) {}/' > "$work/$1.c"
        gcc -shared -fPIC -Wl,-soname,"$2" -o "$kit/lib/lib$1.so" "$work/$1.c"
    }
    stub cuda libcuda.so.1 '^cu[A-Z]'
    stub nvrtc libnvrtc.so.13 '^nvrtc'
    stub curand libcurand.so.10 '^curand'
    stub cublasLt libcublasLt.so.13 '^cublasLt'
    stub cublas libcublas.so.13 '^cublas' '^cublasLt'
fi
build
stage=$(mktemp -d)
cp target/cuda/release/onfh-edge target/cuda/release/examples/precision "$kit/lib/libcudart.so.13" "$stage/"
strip "$stage/onfh-edge" "$stage/precision"
mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
tar -cJf .gpu/bin.tar.xz -C "$stage" onfh-edge precision libcudart.so.13
rm -rf "$stage"
ls -la .gpu/bin.tar.xz
