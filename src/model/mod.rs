//! The 3D-ONFHNet models on Candle.
//!
//! At present: the 3D layers the networks are built from (`layers`) and the blocks of
//! 3D-MulDenseNet (`blocks`: dense layer and block, MulPoolFusion), verified against
//! PyTorch — forward and backward — with golden fixtures from `reference/`. The full
//! 3DC-YOLOX detector and 3D-MulDenseNet stager, Grad-CAM, weights with manifests and
//! training arrive on top of these.
//!
//! This module does no I/O other than loading weights.

pub mod blocks;
pub mod layers;
