SUMMARY = "Hip MRI early-ONFH staging appliance daemon (research demo)"
DESCRIPTION = "onfh-edge receives hip MRI studies from the scanner over DICOM, \
               finds both femoral heads, stages each as Ficat-Arlet 0, I or II with a \
               3D Grad-CAM heatmap, keeps the results in SQLite, drives a front panel \
               and alerts the orthopaedic team. Its models are trained on synthetic \
               phantoms: a research demo, not for clinical use."
SECTION = "console/network"
# onfh-edge itself is Apache-2.0. The crates it links statically add the rest (where a
# crate offers a choice, MIT or Apache-2.0 is taken); `cargo metadata` lists them.
LICENSE = "Apache-2.0 & MIT & BSD-2-Clause & BSD-3-Clause & ISC & Zlib & Unicode-3.0 & CDLA-Permissive-2.0 & MPL-2.0 & CC0-1.0 & IJG"
LIC_FILES_CHKSUM = "file://LICENSE;md5=1836efb2eb779966696f473ee8540542"
CVE_PRODUCT = "onfh-edge"

PV = "0.1.0+git"

# The layer lives inside the onfh-edge repository (yocto/meta-onfh): by default the recipe
# builds the commit that repository is checked out at, so the recipe, its crate list and
# the Cargo.lock they were generated from always go together. Release images pin the
# commit (SRCREV:pn-onfh-edge) and may point ONFH_EDGE_SRCDIR at a mirror; the layer must
# then come from the same commit.
ONFH_EDGE_SRCDIR ?= "${@os.path.normpath(os.path.join(d.getVar('FILE_DIRNAME'), '..', '..', '..', '..'))}"
SRC_URI = "git://${ONFH_EDGE_SRCDIR};protocol=file;nobranch=1"
SRCREV ?= "${@bb.process.run(['git', '-C', d.getVar('ONFH_EDGE_SRCDIR'), 'rev-parse', 'HEAD'])[0].strip()}"
S = "${WORKDIR}/git"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates cuda systemd useradd

COMPATIBLE_MACHINE = "(tegra)"

# Candle on the GPU: `--features cuda` builds its kernels with meta-tegra's nvcc for the
# Orin's compute capability (8.7). cudarc reads the toolkit version from
# CUDARC_CUDA_VERSION (12.6 -> 12060) instead of running nvcc for the host.
CARGO_BUILD_FLAGS:append = " --features cuda"
# nooelint: oelint.vars.mispell.unknown
CUDA_COMPUTE_CAP ?= "87"
export CUDA_COMPUTE_CAP
export CUDARC_CUDA_VERSION = "${@d.getVar('CUDA_VERSION').replace('.', '0') + '0'}"
export NVCC_CCBIN = "${CUDAHOSTCXX}"
export NVCC_APPEND_FLAGS = "${CUDA_NVCC_PATH_FLAGS} ${@cuda_extract_compiler('CXX_FOR_CUDA', d)[1]}"
# Candle links the CUDA libraries it uses (cudarc's dynamic-linking: libcuda, cuBLAS,
# cuRAND, NVRTC, and libcudart for its fused kernels); meta-tegra installs all but libcuda
# under /usr/local/cuda-<version>. The shared-library scan then finds the run-time
# dependencies by itself.
ONFH_CUDA_LIBDIR = "/usr/local/cuda-${CUDA_VERSION}/${baselib}"
RUSTFLAGS:append = " -L native=${STAGING_DIR_HOST}${ONFH_CUDA_LIBDIR} -L native=${STAGING_DIR_HOST}${ONFH_CUDA_LIBDIR}/stubs -C link-arg=-Wl,-rpath,${ONFH_CUDA_LIBDIR}"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/onfh-edge --no-create-home --shell ${base_sbindir}/nologin --user-group onfh-edge"

SYSTEMD_SERVICE:${PN} = "onfh-edge.socket onfh-edge.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/onfh-edge.service.d
    install -m 0644 ${S}/systemd/onfh-edge.service ${S}/systemd/onfh-edge.socket ${D}${systemd_system_unitdir}/
    # CUDA on the Jetson: no device allow-list, W^X off (see the file).
    install -m 0644 ${S}/systemd/onfh-edge.service.d/jetson-gpu.conf ${D}${systemd_system_unitdir}/onfh-edge.service.d/

    install -d ${D}${datadir}/onfh-edge/models
    install -m 0644 ${S}/models/*.json ${S}/models/*.safetensors ${D}${datadir}/onfh-edge/models/

    # The appliance's settings (state and models folders), on the GPU. It may hold alert
    # secrets: root:onfh-edge 0640.
    install -d ${D}${sysconfdir}/onfh-edge
    install -m 0640 ${S}/config/appliance.toml ${D}${sysconfdir}/onfh-edge/onfh-edge.toml
    sed -i -e 's/^device = "cpu"$/device = "cuda"/' ${D}${sysconfdir}/onfh-edge/onfh-edge.toml
    chown root:onfh-edge ${D}${sysconfdir}/onfh-edge/onfh-edge.toml

    # Operations guide and conformance statement (the units' Documentation=), and every
    # setting with its default.
    install -d ${D}${docdir}/onfh-edge
    install -m 0644 ${S}/README.md ${S}/docs/operations.md ${S}/docs/dicom-conformance.md \
        ${S}/docs/panel-protocol.md ${S}/config/onfh-edge.toml ${D}${docdir}/onfh-edge/
}

CONFFILES:${PN} = "${sysconfdir}/onfh-edge/onfh-edge.toml"
