//! End-to-end measurement for `validate` and `depth-sweep`: decode latency of whole models, the
//! machine's load around it, and a table covering the models measured.

use anyhow::Result;
use coordinator::Store;
use lut::{DeploymentSetting, Lut, OpShape};
use search_space::ModelSpec;
use worker::decode::DecodeSetting;
use worker::profile::{ProfileConfig, fingerprint};
use worker::run::{DeviceChoice, decode_job};

use super::profile::profile_into;
use super::show::load_lut;

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A warning when other work was using the cores the measurement needs: the 1-minute load
/// average before measuring was above the cores left free by the compute threads (plus half a
/// core of slack). Such timings come out slower than the table's, and the figures mean little.
pub(super) fn busy_warning(load_before: &str) -> Option<String> {
    let load: f64 = load_before.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let free = cores.saturating_sub(worker::profile::compute_threads()) as f64;
    (load > free + 0.5).then(|| {
        format!(
            "warning: the load average before measuring ({load:.2}) shows other work on this machine's {cores} cores; \
             measured latencies are inflated and compared against a table profiled at another load. \
             Validate on an idle device, or with `--threads N` leaving cores free."
        )
    })
}

/// Measures one model's decode latency (the setting's decode steps after the prompt).
pub(super) fn measure(
    spec: &ModelSpec,
    setting: &DeploymentSetting,
    repeats: usize,
    device: DeviceChoice,
) -> Result<f64> {
    let decode = DecodeSetting {
        batch: setting.batch_size as usize,
        prompt_len: setting.prompt_tokens.max(1) as usize,
        gen_len: setting.generated_tokens as usize + 1,
        warmup: 1,
        repeats,
    };
    let (report, _) = decode_job(spec, decode, 0, device)?;
    Ok(report.generate_ms)
}

/// The table for these models, profiling first whatever it cannot score.
pub(super) async fn lut_covering(
    store: &Store,
    device: DeviceChoice,
    setting: &DeploymentSetting,
    models: &[ModelSpec],
) -> Result<(String, Lut)> {
    let fp = fingerprint(device)?.fingerprint;
    let lut = load_lut(store, &fp, setting).await?;
    let mut missing: Vec<OpShape> = Vec::new();
    for m in models {
        if let Err(e) = lut.estimate(m) {
            for s in e.missing {
                if !missing.contains(&s) {
                    missing.push(s);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok((fp, lut));
    }
    eprintln!("the table lacks {} operator shapes for these models; profiling them now", missing.len());
    profile_into(store, &missing, setting, ProfileConfig::default(), device).await?;
    Ok((fp.clone(), load_lut(store, &fp, setting).await?))
}
