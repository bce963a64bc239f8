//! The 3D-ONFHNet models on Candle: the 3D layers (`layers`) and blocks (`blocks`) — both
//! verified against PyTorch, forward and backward, with golden fixtures from `reference/` —
//! the 3DC-YOLOX detector (`detector`, with the candidate thresholds every caller uses),
//! the 3D-MulDenseNet stager (`stager`), the head crop both see (`crop`), the sphere fit
//! that puts a detection on the head's centre (`sphere`), Grad-CAM (`gradcam`), and model
//! files with manifests and checked loading (`weights`).
//!
//! Inference only: training and its data live in `training`, the evaluation of the shipped
//! models in `eval`; nothing here knows the phantom. The only I/O is model files.

pub mod blocks;
pub mod conv_cpu;
pub mod crop;
pub mod detector;
pub mod gradcam;
pub mod layers;
pub mod sphere;
pub mod stager;
pub mod weights;
