//! The 3D-ONFHNet models on Candle.
//!
//! At present: the 3D layers the networks are built from (`layers`), the blocks of
//! 3D-MulDenseNet (`blocks`: dense layer and block, MulPoolFusion) — both verified against
//! PyTorch, forward and backward, with golden fixtures from `reference/` — and the stager
//! network with its focal loss (`stager`: small and paper presets, forward split at the
//! Grad-CAM layer). The 3DC-YOLOX detector, Grad-CAM, weights with manifests, the training
//! command and fp16 export arrive on top of these.
//!
//! This module does no I/O other than loading weights.

pub mod blocks;
pub mod data;
pub mod detector;
pub mod evaluate;
pub mod layers;
pub mod stager;
pub mod train;
pub mod train_detector;
pub mod weights;
