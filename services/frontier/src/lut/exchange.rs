//! `frontier lut export` and `frontier lut import`: one table moved between machines as a JSON
//! document or CSV rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use coordinator::store::NewDevice;
use lut::{Calibration, DeploymentSetting, LutEntry, OpShape};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::profile::rows;
use super::show::load_lut;
use super::{StoreArgs, default_device, open, parse_stored_setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Device fingerprint; this machine's CPU when omitted.
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    setting: String,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A file written by `frontier lut export` (JSON, or CSV by its `.csv` extension).
    file: PathBuf,
}

/// The exchange document: one table of one device.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LutDocument {
    format: String,
    version: u32,
    device: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    device_kind: Option<String>,
    #[serde(default)]
    device_info: serde_json::Value,
    setting: DeploymentSetting,
    entries: Vec<LutEntry>,
    #[serde(default)]
    calibration: Option<Calibration>,
}

const FORMAT: &str = "frontier/lut";

const CSV_HEADER: &str = "device,setting,op_key,median_ms,p10_ms,p90_ms,repeats";

pub(super) async fn export(args: ExportArgs) -> Result<String> {
    let store = open(&args.store).await?;
    let setting = parse_stored_setting(&args.setting)?;
    let device = default_device(args.device).await?;
    let lut = load_lut(&store, &device, &setting).await?;
    if lut.entries().is_empty() {
        bail!("no entries for device `{device}` under {}", setting.key());
    }
    let text = match args.format {
        Format::Json => {
            let row = store.get_device(&device).await?;
            let doc = LutDocument {
                format: FORMAT.into(),
                version: 1,
                device: device.clone(),
                device_name: row.as_ref().map(|d| d.name.clone()),
                device_kind: row.as_ref().map(|d| d.kind.clone()),
                device_info: row.map(|d| d.info).unwrap_or_default(),
                setting,
                entries: lut.entries().to_vec(),
                calibration: lut.calibration().copied(),
            };
            serde_json::to_string_pretty(&doc)? + "\n"
        }
        Format::Csv => {
            let mut s = format!("{CSV_HEADER}\n");
            for e in lut.entries() {
                writeln!(
                    s,
                    "{},{},{},{},{},{},{}",
                    csv_field(&device),
                    csv_field(&setting.key()),
                    csv_field(&e.op.to_string()),
                    e.median_ms,
                    e.p10_ms,
                    e.p90_ms,
                    e.repeats
                )?;
            }
            s
        }
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!("wrote {} entries to {}\n", lut.entries().len(), path.display()))
        }
        None => Ok(text),
    }
}

/// Quotes a CSV field when it holds a comma or quote (keys and settings do).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Splits one CSV line with quoted fields; `None` on an unterminated quote.
fn csv_split(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut()?.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut()?.push(c),
        }
    }
    (!quoted).then_some(fields)
}

/// A parsed import: one device, and entries per setting.
type Imported = (String, Option<LutDocument>, BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)>);

fn parse_csv(text: &str, file: &str) -> Result<Imported> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.trim() == CSV_HEADER => {}
        Some((i, _)) => bail!("{file}: line {}: header must be `{CSV_HEADER}`", i + 1),
        None => bail!("{file}: empty file"),
    }
    let mut device: Option<String> = None;
    let mut tables: BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)> = BTreeMap::new();
    for (i, line) in lines {
        let at = |field: &str| format!("{file}: line {}, field {field}", i + 1);
        let fields =
            csv_split(line).with_context(|| format!("{file}: line {}: unterminated quote", i + 1))?;
        if fields.len() != 7 {
            bail!("{file}: line {}: expected 7 fields ({CSV_HEADER}), got {}", i + 1, fields.len());
        }
        match &device {
            Some(d) if *d != fields[0] => {
                bail!("{}: one file holds one device; `{}` differs from `{d}`", at("device"), fields[0])
            }
            _ => device = Some(fields[0].clone()),
        }
        let setting: DeploymentSetting = fields[1].parse().with_context(|| at("setting"))?;
        let op: OpShape = fields[2].parse().with_context(|| at("op_key"))?;
        let number = |k: usize, name: &str| -> Result<f64> {
            let v: f64 = fields[k]
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: `{}` is not a number", at(name), fields[k]))?;
            if !(v.is_finite() && v >= 0.0) {
                bail!("{}: must be a finite, non-negative number of milliseconds", at(name));
            }
            Ok(v)
        };
        let entry = LutEntry {
            op,
            median_ms: number(3, "median_ms")?,
            p10_ms: number(4, "p10_ms")?,
            p90_ms: number(5, "p90_ms")?,
            repeats: fields[6]
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: `{}` is not a whole number", at("repeats"), fields[6]))?,
        };
        tables.entry(setting.key()).or_insert((setting, Vec::new())).1.push(entry);
    }
    let device = device.with_context(|| format!("{file}: no entries"))?;
    Ok((device, None, tables))
}

fn parse_json(text: &str, file: &str) -> Result<Imported> {
    let doc: LutDocument = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("{file}: line {}, column {}: {e}", e.line(), e.column()))?;
    if doc.format != FORMAT || doc.version != 1 {
        bail!(
            "{file}: field format/version: expected `{FORMAT}` version 1, got `{}` version {}",
            doc.format,
            doc.version
        );
    }
    for (i, e) in doc.entries.iter().enumerate() {
        for (name, v) in [("median_ms", e.median_ms), ("p10_ms", e.p10_ms), ("p90_ms", e.p90_ms)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{file}: entries[{i}].{name}: must be a finite, non-negative number of milliseconds");
            }
        }
    }
    let mut tables = BTreeMap::new();
    tables.insert(doc.setting.key(), (doc.setting, doc.entries.clone()));
    Ok((doc.device.clone(), Some(doc), tables))
}

pub(super) async fn import(args: ImportArgs) -> Result<String> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {file}"))?;
    let is_csv = args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (device, doc, tables) = if is_csv { parse_csv(&text, &file)? } else { parse_json(&text, &file)? };
    let store = open(&args.store).await?;
    if store.get_device(&device).await?.is_none() || doc.is_some() {
        let (name, kind, info) = match &doc {
            Some(d) => (
                d.device_name.clone().unwrap_or_else(|| device.clone()),
                d.device_kind.clone().unwrap_or_else(|| "unknown".into()),
                d.device_info.clone(),
            ),
            None => (device.clone(), "unknown".into(), json!({})),
        };
        store.upsert_device(&NewDevice { fingerprint: device.clone(), name, kind, info }).await?;
    }
    let mut count = 0;
    for (setting, entries) in tables.values() {
        count += store.put_lut_entries(&rows(&device, setting, entries)).await?;
    }
    if let Some(c) = doc.as_ref().and_then(|d| d.calibration.map(|c| (d.setting, c))) {
        store
            .put_lut_calibration(
                &device,
                &c.0.key(),
                &serde_json::to_value(c.1)?,
                &json!({ "imported": file }),
            )
            .await?;
    }
    Ok(format!("imported {count} entries for device `{device}` ({} settings)\n", tables.len()))
}
