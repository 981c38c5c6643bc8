//! Checkpoints of a training run, so a trial killed part-way (a preempted node, a Slurm time
//! limit, `kill -9`) resumes where it stopped when it is leased again, on any worker that sees
//! the same checkpoint folder.
//!
//! # What a checkpoint holds
//! Everything the next step depends on: the model's weights, the optimiser's state (AdamW's
//! moments and step count), the step reached, and the run's [`RunState`] (the loss curve and the
//! seconds trained so far). The learning rate follows from the step, and so do the batches
//! (they are a pure function of the seed and the step, see [`crate::data::batches`]); no random
//! state is drawn while training. So a resumed run takes exactly the steps an uninterrupted one
//! would have taken.
//!
//! # Format
//! One file per checkpoint, `step-000000001234.ckpt` in the trial's folder:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `FRCKPT01` |
//! | 8 × 3 | lengths of the metadata, the model record and the optimiser record (`u64` LE) |
//! | 32 | SHA-256 of everything after the header |
//! | … | metadata (JSON: job key, step, run state), model record, optimiser record |
//!
//! Records are burn's named MessagePack at full precision. A file is written beside its final
//! name and renamed into place after an `fsync`, so a reader sees a whole checkpoint or none;
//! one that is torn anyway (a truncated copy, a full disk) fails its length or hash check and
//! the previous checkpoint is used. The two newest are kept.
//!
//! # Which job a checkpoint belongs to
//! A checkpoint names its job by a key over the model, the training configuration, the seed
//! and the data: one left in the folder by another job (another architecture after a database
//! was reset, say) is never loaded, only reported, since restoring weights of another shape
//! would not fail until the first step.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::proxy::CheckpointEvery;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernels::TrainingBackend;
use crate::train::{RunState, TrainError, Trainer};

/// The first eight bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"FRCKPT01";
const HEADER_BYTES: usize = 8 + 24 + 32;
/// Checkpoints kept per trial: the newest, and one to fall back on.
pub const KEPT_CHECKPOINTS: usize = 2;

type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Something worth telling the coordinator about a trial's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointNote {
    /// The run continued from the checkpoint at `step`.
    Resumed { step: u64, file: String },
    /// A checkpoint file was not used, and why.
    Skipped { file: String, reason: String },
    /// A checkpoint could not be written; training went on without it.
    SaveFailed { step: u64, reason: String },
}

impl std::fmt::Display for CheckpointNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointNote::Resumed { step, file } => write!(f, "resumed at step {step} from {file}"),
            CheckpointNote::Skipped { file, reason } => write!(f, "checkpoint {file} skipped: {reason}"),
            CheckpointNote::SaveFailed { step, reason } => {
                write!(f, "checkpoint at step {step} not saved: {reason}")
            }
        }
    }
}

/// A run's checkpoint folder, interval and job key, and the notes not yet reported.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// This trial's own folder (created on the first save).
    pub dir: PathBuf,
    pub every: CheckpointEvery,
    /// Names the job (see the module doc); checkpoints with another key are not loaded.
    pub job_key: String,
    notes: Arc<Mutex<Vec<CheckpointNote>>>,
}

impl PartialEq for Checkpointing {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir && self.every == other.every && self.job_key == other.job_key
    }
}

/// What [`Checkpointing::resume`] restored besides the trainer.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub step: u64,
    pub state: RunState,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    job_key: String,
    step: u64,
    state: RunState,
}

/// Decides when the next checkpoint is due.
#[derive(Clone, Debug)]
pub struct CheckpointSchedule {
    every: CheckpointEvery,
    last: Instant,
}

impl CheckpointSchedule {
    /// Whether a checkpoint is due after `step` (1-based: steps done); restarts the clock when so.
    pub fn is_due(&mut self, step: u64) -> bool {
        let due = match self.every {
            CheckpointEvery::Steps(n) => step.is_multiple_of(n),
            CheckpointEvery::Minutes(n) => self.last.elapsed().as_secs() >= n * 60,
        };
        if due {
            self.last = Instant::now();
        }
        due
    }
}

impl Checkpointing {
    pub fn new(dir: PathBuf, every: CheckpointEvery, job_key: String) -> Self {
        Self { dir, every, job_key, notes: Arc::default() }
    }

    /// A fresh clock for [`CheckpointSchedule::is_due`].
    pub fn schedule(&self) -> CheckpointSchedule {
        CheckpointSchedule { every: self.every, last: Instant::now() }
    }

    /// The notes since the last call, oldest first.
    pub fn take_notes(&self) -> Vec<CheckpointNote> {
        self.notes.lock().map(|mut notes| std::mem::take(&mut *notes)).unwrap_or_default()
    }

    fn note(&self, note: CheckpointNote) {
        tracing::info!(dir = %self.dir.display(), "{note}");
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(note);
        }
    }

    /// The checkpoint files in the folder, newest (highest step) first.
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let step = name.strip_prefix("step-")?.strip_suffix(".ckpt")?.parse().ok()?;
                Some((step, path))
            })
            .collect();
        files.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
        files.into_iter().map(|(_, path)| path).collect()
    }

    /// Saves the trainer's state after its last step; a failure is noted, not returned, since
    /// the run itself is still good.
    pub fn save<B: TrainingBackend>(
        &self,
        trainer: &Trainer<'_, B>,
        state: &RunState,
    ) -> Result<(), TrainError> {
        let step = trainer.steps_done();
        if let Err(reason) = self.write(trainer, state) {
            self.note(CheckpointNote::SaveFailed { step, reason });
            return Ok(());
        }
        for old in self.files().into_iter().skip(KEPT_CHECKPOINTS) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    fn write<B: TrainingBackend>(&self, trainer: &Trainer<'_, B>, state: &RunState) -> Result<(), String> {
        let step = trainer.steps_done();
        let meta =
            serde_json::to_vec(&Metadata { job_key: self.job_key.clone(), step, state: state.clone() })
                .map_err(|e| e.to_string())?;
        let recorder = Bytes::default();
        let model = Recorder::<B>::record(&recorder, trainer.model.clone().into_record(), ())
            .map_err(|e| format!("model record: {e}"))?;
        let optimizer = Recorder::<B>::record(&recorder, trainer.optimizer.to_record(), ())
            .map_err(|e| format!("optimizer record: {e}"))?;
        let mut body = Vec::with_capacity(meta.len() + model.len() + optimizer.len());
        body.extend_from_slice(&meta);
        body.extend_from_slice(&model);
        body.extend_from_slice(&optimizer);
        let mut file = Vec::with_capacity(HEADER_BYTES + body.len());
        file.extend_from_slice(&CHECKPOINT_MAGIC);
        for len in [meta.len(), model.len(), optimizer.len()] {
            file.extend_from_slice(&(len as u64).to_le_bytes());
        }
        file.extend_from_slice(&Sha256::digest(&body));
        file.extend_from_slice(&body);
        let path = self.dir.join(format!("step-{step:012}.ckpt"));
        write_atomically(&self.dir, &path, &file).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Restores the trainer from the newest checkpoint of this job that reads back whole, noting
    /// the one used and every one skipped; `None` when there is none.
    pub fn resume<B: TrainingBackend>(
        &self,
        trainer: &mut Trainer<'_, B>,
    ) -> Result<Option<Resume>, TrainError> {
        for path in self.files() {
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let skipped = |reason: String| CheckpointNote::Skipped { file: file.clone(), reason };
            let (meta, model, optimizer) = match read_checkpoint(&path) {
                Ok(parts) => parts,
                Err(reason) => {
                    self.note(skipped(reason));
                    continue;
                }
            };
            let meta: Metadata = match serde_json::from_slice(&meta) {
                Ok(meta) => meta,
                Err(e) => {
                    self.note(skipped(format!("unreadable metadata: {e}")));
                    continue;
                }
            };
            if meta.job_key != self.job_key {
                self.note(skipped(
                    "it belongs to another job (another architecture, training configuration, seed or data)"
                        .to_owned(),
                ));
                continue;
            }
            if meta.step == 0 || meta.step >= trainer.total_steps() {
                self.note(skipped(format!(
                    "step {} is outside the run's 1..{}",
                    meta.step,
                    trainer.total_steps()
                )));
                continue;
            }
            let recorder = Bytes::default();
            let device = trainer.device().clone();
            let model_record = Recorder::<B>::load(&recorder, model, &device)
                .map_err(|e| TrainError::Checkpoint(format!("{file}: model record: {e}")));
            let optimizer_record = Recorder::<B>::load(&recorder, optimizer, &device)
                .map_err(|e| TrainError::Checkpoint(format!("{file}: optimizer record: {e}")));
            let (model_record, optimizer_record) = match (model_record, optimizer_record) {
                (Ok(m), Ok(o)) => (m, o),
                (Err(e), _) | (_, Err(e)) => {
                    self.note(skipped(e.to_string()));
                    continue;
                }
            };
            trainer.model = trainer.model.clone().load_record(model_record);
            trainer.optimizer = trainer.optimizer.clone().load_record(optimizer_record);
            trainer.step = meta.step;
            self.note(CheckpointNote::Resumed { step: meta.step, file });
            return Ok(Some(Resume { step: meta.step, state: meta.state }));
        }
        Ok(None)
    }

    /// Deletes the trial's folder and every checkpoint in it (the trial is over).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// A checkpoint's metadata, model record and optimiser record.
type Parts = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The three parts of a checkpoint file, after its length and hash checks.
fn read_checkpoint(path: &Path) -> Result<Parts, String> {
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() < HEADER_BYTES || bytes[..8] != CHECKPOINT_MAGIC {
        return Err("not a checkpoint file (bad header)".to_owned());
    }
    let len = |i: usize| {
        let at = 8 + 8 * i;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default()) as usize
    };
    let (meta, model, optimizer) = (len(0), len(1), len(2));
    let body = &bytes[HEADER_BYTES..];
    let expected = meta.checked_add(model).and_then(|n| n.checked_add(optimizer));
    if expected != Some(body.len()) {
        return Err(format!(
            "torn: {} bytes after the header, the header announces {}",
            body.len(),
            expected.map_or("more than fit in memory".to_owned(), |n| n.to_string())
        ));
    }
    if Sha256::digest(body)[..] != bytes[HEADER_BYTES - 32..HEADER_BYTES] {
        return Err("torn: its contents do not match their hash".to_owned());
    }
    Ok((body[..meta].to_vec(), body[meta..meta + model].to_vec(), body[meta + model..].to_vec()))
}

/// Writes `bytes` to `path` through a temporary file in `dir`, synced before the rename.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    // The rename is durable once the folder itself is synced.
    if let Ok(folder) = fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}
