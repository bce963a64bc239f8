//! Bytes and wire time of the serial panel protocol at 921600 baud (8N1), for a full
//! frame and for typical status changes, computed from the exact bytes the appliance
//! writes (each update sent to a simulated panel, which checks it reconstructs the frame).
//!
//! ```text
//! cargo run --release --example bench_panel [-- --baud 921600]
//! ```

use std::time::Instant;

use onfh_edge::panel::protocol::{Message, rect_messages};
use onfh_edge::panel::sim::Simulator;
use onfh_edge::panel::{self, ApplianceState, Frame, PanelState};

/// The bytes one update puts on the wire (what `SerialLink::update` writes: the changed
/// rectangles, then SHOW) and whether the simulated panel then shows `new`.
fn update(sim: &mut Simulator, seq: &mut u8, old: Option<&Frame>, new: &Frame) -> (usize, usize) {
    let rects = new.dirty_rects(old);
    let mut wire = Vec::new();
    let msgs = rect_messages(new, &rects, seq);
    for m in &msgs {
        wire.extend(m.encode());
    }
    wire.extend(Message::Show { seq: *seq }.encode());
    *seq = seq.wrapping_add(1);
    let reply = sim.feed(&wire, Instant::now());
    assert!(
        Message::decode(&reply[..reply.len() - 1]).is_ok_and(|m| matches!(m, Message::Ack { .. }))
    );
    assert!(
        sim.screen(Instant::now()) == *new,
        "panel does not show the frame"
    );
    (wire.len(), msgs.len())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let baud: u32 = args
        .iter()
        .position(|a| a == "--baud")
        .and_then(|i| args.get(i + 1))
        .and_then(|b| b.parse().ok())
        .unwrap_or(921_600);
    let ms = |bytes: usize| bytes as f64 * 10.0 / baud as f64 * 1000.0;
    let mut sim = Simulator::default();
    let mut seq = 1u8;
    sim.feed(
        &Message::Hello { seq: 0, version: 1 }.encode(),
        Instant::now(),
    );

    let ready = panel::example_state(ApplianceState::Ready);
    let with = |f: &dyn Fn(&mut PanelState)| {
        let mut s = ready.clone();
        f(&mut s);
        s
    };
    let receiving = with(&|s| s.state = ApplianceState::Receiving);
    let analysing = with(&|s| {
        s.state = ApplianceState::Analysing;
        s.queue_depth = 1;
    });
    let result = panel::example_state(ApplianceState::Result);
    let mut tick = result.clone();
    tick.clock = "2026-11-28 14:36".into();

    let t = Instant::now();
    let frames: Vec<(&str, Frame)> = [
        ("ready", &ready),
        ("receiving", &receiving),
        ("analysing", &analysing),
        ("result", &result),
        ("clock tick", &tick),
    ]
    .iter()
    .map(|(n, s)| (*n, panel::render(s)))
    .collect();
    let render_ms = t.elapsed().as_secs_f64() * 1000.0 / frames.len() as f64;

    println!("bench_panel: serial protocol at {baud} baud (8N1, 10 bits per byte), 320x240 RGB565");
    println!(
        "{:<34} {:>9} {:>6} {:>10}",
        "update", "bytes", "RECTs", "wire ms"
    );
    for (name, f) in [
        ("full frame: result screen", &frames[3].1),
        ("full frame: ready screen", &frames[0].1),
    ] {
        let (b, n) = update(&mut sim, &mut seq, None, f);
        println!("{name:<34} {b:>9} {n:>6} {:>10.1}", ms(b));
    }
    for w in frames.windows(2) {
        let (b, n) = update(&mut sim, &mut seq, Some(&w[0].1), &w[1].1);
        let name = format!("{} -> {}", w[0].0, w[1].0);
        println!("{name:<34} {b:>9} {n:>6} {:>10.1}", ms(b));
    }
    println!("render one screen: {render_ms:.2} ms (this machine)");
    println!("targets: status change < 100 ms, full frame < 1500 ms");
}
