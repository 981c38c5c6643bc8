//! `frontier lut show`, and reading a stored table (entries and calibration) back from the store.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Args;
use coordinator::Store;
use lut::{Calibration, DeploymentSetting, GROUPS, Lut};

use super::{StoreArgs, default_device, open, parse_stored_setting};

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Device fingerprint; this machine's CPU when omitted.
    #[arg(long)]
    device: Option<String>,
    /// Show this setting's entries; all tables are listed when omitted.
    #[arg(long)]
    setting: Option<String>,
}

/// The stored table of a device and setting, with its calibration when one is stored.
pub(super) async fn load_lut(store: &Store, device: &str, setting: &DeploymentSetting) -> Result<Lut> {
    let rows = store.lut_entries(device, &setting.key()).await?;
    let calibration = match store.lut_calibration(device, &setting.key()).await? {
        Some(c) => Some(
            serde_json::from_value::<Calibration>(c.coefficients)
                .context("stored calibration is malformed")?,
        ),
        None => None,
    };
    Ok(coordinator::latency::table_from_rows(device, setting, &rows, calibration))
}

pub(super) async fn show(args: ShowArgs) -> Result<String> {
    let store = open(&args.store).await?;
    let mut out = String::new();
    let Some(setting) = args.setting else {
        let tables = store.lut_tables(args.device.as_deref()).await?;
        if tables.is_empty() {
            return Ok("no latency tables; run `frontier lut profile --setting ...` first\n".into());
        }
        writeln!(out, "{:<60} {:<40} {:>7}", "device", "setting", "entries")?;
        for t in tables {
            writeln!(out, "{:<60} {:<40} {:>7}", t.device, t.setting_key, t.entries)?;
        }
        return Ok(out);
    };
    let setting = parse_stored_setting(&setting)?;
    let device = default_device(args.device).await?;
    let lut = load_lut(&store, &device, &setting).await?;
    if lut.entries().is_empty() {
        bail!("no entries for device `{device}` under {}", setting.key());
    }
    writeln!(out, "device {device}, setting {}", setting.key())?;
    writeln!(
        out,
        "{:<72} {:>10} {:>10} {:>10} {:>7}",
        "operator", "median_ms", "p10_ms", "p90_ms", "repeats"
    )?;
    for e in lut.entries() {
        writeln!(
            out,
            "{:<72} {:>10.4} {:>10.4} {:>10.4} {:>7}",
            e.op.to_string(),
            e.median_ms,
            e.p10_ms,
            e.p90_ms,
            e.repeats
        )?;
    }
    match lut.calibration() {
        Some(c) => writeln!(out, "calibration: {}", describe(c))?,
        None => writeln!(out, "calibration: none (run `frontier lut validate`)")?,
    }
    Ok(out)
}

/// A calibration as a formula.
pub(super) fn describe(c: &Calibration) -> String {
    let scaled = match &c.group_scales {
        Some(g) => {
            GROUPS.iter().zip(g).map(|(name, s)| format!("{s:.4} × {name}")).collect::<Vec<_>>().join(" + ")
        }
        None => format!("{:.4} × raw", c.scale),
    };
    format!(
        "measured ≈ {scaled} + {:.4} ms × layers + {:.4} ms ({} samples)",
        c.per_layer_ms, c.constant_ms, c.samples
    )
}
