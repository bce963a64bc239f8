//! The 3D-ONFHNet models on Candle.
//!
//! At present: the 3D layers the networks are built from (`layers`), verified against
//! PyTorch with golden fixtures. The 3DC-YOLOX detector, the 3D-MulDenseNet stager,
//! Grad-CAM, weights with manifests and training arrive on top of these.
//!
//! This module does no I/O other than loading weights.

pub mod layers;
