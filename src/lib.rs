//! onfh-edge: an edge appliance daemon beside a hip MRI scanner. It receives studies over
//! DICOM, finds both femoral heads in 3D, stages each as Ficat-Arlet 0 / I / II (early
//! osteonecrosis of the femoral head) with a 3D Grad-CAM heatmap, keeps everything in
//! SQLite, shows a front panel, alerts the orthopaedic team and returns DICOM result
//! objects to PACS. A research demo: the models are trained on synthetic phantoms only.
//!
//! Layout, by capability (ARCHITECTURE.md has the invariants and the code map).
//!
//! What a study goes through (the inference path):
//! - [`config`]: embedded defaults plus a site TOML file, validated once into `Settings`.
//! - [`dicom`]: the DICOM receiver (C-ECHO/C-STORE SCP), the durable spool, series
//!   completion, and a C-STORE SCU.
//! - [`store`]: the SQLite database — schema, migrations, every query.
//! - [`volume`]: series selection, 3D assembly in patient space, preprocessing, NIfTI.
//! - [`model`]: the 3D networks on Candle (detector, stager, Grad-CAM), the head crop
//!   geometry, and model files (the shipped models are built in).
//! - [`pipeline`]: one study's files to an [`result::Analysis`].
//! - [`worker`]: the inference worker (ready studies in, results and outboxes out).
//! - [`notify`]: alerts (ntfy, webhook, e-mail) from a durable outbox.
//! - [`pacs`]: DICOM result objects (SEG, Parametric Map, TID 1500 SR, Secondary Capture)
//!   and their export; [`outbox`]: the retry schedule both outboxes share.
//! - [`panel`]: the front panel (PNG, framebuffer, serial).
//! - [`daemon`]: opening state, starting the services, shutting down (`serve`);
//!   [`sdnotify`]: systemd notification and socket activation.
//! - Leaves: [`clock`], [`result`] (the JSON contract), [`errors`], [`redact`], [`render`].
//!
//! Off the inference path (nothing above imports them):
//! - [`training`]: training both networks on phantoms, randomised studies or a site
//!   dataset; [`eval`]: the paper's table and the models' evaluation.
//! - [`phantom`]: synthetic bilateral hip studies with ground truth; [`evalphantom`]: an
//!   independent renderer for external evaluation only; [`synth`]: plain synthetic MR
//!   instances for the receiver's tests and benchmark.
//! - [`demo`]: `onfh-edge demo`, the whole job end to end on loopback.
//! - [`cli`]: every command of the binary (`src/main.rs` only parses and calls it).

pub mod cli;
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
