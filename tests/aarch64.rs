//! aarch64, the Jetson's CPU, without CUDA: the crate cross-builds (release) for
//! `aarch64-unknown-linux-gnu` with Debian's gcc-aarch64-linux-gnu, and the arm64 binary,
//! run under `qemu-aarch64`, analyses a phantom study to the same heads, stages and
//! probabilities as this machine's build.
//!
//! Needs `rustup target add aarch64-unknown-linux-gnu` and `apt-get install
//! gcc-aarch64-linux-gnu qemu-user` (.ci/run does both). The cross build has its own target
//! folder (target/aarch64): the first run compiles every dependency for arm64 (about five
//! minutes on two cores), later runs only what changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{BIN, output_text};

const TARGET: &str = "aarch64-unknown-linux-gnu";
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn tail(out: &Output) -> String {
    let text = output_text(out);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn cross_build() -> PathBuf {
    for tool in ["aarch64-linux-gnu-gcc", "qemu-aarch64"] {
        assert!(
            on_path(tool),
            "{tool} is missing: apt-get install gcc-aarch64-linux-gnu qemu-user (.ci/run does)"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root().join("target/aarch64");
    let started = Instant::now();
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "onfh-edge",
            "--target",
            TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc")
        .env("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cross build failed (is the target installed? rustup target add {TARGET}):\n{}",
        tail(&out)
    );
    eprintln!("aarch64 build: {:.0} s", started.elapsed().as_secs_f64());
    target_dir.join(TARGET).join("release/onfh-edge")
}

/// ELF header: 64-bit, little-endian, e_machine EM_AARCH64 (183).
fn assert_arm64_elf(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(bytes[4], 2, "not ELFCLASS64");
    assert_eq!(bytes[5], 1, "not little-endian");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "not aarch64"
    );
}

fn analyze(program: &str, args: &[&str], study: &Path) -> (i32, serde_json::Value, f64) {
    let started = Instant::now();
    let out = Command::new(program)
        .current_dir(root())
        .args(args)
        .arg("analyze")
        .arg(study)
        .arg("--json")
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "{program} analyze: {code}\n{}",
        tail(&out)
    );
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{program} analyze --json: {e}\n{}", tail(&out)));
    (code, json, secs)
}

#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn arm64_build_analyses_a_phantom_study_like_the_host_under_qemu() {
    let arm64 = cross_build();
    assert_arm64_elf(&arm64);

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["phantom", "--studies", "1", "--seed", "11", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tail(&out));

    let (host_code, host, host_s) = analyze(BIN, &[], dir.path());
    let arm64 = arm64.to_string_lossy().to_string();
    let (arm_code, arm, arm_s) = analyze("qemu-aarch64", &["-L", SYSROOT, &arm64], dir.path());
    eprintln!("analyze: host {host_s:.1} s, arm64 under qemu {arm_s:.1} s");

    assert_eq!(arm_code, host_code, "exit status");
    for key in [
        "study_instance_uid",
        "series_instance_uid",
        "status",
        "reason",
    ] {
        assert_eq!(arm[key], host[key], "{key}");
    }
    let (h_heads, a_heads) = (
        host["heads"].as_array().unwrap(),
        arm["heads"].as_array().unwrap(),
    );
    assert_eq!(
        h_heads.len(),
        2,
        "the phantom has two femoral heads: {host}"
    );
    assert_eq!(a_heads.len(), h_heads.len());
    for (h, a) in h_heads.iter().zip(a_heads) {
        let side = h["side"].as_str().unwrap();
        assert_eq!(a["side"], h["side"]);
        assert_eq!(a["stage"], h["stage"], "stage of {side}");
        for class in ["0", "I", "II"] {
            let (hp, ap) = (
                h["probabilities"][class].as_f64().unwrap(),
                a["probabilities"][class].as_f64().unwrap(),
            );
            assert!(
                (hp - ap).abs() < 2e-3,
                "{side} P({class}): host {hp}, arm64 {ap}"
            );
        }
        let (hs, as_) = (
            h["detection_score"].as_f64().unwrap(),
            a["detection_score"].as_f64().unwrap(),
        );
        assert!(
            (hs - as_).abs() < 2e-3,
            "{side} detection score {hs} vs {as_}"
        );
        for axis in 0..3 {
            let (hc, ac) = (
                h["center_lps_mm"][axis].as_f64().unwrap(),
                a["center_lps_mm"][axis].as_f64().unwrap(),
            );
            assert!((hc - ac).abs() < 0.5, "{side} centre[{axis}] {hc} vs {ac}");
        }
    }
}
