# Build image for `cross` (see cross.toml): aarch64 for NVIDIA Jetson Orin on JetPack 6,
# which is Ubuntu 22.04 (glibc 2.35) with CUDA 12. The binary links against this image's
# arm64 glibc and NVIDIA's arm64 CUDA libraries (libcuda from the stubs; cuBLAS, cuRAND,
# NVRTC, the CUDA runtime), and at run time uses JetPack's own.
FROM ubuntu:22.04

# CUDA release of the target's JetPack, as NVIDIA's package names spell it (12-6 = 12.6,
# JetPack 6.1/6.2; JetPack 6.0 has 12-2).
ARG CUDA_PKG_VERSION=12-6
ARG DEBIAN_FRONTEND=noninteractive

RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl gnupg make pkg-config \
        gcc g++ libc6-dev \
        gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross \
    && rm -rf /var/lib/apt/lists/*

# NVIDIA's CUDA repositories for Ubuntu 22.04: nvcc for this x86_64 host, and the
# cross-aarch64 (Jetson) headers and target libraries.
RUN curl -fsSL -o /tmp/cuda-keyring.deb \
        https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && echo "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/cross-linux-aarch64/ /" \
        > /etc/apt/sources.list.d/cuda-cross-aarch64.list \
    && apt-get update && apt-get install -y --no-install-recommends \
        cuda-nvcc-${CUDA_PKG_VERSION} cuda-cross-aarch64-${CUDA_PKG_VERSION} \
    && rm -rf /var/lib/apt/lists/*

ENV CUDA_HOME=/usr/local/cuda \
    PATH=/usr/local/cuda/bin:$PATH \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    NVCC_CCBIN=aarch64-linux-gnu-g++ \
    NVCC_APPEND_FLAGS="--target-directory aarch64-linux" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-L native=/usr/local/cuda/targets/aarch64-linux/lib -L native=/usr/local/cuda/targets/aarch64-linux/lib/stubs" \
    CUDA_COMPUTE_CAP=87
