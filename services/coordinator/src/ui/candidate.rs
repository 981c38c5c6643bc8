//! One candidate: the layer strip, its dimensions and per-layer latency, the loss curve, lineage,
//! trials and export links.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use search_space::{Architecture, LayerSpec, ModelSpec, Topology};
use serde_json::Value;

use super::chart::{self, Axes, Frame, px};
use super::searches::LineChart;
use super::{UiError, UiPath, UiReader, format, render_html};
use crate::app::AppState;
use crate::app::candidates::export_document;
use crate::app::leaderboard::entry;
use crate::store::{CandidateRow, TrialEventRow, TrialRow};

/// One block of the layer strip.
#[derive(Debug)]
pub struct Block {
    pub index: usize,
    pub code: &'static str,
    /// CSS class of the operator's colour.
    pub class: &'static str,
    pub title: String,
}

/// A stage of the strip: a label and its blocks.
#[derive(Debug)]
pub struct StageView {
    pub label: String,
    pub blocks: Vec<Block>,
}

/// One row of the layer table.
#[derive(Debug)]
pub struct LayerRow {
    pub index: usize,
    pub kind: &'static str,
    pub class: &'static str,
    pub dims: String,
    pub params: String,
    pub latency: String,
    /// Share of the model's decode latency, as a percentage for the bar's width.
    pub share: String,
}

#[derive(Debug)]
pub struct LineageRow {
    pub id: i64,
    pub ppl: String,
    pub mutation: String,
}

#[derive(Debug)]
pub struct TrialView {
    pub id: i64,
    pub rung: i64,
    pub budget_tokens: String,
    pub state: &'static str,
    pub attempt: String,
    pub worker: String,
    pub ppl: String,
    pub updated: String,
}

/// One line of a candidate's trial history.
#[derive(Debug)]
pub struct HistoryRow {
    pub at: String,
    pub trial: i64,
    pub kind: String,
    pub attempt: String,
    pub worker: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct Fact {
    pub label: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "candidate.html")]
struct CandidatePage {
    title: String,
    id: i64,
    search_id: i64,
    search_name: String,
    name: Option<String>,
    pattern: String,
    status: &'static str,
    feasible: bool,
    facts: Vec<Fact>,
    stages: Vec<StageView>,
    layer_count: usize,
    layers: Vec<LayerRow>,
    embed_head: String,
    breakdown_note: Option<String>,
    loss: Option<LineChart>,
    accuracy: Vec<Fact>,
    lineage: Vec<LineageRow>,
    mutation: Option<String>,
    trials: Vec<TrialView>,
    history: Vec<HistoryRow>,
    nemotron_flash: Result<(), String>,
    error: Option<String>,
}

fn op_class(code: &str) -> &'static str {
    match code {
        "A" => "op-a",
        "M2" => "op-m2",
        "D" => "op-d",
        "GD" => "op-gd",
        "F" => "op-f",
        _ => "op-x",
    }
}

/// Every dimension of a layer, `name value` pairs from its spec (the kind is the row's label).
fn dims(layer: &LayerSpec) -> String {
    let Ok(Value::Object(map)) = serde_json::to_value(layer) else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut push = |key: &str, value: &Value| match value {
        Value::Null => {}
        Value::String(s) => parts.push(format!("{key} {s}")),
        other => parts.push(format!("{key} {other}")),
    };
    for (key, value) in &map {
        match value {
            Value::Object(inner) => inner.iter().for_each(|(k, v)| push(k, v)),
            _ if key == "op" => {}
            v => push(key, v),
        }
    }
    parts.join(", ")
}

/// The strip: a genome's stages (block pattern × repeats), or one group for a layer list.
fn stages(arch: &Architecture, model: &ModelSpec, costs: Option<&[f64]>) -> Vec<StageView> {
    let block = |index: usize| {
        let layer = &model.layers[index];
        let code = layer.kind().code();
        let cost = costs
            .and_then(|c| c.get(index))
            .map_or_else(String::new, |ms| format!(" · {}", format::ms(Some(*ms))));
        Block {
            index,
            code,
            class: op_class(code),
            title: format!("layer {index}: {}{cost}", layer.kind().name()),
        }
    };
    match &arch.topology {
        Topology::Genome(g) => {
            let mut next = 0;
            g.stages
                .iter()
                .enumerate()
                .map(|(i, stage)| {
                    let ops = stage.block.operators();
                    let count = ops.len() * stage.blocks as usize;
                    let pattern: Vec<&str> = ops.iter().map(|o| o.code()).collect();
                    let blocks = (next..(next + count).min(model.layers.len())).map(block).collect();
                    next += count;
                    StageView {
                        label: format!("stage {} · [{}] × {}", i + 1, pattern.join(" "), stage.blocks),
                        blocks,
                    }
                })
                .collect()
        }
        Topology::Layers(_) => {
            vec![StageView {
                label: "layers".to_owned(),
                blocks: (0..model.layers.len()).map(block).collect(),
            }]
        }
    }
}

/// Most points of a loss curve drawn: results stored before curves were capped may hold far more,
/// and a page should not grow with them.
const MAX_PLOTTED_POINTS: usize = 512;

/// At most about `n` of `points`, evenly spaced, always keeping the first and the last.
fn thinned(points: Vec<(f64, f64)>, n: usize) -> Vec<(f64, f64)> {
    if points.len() <= n {
        return points;
    }
    let stride = points.len().div_ceil(n);
    let last = points[points.len() - 1];
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(stride).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

fn loss_chart(metrics: Option<&Value>) -> Option<LineChart> {
    let curve = metrics?.get("loss_curve")?.as_array()?;
    let points: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if points.is_empty() {
        return None;
    }
    let points = thinned(points, MAX_PLOTTED_POINTS);
    let frame = Frame::new(560.0, 240.0);
    let (x, y) = chart::scales_for(&frame, &points, &[]);
    Some(LineChart {
        line: chart::polyline(points.iter().map(|&(a, b)| (x.map(a), y.map(b)))),
        axes: Axes::new(frame, &x, &y, "step", "training loss"),
        empty: false,
    })
}

fn history_row(e: &TrialEventRow) -> HistoryRow {
    let text = |key: &str| e.payload.get(key).and_then(Value::as_str).map(str::to_owned);
    let detail = match e.kind.as_str() {
        "done" | "diverged" => e.payload.get("ppl").and_then(Value::as_f64).map(|p| format!("PPL {p:.3}")),
        "resumed" => e.payload.get("step").and_then(Value::as_u64).map(|s| format!("resumed at step {s}")),
        "checkpoint_skipped" | "checkpoint_failed" => text("message"),
        _ => text("error"),
    };
    HistoryRow {
        at: format::utc(e.at_ms),
        trial: e.trial_id,
        kind: e.kind.clone(),
        attempt: e.payload.get("attempt").and_then(Value::as_i64).map_or_else(String::new, |a| a.to_string()),
        worker: text("worker_id").unwrap_or_default(),
        detail: detail.unwrap_or_default(),
    }
}

fn trial_view(t: &TrialRow) -> TrialView {
    TrialView {
        id: t.id,
        rung: t.rung,
        budget_tokens: format::count(t.budget_tokens),
        state: t.state.as_str(),
        attempt: format!("{} / {}", t.attempt, t.max_attempts),
        worker: t.worker_id.clone().unwrap_or_else(|| "—".to_owned()),
        ppl: format::ppl(t.ppl),
        updated: format::utc(t.updated_at_ms),
    }
}

pub async fn show(
    _: UiReader,
    State(state): State<AppState>,
    UiPath(id): UiPath<i64>,
) -> Result<Response, UiError> {
    let c = state
        .store
        .get_candidate(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("candidate {id} does not exist")))?;
    let search = state
        .store
        .get_search(c.search_id)
        .await?
        .ok_or_else(|| UiError::Internal(format!("candidate {id} names a missing search")))?;
    let arch: Architecture = serde_json::from_value(c.architecture.clone()).map_err(|e| {
        UiError::Internal(format!("stored architecture of candidate {id} does not parse: {e}"))
    })?;
    let model =
        arch.expand().map_err(|e| UiError::Internal(format!("candidate {id} does not expand: {e}")))?;
    let setting_text =
        search.spec.pointer("/target/setting").and_then(Value::as_str).unwrap_or_default().to_owned();
    let device = search.spec.pointer("/target/device").and_then(Value::as_str).map(str::to_owned);
    let setting = setting_text.parse::<lut::DeploymentSetting>().ok();
    // The per-layer breakdown from the search's latency table, or why there is none.
    let breakdown = match &setting {
        None => Err(format!("the search's setting `{setting_text}` does not parse")),
        Some(s) => match crate::latency::load_table(&state.store, device.as_deref(), s).await? {
            Ok(Some(table)) => table.breakdown(&model).map_err(|e| e.to_string()),
            Ok(None) => Err(format!("no latency table for `{}`", s.key())),
            Err(reason) => Err(reason),
        },
    };
    let costs = breakdown.as_ref().ok();
    let total = costs.map(|b| b.raw_ms()).filter(|t| *t > 0.0);
    let layers = model
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let ms = costs.and_then(|b| b.layers_ms.get(i).copied());
            LayerRow {
                index: i,
                kind: layer.kind().name(),
                class: op_class(layer.kind().code()),
                dims: dims(layer),
                params: format::count(i64::try_from(layer.params(model.hidden_size)).unwrap_or(i64::MAX)),
                latency: format::ms(ms),
                share: px(ms.zip(total).map_or(0.0, |(m, t)| 100.0 * m / t)),
            }
        })
        .collect();
    let mut lineage = Vec::new();
    let mut parent = c.parent_id;
    while let Some(pid) = parent {
        if lineage.len() >= 1000 {
            break;
        }
        let Some(p) = state.store.get_candidate(pid).await? else { break };
        parent = p.parent_id;
        lineage.push(LineageRow {
            id: p.id,
            ppl: format::ppl(p.ppl),
            mutation: p.mutation.unwrap_or_default(),
        });
    }
    let trials = state.store.candidate_trials(id).await?;
    let history = state.store.candidate_history(id, crate::app::candidates::HISTORY_LIMIT).await?;
    let e = entry(&c);
    let context = setting.map(|s| s.context_tokens());
    let facts = facts(&c, &model, context);
    // Each task's accuracy, with the search's floor for it when there is one.
    let floors = api::AccuracyGoals::of_spec(&search.spec).min;
    let accuracy = c
        .accuracy()
        .unwrap_or_default()
        .into_iter()
        .map(|(task, a)| {
            let floor = match floors.get(&task) {
                Some(f) if a < *f => format!(" — below the floor of {f:.3}"),
                Some(f) => format!(" (floor {f:.3})"),
                None => String::new(),
            };
            Fact { label: "", value: format!("{task}: {a:.3}{floor}") }
        })
        .collect();
    let page = CandidatePage {
        title: format!("Candidate {id}"),
        id,
        search_id: c.search_id,
        search_name: search.name,
        name: e.name,
        pattern: e.pattern,
        status: c.status.as_str(),
        feasible: c.feasible,
        facts,
        layer_count: model.layers.len(),
        stages: stages(&arch, &model, costs.map(|b| b.layers_ms.as_slice())),
        layers,
        embed_head: format::ms(costs.map(|b| b.embed_head_ms)),
        breakdown_note: breakdown.as_ref().err().cloned(),
        loss: loss_chart(c.metrics.as_ref()),
        accuracy,
        lineage,
        mutation: c.mutation.clone(),
        trials: trials.iter().map(trial_view).collect(),
        history: history.iter().map(history_row).collect(),
        nemotron_flash: export_document(&c, "nemotron-flash").map(|_| ()).map_err(|e| e.to_string()),
        error: c.error.clone(),
    };
    Ok(render_html(&page))
}

fn facts(c: &CandidateRow, model: &ModelSpec, context: Option<u64>) -> Vec<Fact> {
    let params = model.params();
    vec![
        Fact { label: "Hidden size", value: model.hidden_size.to_string() },
        Fact { label: "Layers", value: model.layers.len().to_string() },
        Fact { label: "Vocabulary", value: model.vocab_size.to_string() },
        Fact { label: "Meta tokens", value: model.meta_tokens.to_string() },
        Fact { label: "Parameters", value: format!("{} ({})", format::count(c.params), params.total) },
        Fact {
            label: "Decode memory",
            value: match context {
                Some(t) => format!("{} at {t} tokens of context", format::bytes(c.memory_bytes)),
                None => format::bytes(c.memory_bytes),
            },
        },
        Fact { label: "Estimated latency", value: format::ms(c.est_latency_ms) },
        Fact { label: "Measured latency", value: format::ms(c.measured_latency_ms) },
        Fact { label: "Validation PPL", value: format::ppl(c.ppl) },
        Fact { label: "Validation loss", value: c.val_loss.map_or("—".to_owned(), |l| format!("{l:.4}")) },
        Fact { label: "Rung", value: if c.rung < 0 { "—".to_owned() } else { c.rung.to_string() } },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_loss_curve_is_thinned_keeping_its_ends() {
        let points: Vec<(f64, f64)> = (0..150_000).map(|i| (f64::from(i), 1.0)).collect();
        let thin = thinned(points, MAX_PLOTTED_POINTS);
        assert!(thin.len() <= MAX_PLOTTED_POINTS + 1, "{}", thin.len());
        assert_eq!(thin.first(), Some(&(0.0, 1.0)));
        assert_eq!(thin.last(), Some(&(149_999.0, 1.0)));
        assert_eq!(thinned(vec![(1.0, 2.0)], 4), [(1.0, 2.0)]);
    }
}
