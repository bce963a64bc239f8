//! The 3D-ONFHNet models on Candle: the 3D layers (`layers`) and blocks (`blocks`) — both
//! verified against PyTorch, forward and backward, with golden fixtures from `reference/` —
//! the 3DC-YOLOX detector (`detector`) and the 3D-MulDenseNet stager (`stager`), their
//! training data from the phantom (`data`: classic DICOM studies and domain-randomised ones
//! rendered on the model grid) or from a site's labelled studies (`dataset`), training
//! (`train`, `train_detector`), and model files with manifests and checked loading
//! (`weights`). The evaluation of the shipped models lives in `eval::models`.
//!
//! This module does no I/O other than model files and the phantom studies it trains and
//! evaluates on; the analysis pipeline (Grad-CAM, findings) is built on it elsewhere.

pub mod blocks;
pub mod conv_cpu;
pub mod data;
pub mod dataset;
pub mod detector;
pub mod gradcam;
pub mod layers;
pub mod stager;
pub mod train;
pub mod train_detector;
pub mod weights;
