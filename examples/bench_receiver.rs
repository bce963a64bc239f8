//! Receiver throughput benchmark: the same instances sent with DCMTK storescu (one
//! association) to onfh-edge and to DCMTK storescp, side by side in one run.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_receiver -- [--instances 500] [--rounds 3]
//! cargo run --release --example bench_receiver -- --generate-only DIR   # just write the files
//! ... -- --with-storescp-as-shipped   # also storescp with Nagle on (slow: ~22 s a round)
//! ```
//!
//! Prints the wall time of each storescu run, throughput, and the ratio to storescp.
//! Each round runs every peer once, in rotating order; the median round is reported.

#[path = "../tests/common/instances.rs"]
mod instances;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    as_shipped: bool,
    generate_only: Option<PathBuf>,
    instances: usize,
    rounds: usize,
    size: u16,
}

fn parse_args() -> Args {
    let mut args = Args {
        as_shipped: false,
        generate_only: None,
        instances: 500,
        rounds: 3,
        size: 512,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--with-storescp-as-shipped" {
            args.as_shipped = true;
            continue;
        }
        let v = it.next().unwrap_or_default();
        match a.as_str() {
            "--instances" => args.instances = v.parse().expect("--instances N"),
            "--rounds" => args.rounds = v.parse().expect("--rounds N"),
            "--size" => args.size = v.parse().expect("--size PIXELS"),
            "--generate-only" => args.generate_only = Some(PathBuf::from(v)),
            _ => panic!("unknown argument {a}"),
        }
    }
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_echo(port: u16, aet: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("/usr/bin/echoscu")
            .args(["-aec", aet, "127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "peer {aet} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    OnfhFsync,
    OnfhNoFsync,
    Storescp,
    StorescpAsShipped,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::OnfhFsync => "onfh-edge (fsync on)",
            Peer::OnfhNoFsync => "onfh-edge (fsync off)",
            Peer::Storescp => "DCMTK storescp",
            Peer::StorescpAsShipped => "storescp (Nagle on)",
        }
    }
}

fn start(peer: Peer, bin: &Path, work: &Path, port: u16) -> (Child, String) {
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    match peer {
        Peer::Storescp | Peer::StorescpAsShipped => {
            // Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is set, which
            // costs a delayed-ACK wait (~40 ms) per response. The baseline gets its best
            // setting; the as-shipped row is shown only for what an integrator meets.
            let nodelay = if peer == Peer::Storescp { "1" } else { "0" };
            let child = Command::new("/usr/bin/storescp")
                .env("TCP_NODELAY", nodelay)
                .args(["-aet", "STORESCP", "-od"])
                .arg(&out)
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start storescp (install dcmtk)");
            (child, "STORESCP".into())
        }
        _ => {
            let cfg = work.join("bench.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[receiver]\nlisten = \"127.0.0.1:{port}\"\nmin_free_bytes = 0\nfsync = {}\n[storage]\nstate_dir = \"{}\"\n[log]\nlevel = \"warn\"\n",
                    peer == Peer::OnfhFsync,
                    out.display()
                ),
            )
            .unwrap();
            let child = Command::new(bin)
                .args(["serve", "--config"])
                .arg(&cfg)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start onfh-edge");
            (child, "ONFH_EDGE".into())
        }
    }
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            if e.file_name() != "tmp" {
                n += count_files(&e.path());
            }
        } else if e.path().extension().is_some_and(|x| x == "dcm")
            || e.file_name().to_string_lossy().starts_with("MR.")
        {
            n += 1;
        }
    }
    n
}

fn run_once(peer: Peer, bin: &Path, work: &Path, files: &[PathBuf]) -> f64 {
    let port = free_port();
    let (mut child, aet) = start(peer, bin, work, port);
    wait_echo(port, &aet);
    let t0 = Instant::now();
    let status = Command::new("/usr/bin/storescu")
        .env("TCP_NODELAY", "1")
        .args(["-aec", &aet, "127.0.0.1", &port.to_string()])
        .args(files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(status.success(), "storescu to {} failed", peer.name());
    let _ = child.kill();
    let _ = child.wait();
    let stored = count_files(&work.join("out"));
    assert_eq!(
        stored,
        files.len(),
        "{} stored {stored} of {} files",
        peer.name(),
        files.len()
    );
    secs
}

fn main() {
    let args = parse_args();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("onfh-edge");
    assert!(
        bin.exists(),
        "build the daemon first: cargo build --release ({})",
        bin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let input = args
        .generate_only
        .clone()
        .unwrap_or_else(|| work.path().join("in"));
    eprintln!(
        "generating {} instances of {}x{} 16-bit MR ...",
        args.instances, args.size, args.size
    );
    let insts = instances::write_series(
        &input,
        &instances::SeriesSpec {
            study_uid: &instances::new_uid(),
            series_number: 1,
            description: "BENCH T2",
            count: args.instances,
            rows: args.size,
            cols: args.size,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4",
        },
    );
    let files: Vec<PathBuf> = insts.iter().map(|i| i.path.clone()).collect();
    if args.generate_only.is_some() {
        eprintln!("wrote {} files to {}", files.len(), input.display());
        return;
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let mut peers = vec![Peer::Storescp, Peer::OnfhFsync, Peer::OnfhNoFsync];
    if args.as_shipped {
        peers.push(Peer::StorescpAsShipped);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for round in 0..args.rounds {
        for k in 0..peers.len() {
            let i = (k + round) % peers.len();
            let t = run_once(peers[i], &bin, work.path(), &files);
            eprintln!("round {} {:<24} {:.2} s", round + 1, peers[i].name(), t);
            times[i].push(t);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = median(&mut times[0].clone());
    println!(
        "\n{} instances, {:.1} MiB, one storescu association each, median of {} rounds",
        files.len(),
        bytes as f64 / 1048576.0,
        args.rounds
    );
    println!(
        "{:<24} {:>9} {:>11} {:>9} {:>14}",
        "receiver", "seconds", "instances/s", "MiB/s", "vs storescp"
    );
    for (i, p) in peers.iter().enumerate() {
        let t = median(&mut times[i]);
        println!(
            "{:<24} {:>9.2} {:>11.1} {:>9.1} {:>13.2}x",
            p.name(),
            t,
            files.len() as f64 / t,
            bytes as f64 / 1048576.0 / t,
            base / t
        );
    }
}
