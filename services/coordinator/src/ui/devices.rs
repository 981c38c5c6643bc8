//! Devices: their latency tables and the latest fidelity figures, with a measured-vs-estimated
//! scatter plot when the validation that produced them kept its cases.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::chart::{self, Axes, Frame, Scale, px};
use super::{UiError, UiReader, format, render_html};
use crate::app::AppState;

/// One fidelity line: how estimates tracked measurements.
#[derive(Debug)]
pub struct FidelityRow {
    pub label: &'static str,
    pub n: String,
    pub spearman: String,
    pub kendall: String,
    pub mape: String,
    pub within_10: String,
}

#[derive(Debug)]
pub struct ScatterMark {
    pub cx: String,
    pub cy: String,
    pub title: String,
}

#[derive(Debug)]
pub struct Scatter {
    pub axes: Axes,
    pub marks: Vec<ScatterMark>,
    /// The y = x diagonal.
    pub diagonal: String,
}

#[derive(Debug)]
pub struct TableView {
    pub setting: String,
    pub entries: i64,
    pub updated: String,
    pub calibrated: String,
    pub fidelity: Vec<FidelityRow>,
    pub scatter: Option<Scatter>,
}

#[derive(Debug)]
pub struct DeviceView {
    pub fingerprint: String,
    pub name: String,
    pub kind: String,
    pub registered: String,
    pub tables: Vec<TableView>,
}

#[derive(Debug)]
pub struct WorkerView {
    pub id: String,
    pub device: String,
    pub hostname: String,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    title: String,
    devices: Vec<DeviceView>,
    workers: Vec<WorkerView>,
}

fn fidelity_row(label: &'static str, f: Option<&Value>) -> Option<FidelityRow> {
    let f = f?.as_object()?;
    let num = |k: &str| f.get(k).and_then(Value::as_f64);
    let fixed = |v: Option<f64>, d: usize| {
        v.filter(|v| v.is_finite()).map_or("—".to_owned(), |v| format!("{v:.d$}"))
    };
    Some(FidelityRow {
        label,
        n: f.get("n").and_then(Value::as_u64).map_or("—".to_owned(), |n| n.to_string()),
        spearman: fixed(num("spearman"), 3),
        kendall: fixed(num("kendall_tau"), 3),
        mape: num("mape_pct").filter(|v| v.is_finite()).map_or("—".to_owned(), |v| format!("{v:.1} %")),
        within_10: num("within_10pct")
            .filter(|v| v.is_finite())
            .map_or("—".to_owned(), |v| format!("{:.0} %", 100.0 * v)),
    })
}

/// Measured against the leave-one-out calibrated estimate of each validated architecture.
fn scatter(cases: &[Value]) -> Option<Scatter> {
    let points: Vec<(f64, f64, String)> = cases
        .iter()
        .filter_map(|c| {
            let measured = c.get("measured_ms")?.as_f64()?;
            let estimated = c.get("loo_ms").or_else(|| c.get("calibrated_ms"))?.as_f64()?;
            let what = format!(
                "{} · hidden {}",
                c.get("pattern").and_then(Value::as_str).unwrap_or("?"),
                c.get("hidden").and_then(Value::as_u64).unwrap_or(0)
            );
            (measured.is_finite() && estimated.is_finite()).then_some((measured, estimated, what))
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let frame = Frame::new(420.0, 320.0);
    // One scale for both axes so the diagonal is y = x.
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0).min(p.1), hi.max(p.0).max(p.1)));
    let xs = Scale::nice(lo, hi, frame.x0(), frame.x1());
    let ys = Scale { r0: frame.y0(), r1: frame.y1(), ..xs };
    let marks = points
        .iter()
        .map(|(m, e, what)| ScatterMark {
            cx: px(xs.map(*m)),
            cy: px(ys.map(*e)),
            title: format!("{what}: measured {m:.2} ms, estimated {e:.2} ms"),
        })
        .collect();
    Some(Scatter {
        diagonal: chart::polyline([(xs.map(xs.d0), ys.map(xs.d0)), (xs.map(xs.d1), ys.map(xs.d1))]),
        axes: Axes::new(frame, &xs, &ys, "measured (ms)", "estimated (ms)"),
        marks,
    })
}

pub async fn list(_: UiReader, State(state): State<AppState>) -> Result<Response, UiError> {
    let mut devices = Vec::new();
    for d in state.store.devices().await? {
        let mut tables = Vec::new();
        for t in state.store.lut_tables(Some(&d.fingerprint)).await? {
            let calibration = state.store.lut_calibration(&d.fingerprint, &t.setting_key).await?;
            let fidelity = calibration.as_ref().map(|c| &c.fidelity);
            let rows = [
                ("uncalibrated", "raw"),
                ("calibrated (fit)", "calibrated"),
                ("calibrated (leave-one-out)", "calibrated_leave_one_out"),
            ]
            .into_iter()
            .filter_map(|(label, key)| fidelity_row(label, fidelity.and_then(|f| f.get(key))))
            .collect();
            let cases = fidelity.and_then(|f| f.get("cases")).and_then(Value::as_array);
            tables.push(TableView {
                setting: t.setting_key,
                entries: t.entries,
                updated: format::utc(t.updated_at_ms),
                calibrated: calibration
                    .as_ref()
                    .map_or("no".to_owned(), |c| format!("yes, {}", format::utc(c.created_at_ms))),
                fidelity: rows,
                scatter: cases.and_then(|c| scatter(c)),
            });
        }
        devices.push(DeviceView {
            fingerprint: d.fingerprint,
            name: d.name,
            kind: d.kind,
            registered: format::utc(d.created_at_ms),
            tables,
        });
    }
    let workers = state
        .store
        .list_workers()
        .await?
        .into_iter()
        .map(|(id, device, hostname, last_seen)| WorkerView {
            id,
            device,
            hostname,
            last_seen: format::utc(last_seen),
        })
        .collect();
    Ok(render_html(&DevicesPage { title: "Devices".to_owned(), devices, workers }))
}
