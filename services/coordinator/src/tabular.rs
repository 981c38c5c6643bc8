//! Tabular benchmarks: a search space in which every model has been trained (several seeds) and
//! scored for latency, kept as one gzip-compressed JSON document.
//!
//! A table answers a search's trials without training: the search-efficiency harness
//! (`tools/src/bin/search_bench.rs`) runs the engines against one, and so can anyone studying a
//! search algorithm. `frontier table build` makes one; its manifest keeps the spec, the seeds, the
//! device whose latency table scored it and the command that regenerates it.
//!
//! Lookups go by the model's canonical hash, so two genomes that expand to the same model share
//! one entry, as they share one candidate in a search.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use api::SearchSpec;
use search_space::{Architecture, Genome, ModelSpec};
use serde::{Deserialize, Serialize};

use crate::latency::LatencyModel;

/// The document's format tag.
pub const FORMAT: &str = "frontier/table";
/// The document's version.
pub const VERSION: u32 = 1;

/// A tabular benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub format: String,
    pub version: u32,
    pub manifest: Manifest,
    /// Every distinct model of the space, once.
    pub models: Vec<TableModel>,
    /// Every genome of the space at every hidden size, with the model it expands to.
    pub genomes: Vec<TableGenome>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

/// How a table was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// The space, model settings, target setting and proxy budget (its algorithm is not used).
    pub spec: SearchSpec,
    /// Training seeds, in the order of every model's `runs`.
    pub seeds: Vec<u64>,
    /// The device whose latency table scored the models.
    pub latency_device: String,
    /// The command that regenerates the table.
    pub command: String,
    /// SHA-256 of the training corpus's bytes.
    pub corpus_sha256: String,
    pub created_ms: i64,
    /// Wall time of the run that wrote the table (a sharded build trains in other runs; the
    /// training time is in each run's `train_seconds`).
    pub build_seconds: f64,
}

/// One trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableModel {
    pub arch_hash: String,
    pub hidden_size: u32,
    pub params: u64,
    /// Operator codes in order (`A`, `M2`, `F`, …), for people.
    pub layers: String,
    /// The latency table's (uncalibrated) estimate at the manifest's setting.
    pub latency_ms: f64,
    /// One run per manifest seed, in that order.
    pub runs: Vec<TableRun>,
}

/// One proxy training of one model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRun {
    pub seed: u64,
    pub val_loss: f64,
    pub ppl: f64,
    pub tokens: u64,
    pub train_seconds: f64,
}

/// A genome of the space at one width, and the model it expands to (an index into `models`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableGenome {
    pub genome: Genome,
    pub hidden_size: u32,
    pub model: usize,
}

/// Why a table could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a table: {reason}")]
    Format { path: String, reason: String },
    #[error("the table has no model {0}")]
    Missing(String),
}

impl TableModel {
    /// Mean perplexity over the seeds: the model's quality as the table knows it.
    pub fn mean_ppl(&self) -> f64 {
        if self.runs.is_empty() {
            return f64::INFINITY;
        }
        self.runs.iter().map(|r| r.ppl).sum::<f64>() / self.runs.len() as f64
    }
}

impl Table {
    pub fn new(manifest: Manifest, models: Vec<TableModel>, genomes: Vec<TableGenome>) -> Self {
        let mut table = Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            manifest,
            models,
            genomes,
            index: HashMap::new(),
        };
        table.reindex();
        table
    }

    fn reindex(&mut self) {
        self.index = self.models.iter().enumerate().map(|(i, m)| (m.arch_hash.clone(), i)).collect();
    }

    /// Reads a table written by [`Table::write`] (gzip-compressed JSON), checking its format,
    /// that every model has one run per seed with finite values, and that every genome names a
    /// model.
    pub fn read(path: &Path) -> Result<Self, TableError> {
        let shown = path.display().to_string();
        let file =
            std::fs::File::open(path).map_err(|source| TableError::Io { path: shown.clone(), source })?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(|source| TableError::Io { path: shown.clone(), source })?;
        Self::from_json(&text).map_err(|reason| TableError::Format { path: shown, reason })
    }

    /// Parses and checks a table's JSON text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut table: Table = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if table.format != FORMAT || table.version != VERSION {
            return Err(format!("format `{}` v{} is not `{FORMAT}` v{VERSION}", table.format, table.version));
        }
        let seeds = table.manifest.seeds.len();
        for (i, m) in table.models.iter().enumerate() {
            if m.runs.len() != seeds {
                return Err(format!("models[{i}] has {} runs for {seeds} seeds", m.runs.len()));
            }
            let finite = m.latency_ms.is_finite()
                && m.runs.iter().all(|r| r.ppl.is_finite() && r.val_loss.is_finite() && r.ppl > 0.0);
            if !finite {
                return Err(format!("models[{i}] has a value that is not a finite positive number"));
            }
        }
        if let Some(i) = table.genomes.iter().position(|g| g.model >= table.models.len()) {
            return Err(format!(
                "genomes[{i}] names model {} of {}",
                table.genomes[i].model,
                table.models.len()
            ));
        }
        table.reindex();
        Ok(table)
    }

    /// Writes the table as gzip-compressed JSON, beside its name and then renamed into place.
    pub fn write(&self, path: &Path) -> Result<(), TableError> {
        let shown = path.display().to_string();
        let io = |source| TableError::Io { path: shown.clone(), source };
        let staging = path.with_extension("partial");
        let file = std::fs::File::create(&staging).map_err(io)?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
        let json = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        gz.write_all(&json).map_err(io)?;
        gz.finish().map_err(io)?;
        std::fs::rename(&staging, path).map_err(io)
    }

    /// Seconds spent training every run of the table.
    pub fn train_seconds(&self) -> f64 {
        self.models.iter().flat_map(|m| &m.runs).map(|r| r.train_seconds).sum()
    }

    /// The model `model` expands to, by canonical hash.
    pub fn lookup(&self, model: &ModelSpec) -> Option<&TableModel> {
        self.by_hash(&model.canonical_hash().0)
    }

    pub fn by_hash(&self, arch_hash: &str) -> Option<&TableModel> {
        self.index.get(arch_hash).map(|&i| &self.models[i])
    }

    /// `genome` at `hidden_size` under the manifest's model settings, expanded.
    pub fn expand(&self, genome: &Genome, hidden_size: u32) -> Result<ModelSpec, String> {
        Architecture::from_genome(self.manifest.spec.model.with_hidden_size(hidden_size), genome.clone())
            .expand()
            .map_err(|e| e.to_string())
    }

    /// The paper's width rule over the table: the widest of the space's hidden sizes whose
    /// latency is within `budget_ms`, or the narrowest (infeasible) when none is; with the model
    /// and whether it fits.
    pub fn widest_under(
        &self,
        genome: &Genome,
        budget_ms: Option<f64>,
    ) -> Result<(&TableModel, bool), TableError> {
        let mut widths = self.manifest.spec.space.hidden_sizes.clone();
        widths.sort_unstable_by(|a, b| b.cmp(a));
        let mut last = None;
        for h in widths {
            let model = self.expand(genome, h).map_err(TableError::Missing)?;
            let entry = self.lookup(&model).ok_or_else(|| TableError::Missing(model.canonical_hash().0))?;
            let fits = budget_ms.is_none_or(|b| entry.latency_ms <= b);
            if fits {
                return Ok((entry, true));
            }
            last = Some(entry);
        }
        last.map(|e| (e, false)).ok_or_else(|| TableError::Missing("a hidden size".to_owned()))
    }

    /// The run a search's training of `arch_hash` would give: the table's seed picked by the
    /// training seed (so a search sees one seed's noise, as it would when training).
    pub fn answer(&self, arch_hash: &str, training_seed: u64) -> Result<&TableRun, TableError> {
        let model = self.by_hash(arch_hash).ok_or_else(|| TableError::Missing(arch_hash.to_owned()))?;
        let runs = model.runs.len().max(1) as u64;
        model
            .runs
            .get((training_seed % runs) as usize)
            .ok_or_else(|| TableError::Missing(arch_hash.to_owned()))
    }

    /// The lowest mean perplexity among models within `budget_ms` (all models without one).
    pub fn best_feasible(&self, budget_ms: Option<f64>) -> Option<&TableModel> {
        self.models
            .iter()
            .filter(|m| budget_ms.is_none_or(|b| m.latency_ms <= b))
            .min_by(|a, b| a.mean_ppl().total_cmp(&b.mean_ppl()))
    }
}

/// The table's latencies as a [`LatencyModel`] (models outside the table cannot be scored).
impl LatencyModel for Table {
    fn estimate_ms(&self, model: &ModelSpec) -> Result<f64, String> {
        self.lookup(model).map(|m| m.latency_ms).ok_or_else(|| {
            format!("model {} is not in table `{}`", model.canonical_hash(), self.manifest.name)
        })
    }
}

/// The tables a coordinator answers `table:NAME` searches from: `NAME.json.gz` in one folder,
/// each read once and kept.
#[derive(Debug)]
pub struct TableDir {
    dir: std::path::PathBuf,
    loaded: std::sync::Mutex<HashMap<String, std::sync::Arc<Table>>>,
}

impl TableDir {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self { dir: dir.into(), loaded: std::sync::Mutex::default() }
    }

    /// Table `name` (already checked to be a plain name by the spec's validation).
    pub fn get(&self, name: &str) -> Result<std::sync::Arc<Table>, String> {
        if let Some(t) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(t.clone());
        }
        let path = self.dir.join(format!("{name}.json.gz"));
        if !path.is_file() {
            return Err(format!("no table `{name}` in the coordinator's table folder"));
        }
        let table = std::sync::Arc::new(Table::read(&path).map_err(|e| e.to_string())?);
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), table.clone());
        Ok(table)
    }
}

impl LatencyModel for std::sync::Arc<Table> {
    fn estimate_ms(&self, model: &ModelSpec) -> Result<f64, String> {
        self.as_ref().estimate_ms(model)
    }
}
