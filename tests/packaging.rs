//! Packaging: the Yocto layer (yocto/meta-onfh) is lint-clean under `oelint-adv`, its crate
//! list matches Cargo.lock (both through the generator script and checked crate by crate
//! here), the recipe installs files that exist under the paths the systemd units and the
//! installed configuration name, and `cross.toml` points at a build image that exists.
//! (No bitbake or Docker runs here: those checks need the layers and images of a real
//! build host.)

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use common::{BIN, output_text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const RECIPE: &str = "yocto/meta-onfh/recipes-medical/onfh-edge/onfh-edge_git.bb";
const CRATES_INC: &str = "yocto/meta-onfh/recipes-medical/onfh-edge/onfh-edge-crates.inc";

/// The recipe's `do_install` body with line continuations joined.
fn do_install() -> Vec<String> {
    let recipe = read(RECIPE);
    let start = recipe
        .find("do_install:append() {")
        .expect("recipe has do_install:append");
    let body = &recipe[start..];
    let body = &body[..body.find("\n}").expect("do_install ends")];
    body.replace("\\\n", " ")
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Paths the recipe expands to, with the usual oe-core values.
fn expand(path: &str) -> String {
    path.replace("${D}", "")
        .replace("${sysconfdir}", "/etc")
        .replace("${datadir}", "/usr/share")
        .replace("${docdir}", "/usr/share/doc")
        .replace("${bindir}", "/usr/bin")
        .replace("${systemd_system_unitdir}", "/usr/lib/systemd/system")
}

#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn oelint_adv_finds_nothing_in_the_layer() {
    let layer = root().join("yocto/meta-onfh");
    let out = Command::new("oelint-adv")
        .env("OELINT_CONFIG", layer.join(".oelint.cfg"))
        .arg("--quiet")
        .arg(layer.join("recipes-medical/onfh-edge/onfh-edge_git.bb"))
        .arg(layer.join("conf/layer.conf"))
        .current_dir(&layer)
        .output()
        .expect("oelint-adv is missing: `pip install oelint-adv` (.ci/run does)");
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "oelint-adv: {}\n{text}",
        out.status
    );
}

#[test]
fn crates_inc_is_generated_from_cargo_lock() {
    let out = Command::new("python3")
        .arg(root().join("scripts/yocto-crates-inc.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn crates_inc_lists_every_crates_io_package_with_its_checksum() {
    let lock: toml::Table = toml::from_str(&read("Cargo.lock")).unwrap();
    let inc = read(CRATES_INC);
    let uris: Vec<&str> = inc
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("crate://"))
        .collect();
    let sums: BTreeMap<String, String> = inc
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("SRC_URI[")?;
            let (key, value) = rest.split_once(".sha256sum] = ")?;
            Some((key.to_string(), value.trim_matches('"').to_string()))
        })
        .collect();
    let mut expected = 0;
    for p in lock["package"].as_array().unwrap() {
        let source = p.get("source").and_then(|s| s.as_str()).unwrap_or("");
        if !source.contains("crates.io") {
            continue;
        }
        expected += 1;
        let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        let key = format!("{name}-{version}");
        let uri = format!("crate://crates.io/{name}/{version};name={key} \\");
        assert!(uris.contains(&uri.as_str()), "{CRATES_INC} lacks {uri}");
        assert_eq!(
            sums.get(&key).map(String::as_str),
            p.get("checksum").and_then(|c| c.as_str()),
            "checksum of {key}"
        );
    }
    assert!(
        expected > 100,
        "Cargo.lock lists {expected} crates.io packages"
    );
    assert_eq!(
        uris.len(),
        expected,
        "{CRATES_INC} has crates Cargo.lock has not"
    );
    assert_eq!(sums.len(), expected);
}

#[test]
fn recipe_version_license_and_features_match_the_sources() {
    let recipe = read(RECIPE);
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let version = cargo["package"]["version"].as_str().unwrap();
    assert!(
        recipe.contains(&format!("PV = \"{version}+git\"")),
        "recipe PV is not Cargo.toml's {version}"
    );
    assert!(recipe.contains("require ${BPN}-crates.inc"));
    for class in [
        "cargo",
        "cargo-update-recipe-crates",
        "cuda",
        "systemd",
        "useradd",
    ] {
        assert!(
            recipe
                .lines()
                .any(|l| l.starts_with("inherit ") && l.split_whitespace().any(|w| w == class)),
            "recipe does not inherit {class}"
        );
    }
    assert!(recipe.contains("CARGO_BUILD_FLAGS:append = \" --features cuda\""));
    assert!(recipe.contains("CUDA_COMPUTE_CAP ?= \"87\""));
    let features = cargo["features"].as_table().unwrap();
    assert!(
        features.contains_key("cuda"),
        "Cargo.toml has no cuda feature"
    );

    // LIC_FILES_CHKSUM: the md5 bitbake will compute over LICENSE.
    let line = recipe
        .lines()
        .find(|l| l.starts_with("LIC_FILES_CHKSUM"))
        .unwrap();
    let md5 = line.split("md5=").nth(1).unwrap().trim_end_matches('"');
    let out = Command::new("md5sum")
        .arg(root().join("LICENSE"))
        .output()
        .unwrap();
    let actual = String::from_utf8_lossy(&out.stdout);
    assert_eq!(actual.split_whitespace().next(), Some(md5), "LICENSE md5");
    assert_eq!(cargo["package"]["license"].as_str(), Some("Apache-2.0"));
    assert!(recipe.contains("LICENSE = \"Apache-2.0 "));
}

#[test]
fn recipe_installs_existing_files_where_the_units_and_config_expect_them() {
    let lines = do_install();
    let mut installed = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("install -m")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        // install -m MODE SOURCE... DEST
        let (dest, sources) = words[3..].split_last().unwrap();
        let dest = expand(dest);
        for src in sources {
            let rel = src.strip_prefix("${S}/").expect("sources come from ${S}");
            let matches: Vec<PathBuf> = if rel.contains('*') {
                let (dir, pattern) = rel.rsplit_once('/').unwrap();
                let suffix = pattern.trim_start_matches('*');
                std::fs::read_dir(root().join(dir))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect()
            } else {
                vec![root().join(rel)]
            };
            assert!(!matches.is_empty(), "{rel} matches nothing");
            for m in matches {
                assert!(
                    m.is_file(),
                    "recipe installs {} which does not exist",
                    m.display()
                );
                let name = m.file_name().unwrap().to_string_lossy().to_string();
                installed.push(if dest.ends_with('/') {
                    format!("{dest}{name}")
                } else {
                    dest.clone()
                });
            }
        }
    }
    let has = |p: &str| installed.iter().any(|i| i == p);
    // Everything the systemd unit names.
    let service = read("systemd/onfh-edge.service");
    assert!(has("/usr/lib/systemd/system/onfh-edge.service"));
    assert!(has("/usr/lib/systemd/system/onfh-edge.socket"));
    assert!(has(
        "/usr/lib/systemd/system/onfh-edge.service.d/jetson-gpu.conf"
    ));
    assert!(
        service
            .contains("ExecStart=/usr/bin/onfh-edge serve --config /etc/onfh-edge/onfh-edge.toml")
    );
    assert!(has("/etc/onfh-edge/onfh-edge.toml"));
    for doc in service
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation=file://"))
    {
        assert!(has(doc), "unit's Documentation={doc} is not installed");
    }
    assert!(service.contains("WorkingDirectory=/usr/share/onfh-edge"));
    // Every shipped model and its manifest, under the configured models_dir.
    for entry in std::fs::read_dir(root().join("models")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            has(&format!("/usr/share/onfh-edge/models/{name}")),
            "model file {name} is not installed"
        );
    }
    let appliance: toml::Table = toml::from_str(&read("config/appliance.toml")).unwrap();
    assert_eq!(
        appliance["analysis"]["models_dir"].as_str(),
        Some("/usr/share/onfh-edge/models")
    );
    assert_eq!(
        appliance["storage"]["state_dir"].as_str(),
        Some("/var/lib/onfh-edge")
    );
    assert!(service.contains("StateDirectory=onfh-edge"));
    // The useradd line creates the user the unit runs as.
    let recipe = read(RECIPE);
    assert!(service.contains("User=onfh-edge"));
    assert!(
        recipe
            .lines()
            .any(|l| l.starts_with("USERADD_PARAM:${PN}") && l.contains("--user-group onfh-edge"))
    );
    assert!(recipe.contains("SYSTEMD_SERVICE:${PN} = \"onfh-edge.socket onfh-edge.service\""));
}

/// The installed configuration is the appliance file with the recipe's own edit applied:
/// it must still parse, and the edit must hit exactly one line.
#[test]
fn the_installed_configuration_is_valid_with_and_without_cuda() {
    let sed = do_install()
        .into_iter()
        .find(|l| l.starts_with("sed -i -e"))
        .expect("recipe sets the device");
    let expr = sed.split('\'').nth(1).unwrap();
    let (from, to) = {
        let parts: Vec<&str> = expr.split('/').collect();
        assert_eq!(parts[0], "s");
        (parts[1], parts[2])
    };
    let from_line = from.trim_start_matches('^').trim_end_matches('$');
    let text = read("config/appliance.toml");
    assert_eq!(
        text.lines().filter(|l| *l == from_line).count(),
        1,
        "the recipe's sed must match one line of config/appliance.toml"
    );
    let cuda = text.replace(from_line, to);
    let dir = tempfile::tempdir().unwrap();
    for (name, body, device) in [
        ("cpu.toml", text.as_str(), "\"cpu\""),
        ("cuda.toml", cuda.as_str(), "\"cuda\""),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "check-config {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("/var/lib/onfh-edge"), "{stdout}");
        assert!(stdout.contains(device), "{name}: {stdout}");
    }
}

#[test]
fn cross_toml_builds_in_the_jetson_image_with_cuda_passed_through() {
    let cross: toml::Table = toml::from_str(&read("cross.toml")).unwrap();
    let passthrough: Vec<&str> = cross["build"]["env"]["passthrough"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for var in ["CUDA_COMPUTE_CAP", "CUDARC_CUDA_VERSION"] {
        assert!(passthrough.contains(&var), "{var} not passed through");
    }
    let docker = &cross["target"]["aarch64-unknown-linux-gnu"]["dockerfile"];
    let file = docker["file"].as_str().unwrap();
    let context = docker["context"].as_str().unwrap();
    assert!(root().join(context).is_dir());
    let dockerfile = read(file);
    assert!(dockerfile.lines().any(|l| l == "FROM ubuntu:22.04"));
    for needle in [
        "gcc-aarch64-linux-gnu",
        "cuda-cross-aarch64-${CUDA_PKG_VERSION}",
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc",
        "CUDA_COMPUTE_CAP=87",
    ] {
        assert!(dockerfile.contains(needle), "{file} lacks {needle}");
    }
    let arg = docker["build-args"]["CUDA_PKG_VERSION"].as_str().unwrap();
    assert!(dockerfile.contains("ARG CUDA_PKG_VERSION="));
    assert!(arg.starts_with("12-"));
    let readme = read("README.md");
    assert!(readme.contains("CROSS_CONFIG=cross.toml"));
}
