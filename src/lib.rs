//! onfh-edge: an edge appliance daemon that receives hip MRI studies over DICOM and
//! (in later stages) stages early osteonecrosis of the femoral head with 3D networks.
//!
//! Layout, by capability (see ARCHITECTURE.md for the invariants):
//!
//! - [`config`]: embedded defaults plus a site TOML file, validated once into `Settings`.
//! - [`dicom`]: the DICOM receiver (C-ECHO/C-STORE SCP), the durable spool, and series
//!   completion.
//! - [`store`]: the SQLite database — schema, migrations, every query.
//! - [`daemon`]: wiring, signals and shutdown for `onfh-edge serve`.
//! - [`demo`]: `onfh-edge demo`, the whole job end to end on loopback.
//! - [`synth`]: plain synthetic MR instances for the receiver's tests and benchmark.
//! - [`phantom`]: synthetic bilateral hip studies with ground truth.
//! - [`evalphantom`]: an independent synthetic hip renderer for external-style evaluation
//!   only (never training or model selection).
//! - [`volume`]: series selection, 3D assembly, preprocessing, NIfTI.
//! - [`model`]: the 3D networks on Candle, their training (phantom, domain-randomised and
//!   site-dataset data) and model files.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into these.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dicom;
pub mod errors;
pub mod eval;
pub mod evalphantom;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod pacs;
pub mod panel;
pub mod phantom;
pub mod pipeline;
pub mod redact;
pub mod render;
pub mod result;
pub mod sdnotify;
pub mod store;
pub mod synth;
pub mod training;
pub mod volume;
pub mod worker;
