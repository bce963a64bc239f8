//! `onfh-edge train stager|detector`: options from the arguments, the run (or the record of
//! a finished one with `--export-only`), the epochs as they end, and the export of the best.

use anyhow::Context;

use super::args::{DetectorArgs, RunArgs, StagerArgs};
use crate::model::weights::Manifest;
use crate::training::{EpochRecord, Trained};

pub(super) fn stager(a: StagerArgs) -> anyhow::Result<()> {
    use crate::model::crop::Channel;
    use crate::model::{crop::CropConfig, stager::StagerConfig};
    use crate::training::stager as train;
    let mut config = match a.run.preset.as_str() {
        "small" => StagerConfig::small(),
        "paper" => StagerConfig::paper(),
        other => anyhow::bail!("unknown preset {other:?} (small or paper)"),
    };
    let mut crop = CropConfig {
        shape: config.input,
        ..CropConfig::small()
    };
    if a.t1 {
        config.in_channels = 2;
        crop.channels = vec![Channel::T2, Channel::T1];
    }
    let opts = train::TrainOptions {
        config,
        crop,
        train_studies: a.train_studies,
        val_studies: a.val_studies,
        randomised: a.randomised,
        val_randomised: a.run.val_randomised,
        seed: a.run.seed,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        gamma: 2.0,
        jitter: (a.jitter_copies > 0).then_some((a.jitter_copies, a.jitter_mm)),
        out: a.run.out.clone(),
        init: a.run.init.clone(),
        dataset: a.run.dataset.clone(),
        resume: a.run.resume,
    };
    let job = Job {
        what: "stager",
        run: &a.run,
        name: format!(
            "3d-muldensenet-{}{}",
            a.run.preset,
            if a.t1 { "-t1" } else { "" }
        ),
        studies: (a.train_studies, a.val_studies),
    };
    job.run(
        |step, epoch| train::train_stager(&opts, step, epoch),
        |trained, best, name, command| train::stager_manifest(&opts, trained, best, name, command),
    )
}

pub(super) fn detector(a: DetectorArgs) -> anyhow::Result<()> {
    use crate::model::detector::DetectorConfig;
    use crate::training::detector as train;
    let config = match a.run.preset.as_str() {
        "small" => DetectorConfig::small(),
        "paper" => DetectorConfig::paper(),
        other => anyhow::bail!("unknown preset {other:?} (small or paper)"),
    };
    let preprocess = crate::volume::Preprocess {
        shape: config.input,
        ..Default::default()
    };
    let opts = train::DetectorTrainOptions {
        config,
        preprocess,
        train_studies: a.train_studies,
        val_studies: a.val_studies,
        randomised: a.randomised,
        val_randomised: a.run.val_randomised,
        seed: a.run.seed,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        out: a.run.out.clone(),
        init: a.run.init.clone(),
        dataset: a.run.dataset.clone(),
        resume: a.run.resume,
    };
    let job = Job {
        what: "detector",
        run: &a.run,
        name: format!("3dc-yolox-{}", a.run.preset),
        studies: (a.train_studies, a.val_studies),
    };
    job.run(
        |step, epoch| train::train_detector(&opts, step, epoch),
        |trained, best, name, command| {
            train::detector_manifest(&opts, trained, best, name, command)
        },
    )
}

/// What both training commands do around their network's training.
struct Job<'a> {
    /// `stager` or `detector`: the checkpoints' and the run record's name.
    what: &'static str,
    /// Output, export and `--export-only`.
    run: &'a RunArgs,
    /// The exported model's name.
    name: String,
    /// Classic training and validation studies.
    studies: (usize, usize),
}

type Step<'s> = &'s mut dyn FnMut(usize, usize, f32);

impl Job<'_> {
    fn run<R: EpochRecord>(
        self,
        train: impl FnOnce(Step<'_>, &mut dyn FnMut(&R)) -> anyhow::Result<Trained<R>>,
        manifest: impl FnOnce(&Trained<R>, &R, &str, &str) -> Manifest,
    ) -> anyhow::Result<()> {
        println!(
            "training the {} on {} + {} phantom studies ({})",
            self.what,
            self.studies.0,
            self.studies.1,
            crate::phantom::DISCLAIMER
        );
        let start = std::time::Instant::now();
        let out = &self.run.out;
        let trained = if self.run.export_only {
            Trained::load(out, self.what)?
        } else {
            // The step line is rewritten in place on stderr; each epoch ends it.
            let mut step = |b: usize, n: usize, loss: f32| {
                eprint!(
                    "\r  batch {b:>4}/{n}  loss {loss:.4}  {:>6.0} s",
                    start.elapsed().as_secs_f64()
                );
            };
            let mut epoch = |r: &R| {
                eprintln!();
                println!("{r}");
            };
            train(&mut step, &mut epoch)?
        };
        println!("checkpoints in {}", out.display());
        if let Some(dir) = &self.run.export {
            let best = trained.best().context("no epoch ran")?;
            // The command that trains it: as run, without `--export-only` (which exports a
            // finished run).
            let command = super::command_line().replace(" --export-only", "");
            let m = manifest(&trained, best, &self.name, &command);
            let checkpoint = out.join(format!("{}.best.safetensors", self.what));
            let m = crate::model::weights::export(&checkpoint, m, dir)?;
            println!(
                "exported {} ({} parameters, fp16, sha256 {}) to {}",
                m.name,
                m.weights.parameters,
                m.weights.sha256,
                dir.display()
            );
        }
        Ok(())
    }
}
