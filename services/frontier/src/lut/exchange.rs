//! `frontier lut export` and `frontier lut import`: one table moved between machines as a JSON
//! document or CSV rows.

use std::collections::BTreeMap;
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
use crate::service::csv_text;

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
        Format::Csv => csv_text(
            &CSV_HEADER.split(',').collect::<Vec<_>>(),
            lut.entries().iter().map(|e| {
                vec![
                    device.clone(),
                    setting.key(),
                    e.op.to_string(),
                    e.median_ms.to_string(),
                    e.p10_ms.to_string(),
                    e.p90_ms.to_string(),
                    e.repeats.to_string(),
                ]
            }),
        )?,
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!("wrote {} entries to {}\n", lut.entries().len(), path.display()))
        }
        None => Ok(text),
    }
}

/// A parsed import: one device, and entries per setting.
type Imported = (String, Option<LutDocument>, BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)>);

/// Reads CSV rows written by `export`. Blank lines are skipped; the first other line must be the
/// header. A row's quotes must close on its own line, as `export` writes them.
fn parse_csv(text: &str, file: &str) -> Result<Imported> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut header_seen = false;
    let mut device: Option<String> = None;
    let mut tables: BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)> = BTreeMap::new();
    // Line breaks in `text[..counted]`, counted as the reader moves on, for the line numbers.
    let (mut counted, mut breaks) = (0, 0);
    loop {
        let start = reader.position().byte() as usize;
        if !reader.read_record(&mut record).with_context(|| format!("{file}: not CSV"))? {
            break;
        }
        // The record's text: the reader's span less the blank lines it skipped before the record
        // and the line break after it.
        let span = &text[start..reader.position().byte() as usize];
        let body = span.trim_start_matches(['\r', '\n']);
        let body_start = start + span.len() - body.len();
        breaks += text[counted..body_start].matches('\n').count();
        counted = body_start;
        let line = breaks + 1;
        let raw = body.trim_end_matches(['\r', '\n']);
        if raw.trim().is_empty() {
            continue;
        }
        if !header_seen {
            if raw.trim() != CSV_HEADER {
                bail!("{file}: line {line}: header must be `{CSV_HEADER}`");
            }
            header_seen = true;
            continue;
        }
        if raw.contains('\n') || raw.matches('"').count() % 2 == 1 {
            bail!("{file}: line {line}: unterminated quote");
        }
        let at = |field: &str| format!("{file}: line {line}, field {field}");
        let fields: Vec<&str> = record.iter().collect();
        if fields.len() != 7 {
            bail!("{file}: line {line}: expected 7 fields ({CSV_HEADER}), got {}", fields.len());
        }
        match &device {
            Some(d) if *d != fields[0] => {
                bail!("{}: one file holds one device; `{}` differs from `{d}`", at("device"), fields[0])
            }
            _ => device = Some(fields[0].to_owned()),
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
    if !header_seen {
        bail!("{file}: empty file");
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

#[cfg(test)]
mod tests {
    use super::*;

    const SETTING: &str = "batch=1,prompt=4,gen=4,dtype=f32";
    const OP: &str = "ffn:hidden=64,intermediate=192";

    fn row(device: &str, median: &str) -> String {
        format!("{device},\"{SETTING}\",\"{OP}\",{median},0.1,0.1,3")
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse_csv(text, "t.csv").unwrap_err())
    }

    #[test]
    fn exported_rows_with_commas_and_quotes_read_back() {
        let device = "cpu \"x\", 2 cores";
        let text = csv_text(
            &CSV_HEADER.split(',').collect::<Vec<_>>(),
            [vec![
                device.into(),
                SETTING.into(),
                OP.into(),
                "0.25".into(),
                "0.2".into(),
                "0.3".into(),
                "5".into(),
            ]],
        )
        .unwrap();
        assert_eq!(
            text,
            format!("{CSV_HEADER}\n\"cpu \"\"x\"\", 2 cores\",\"{SETTING}\",\"{OP}\",0.25,0.2,0.3,5\n")
        );
        let (got, doc, tables) = parse_csv(&text, "t.csv").unwrap();
        assert_eq!(got, device);
        assert!(doc.is_none());
        let (setting, entries) = &tables[SETTING];
        assert_eq!(setting.key(), SETTING);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].op.to_string(), OP);
        assert_eq!(
            (entries[0].median_ms, entries[0].p10_ms, entries[0].p90_ms, entries[0].repeats),
            (0.25, 0.2, 0.3, 5)
        );
    }

    #[test]
    fn errors_name_the_line_counting_blank_ones() {
        let text = format!("\n{CSV_HEADER}\r\n\n{}\n   \n{}\n", row("cpu", "0.1"), row("cpu", "fast"));
        assert!(
            error(&text).contains("t.csv: line 6, field median_ms: `fast` is not a number"),
            "{}",
            error(&text)
        );
        let text = format!("{CSV_HEADER}\n{}\ncpu,\"{SETTING}\n{}\n", row("cpu", "0.1"), row("cpu", "0.1"));
        assert!(error(&text).contains("t.csv: line 3: unterminated quote"), "{}", error(&text));
        let text = format!("{CSV_HEADER}\n{}\n{}\n", row("cpu", "0.1"), row("gpu", "0.1"));
        assert!(error(&text).contains("line 3, field device: one file holds one device"), "{}", error(&text));
        let text = format!("{CSV_HEADER}\ncpu,{SETTING}\n");
        assert!(error(&text).contains("line 2: expected 7 fields"), "{}", error(&text));
        assert!(error("\n  \n").contains("t.csv: empty file"));
        assert!(
            error(&format!("\ndevice,setting\n{}\n", row("cpu", "0.1"))).contains("line 2: header must be")
        );
        assert!(error(&format!("{CSV_HEADER}\n\n")).contains("t.csv: no entries"));
    }
}
