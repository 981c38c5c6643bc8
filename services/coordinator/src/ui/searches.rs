//! The searches list, one search's page (Pareto plot, progress plots, leaderboard table) and the
//! table as CSV.

use std::collections::{BTreeMap, HashSet};

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Axes, Frame, Scale, px};
use super::format;
use super::{UiError, UiPath, UiReader, query, render_html};
use crate::app::AppState;
use crate::app::leaderboard::{LeaderboardParams, entry, leaderboard_query, next_cursor};
use crate::clock::clock_ms;
use crate::pareto;
use crate::store::{
    CandidateRow, CursorValue, Evaluation, LeaderboardQuery, PlotPoint, ScalingFitRow, SearchRow, SortKey,
};

/// A search as the list and the page's header show it.
#[derive(Debug)]
pub struct SearchSummary {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub active: bool,
    pub algorithm: String,
    pub device: String,
    pub setting: String,
    pub budget_ms: Option<f64>,
    pub budget: String,
    /// The accuracy floors and maximised tasks, for people; empty without goals.
    pub goals: String,
    pub done: i64,
    pub queued: i64,
    pub running: i64,
    pub failed: i64,
    pub candidates: i64,
    pub generations: i64,
    pub best_ppl: String,
    pub best_id: Option<i64>,
    pub started: String,
    pub elapsed: String,
    pub error: Option<String>,
}

async fn summary(state: &AppState, row: &SearchRow) -> Result<SearchSummary, UiError> {
    let progress = state.store.search_progress(row.id).await?;
    let best = state.store.best_candidate(row.id).await?;
    let error = state.store.search_error(row.id).await?;
    let text = |pointer: &str| row.spec.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let budget_ms = row.spec.pointer("/target/latency_budget_ms").and_then(Value::as_f64);
    let trials = |state: &str| progress.trials.get(state).copied().unwrap_or(0);
    let active = matches!(row.status.as_str(), "pending" | "running");
    let end = if active { clock_ms() } else { row.updated_at_ms };
    Ok(SearchSummary {
        id: row.id,
        name: row.name.clone(),
        status: row.status.clone(),
        active,
        algorithm: text("/algorithm/kind").unwrap_or_default().replace('_', " "),
        device: text("/target/device").unwrap_or_else(|| "any".to_owned()),
        setting: text("/target/setting").unwrap_or_default(),
        budget_ms,
        budget: budget_ms.map_or_else(|| "none".to_owned(), |b| format::ms(Some(b))),
        goals: goals_text(&row.spec),
        done: trials("done"),
        queued: trials("queued"),
        running: trials("leased"),
        failed: trials("failed") + trials("diverged"),
        candidates: progress.candidates.values().sum(),
        generations: progress.generations,
        best_ppl: format::ppl(best.as_ref().and_then(|b| b.ppl)),
        best_id: best.map(|b| b.id),
        started: format::utc(row.created_at_ms),
        elapsed: format::duration(end - row.created_at_ms),
        error,
    })
}

/// `in_context_recall ≥ 0.900; maximise selective_copying`, or nothing.
fn goals_text(spec: &Value) -> String {
    let goals = api::AccuracyGoals::of_spec(spec);
    let mut parts: Vec<String> = goals.min.iter().map(|(t, f)| format!("{t} ≥ {f:.3}")).collect();
    if !goals.maximize.is_empty() {
        parts.push(format!("maximise {}", goals.maximize.join(", ")));
    }
    parts.join("; ")
}

#[derive(Template)]
#[template(path = "searches.html")]
struct SearchesPage {
    title: String,
    refresh_secs: u64,
    searches: Vec<SearchSummary>,
}

pub async fn list(_: UiReader, State(state): State<AppState>) -> Result<Response, UiError> {
    let rows = state.store.list_searches().await?;
    let mut searches = Vec::with_capacity(rows.len());
    for row in rows.iter().rev() {
        searches.push(summary(&state, row).await?);
    }
    let refresh_secs = if searches.iter().any(|s| s.active) { refresh_secs(&state) } else { 0 };
    Ok(render_html(&SearchesPage { title: "Searches".to_owned(), refresh_secs, searches }))
}

fn refresh_secs(state: &AppState) -> u64 {
    state.config.ui_refresh.as_secs().max(1)
}

/// The table's query string: the leaderboard's parameters plus the rank of the page's first row.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableParams {
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub feasible: Option<bool>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// Rank of the first row (pages after the first are reached by cursor, so the rank travels).
    #[serde(default)]
    pub start: Option<i64>,
}

impl TableParams {
    fn leaderboard(&self) -> Result<LeaderboardQuery, UiError> {
        let params = LeaderboardParams {
            sort: self.sort.clone(),
            order: self.order.clone(),
            feasible: self.feasible,
            limit: self.limit,
            cursor: self.cursor.clone(),
        };
        leaderboard_query(&params).map_err(|e| UiError::BadRequest(e.to_string()))
    }
}

/// One mark of the Pareto plot.
#[derive(Debug)]
pub struct Mark {
    pub id: i64,
    pub cx: String,
    pub cy: String,
    pub class: &'static str,
    pub title: String,
}

/// An unscored candidate, drawn as a tick on the strip above the plot at its latency.
#[derive(Debug)]
pub struct RugMark {
    pub id: i64,
    pub x: String,
    pub class: &'static str,
    pub title: String,
}

#[derive(Debug)]
pub struct ParetoChart {
    pub axes: Axes,
    pub marks: Vec<Mark>,
    pub rug: Vec<RugMark>,
    pub front_line: String,
    pub front_ids: Vec<i64>,
    pub budget_x: Option<String>,
    pub budget_label: String,
    /// `start` or `end`: the budget's label sits on the side of its line with room for it.
    pub budget_anchor: &'static str,
    /// Scored candidates without a latency estimate (not placed).
    pub unplaced: usize,
}

impl ParetoChart {
    pub fn rug_y0(&self) -> String {
        px(4.0)
    }

    pub fn rug_y1(&self) -> String {
        px(self.axes.frame.top - 8.0)
    }
}

const PARETO_FRAME: Frame =
    Frame { width: 760.0, height: 420.0, left: 58.0, right: 16.0, top: 34.0, bottom: 40.0 };

pub fn pareto_chart(points: &[PlotPoint], budget_ms: Option<f64>) -> ParetoChart {
    let frame = PARETO_FRAME;
    let placed: Vec<&PlotPoint> =
        points.iter().filter(|p| p.ppl.is_some() && p.est_latency_ms.is_some()).collect();
    let xy: Vec<(f64, f64)> =
        placed.iter().map(|p| (p.est_latency_ms.unwrap_or(0.0), p.ppl.unwrap_or(0.0))).collect();
    let rug_points: Vec<&PlotPoint> =
        points.iter().filter(|p| p.ppl.is_none() && p.est_latency_ms.is_some()).collect();
    let mut extra_x: Vec<f64> = rug_points.iter().filter_map(|p| p.est_latency_ms).collect();
    extra_x.extend(budget_ms);
    if xy.is_empty() && extra_x.is_empty() {
        extra_x.push(0.0);
    }
    let (x, y) = chart::scales_for(&frame, &xy, &extra_x);
    let front: Vec<&PlotPoint> = pareto::front(points);
    let front_ids: Vec<i64> = front.iter().map(|p| p.id).collect();
    let on_front: HashSet<i64> = front_ids.iter().copied().collect();
    // Front marks last, so they are drawn (and clicked) on top of the points they dominate.
    let mut placed = placed;
    placed.sort_by_key(|p| on_front.contains(&p.id));
    let marks = placed
        .iter()
        .map(|p| {
            let (lat, ppl) = (p.est_latency_ms.unwrap_or(0.0), p.ppl.unwrap_or(0.0));
            let class = match (on_front.contains(&p.id), p.feasible) {
                (true, true) => "pt front",
                (true, false) => "pt front infeasible",
                (false, true) => "pt",
                (false, false) => "pt infeasible",
            };
            Mark {
                id: p.id,
                cx: px(x.map(lat)),
                cy: px(y.map(ppl)),
                class,
                title: format!("#{} · PPL {ppl:.3} · {lat:.2} ms", p.id),
            }
        })
        .collect();
    let rug = rug_points
        .iter()
        .map(|p| {
            let lat = p.est_latency_ms.unwrap_or(0.0);
            RugMark {
                id: p.id,
                x: px(x.map(lat)),
                class: if p.feasible { "rug" } else { "rug infeasible" },
                title: format!("#{} · {} · {lat:.2} ms", p.id, p.status.as_str()),
            }
        })
        .collect();
    // The front as the staircase it bounds: each point holds until a faster-better one.
    let front_xy: Vec<(f64, f64)> = front.iter().filter_map(|p| Some((p.est_latency_ms?, p.ppl?))).collect();
    let front_line = chart::staircase(&front_xy, front_xy.last().map_or(0.0, |p| p.0), &x, &y);
    ParetoChart {
        axes: Axes::new(frame, &x, &y, "estimated decode latency (ms)", "validation perplexity"),
        marks,
        rug,
        front_line,
        front_ids,
        budget_x: budget_ms.map(|b| px(x.map(b))),
        budget_anchor: match budget_ms {
            Some(b) if x.map(b) > (frame.x0() + frame.x1()) / 2.0 => "end",
            _ => "start",
        },
        budget_label: budget_ms.map_or_else(String::new, |b| format!("budget {}", format::ms(Some(b)))),
        unplaced: points.iter().filter(|p| p.ppl.is_some() && p.est_latency_ms.is_none()).count(),
    }
}

/// A best-so-far curve.
#[derive(Debug)]
pub struct LineChart {
    pub axes: Axes,
    pub line: String,
    pub empty: bool,
}

const PROGRESS_FRAME: Frame = Frame::new(372.0, 240.0);

/// Best feasible perplexity after each evaluation, against the evaluation count and against
/// minutes since the search started.
pub fn progress_charts(evaluations: &[Evaluation], started_at_ms: i64) -> (LineChart, LineChart) {
    let mut best = f64::INFINITY;
    let mut by_count = Vec::new();
    let mut by_time = Vec::new();
    for (i, e) in evaluations.iter().enumerate() {
        if e.feasible && e.ppl < best {
            best = e.ppl;
            by_count.push(((i + 1) as f64, best));
            by_time.push(((e.finished_at_ms - started_at_ms).max(0) as f64 / 60_000.0, best));
        }
    }
    let n = evaluations.len() as f64;
    let minutes =
        evaluations.last().map_or(0.0, |e| (e.finished_at_ms - started_at_ms).max(0) as f64 / 60_000.0);
    let line = |points: &[(f64, f64)], end: f64, x_title: &str| {
        let frame = PROGRESS_FRAME;
        let (x, y) = chart::scales_for(&frame, points, &[0.0, end]);
        let x = Scale { d0: x.d0.max(0.0), ..x };
        LineChart {
            line: chart::staircase(points, end, &x, &y),
            axes: Axes::new(frame, &x, &y, x_title, "best feasible PPL"),
            empty: points.is_empty(),
        }
    };
    (line(&by_count, n, "evaluations"), line(&by_time, minutes, "minutes since start"))
}

/// One row of the leaderboard table.
#[derive(Debug)]
pub struct TableRow {
    pub rank: i64,
    pub id: i64,
    pub name: Option<String>,
    pub pattern: String,
    pub hidden: i64,
    pub params: String,
    pub memory: String,
    pub est: String,
    pub measured: String,
    pub ppl: String,
    pub rung: String,
    pub status: &'static str,
    pub feasible: bool,
    /// Accuracy on each of the search's synthetic tasks ([`Table::tasks`]), `—` before a result;
    /// `true` when below the task's floor.
    pub accuracy: Vec<(String, bool)>,
}

impl TableRow {
    fn of(rank: i64, c: &CandidateRow, goals: &TaskColumns) -> Self {
        let e = entry(c);
        let measured = c.accuracy().unwrap_or_default();
        let accuracy = goals
            .tasks
            .iter()
            .map(|t| match measured.get(t) {
                Some(a) => (format!("{a:.3}"), goals.floors.get(t).is_some_and(|f| a < f)),
                None => ("—".to_owned(), false),
            })
            .collect();
        Self {
            rank,
            id: c.id,
            name: e.name,
            pattern: e.pattern,
            hidden: c.hidden_size,
            params: format::count(c.params),
            memory: format::bytes(c.memory_bytes),
            est: format::ms(c.est_latency_ms),
            measured: format::ms(c.measured_latency_ms),
            ppl: format::ppl(c.ppl),
            rung: if c.rung < 0 { "—".to_owned() } else { c.rung.to_string() },
            status: c.status.as_str(),
            feasible: c.feasible,
            accuracy,
        }
    }
}

/// The synthetic tasks a search trains (one accuracy column each) and its accuracy floors.
#[derive(Debug, Default)]
pub struct TaskColumns {
    pub tasks: Vec<String>,
    pub floors: BTreeMap<String, f64>,
}

impl TaskColumns {
    fn of(spec: &Value) -> Self {
        let corpus = spec.pointer("/proxy/corpus").and_then(Value::as_str).unwrap_or_default();
        let mut tasks = api::accuracy::synthetic_tasks(corpus).unwrap_or_default();
        tasks.retain(|t| api::accuracy::SYNTHETIC_TASKS.contains(&t.as_str()));
        Self { tasks, floors: api::AccuracyGoals::of_spec(spec).min }
    }
}

/// A column header: a sort link when the column sorts.
#[derive(Debug)]
pub struct Header {
    pub label: &'static str,
    pub key: Option<&'static str>,
    pub href: String,
    /// `▲`, `▼` or nothing.
    pub arrow: &'static str,
    pub numeric: bool,
}

const COLUMNS: [(&str, Option<&str>, bool); 11] = [
    ("Rank", None, true),
    ("#", Some("id"), true),
    ("Pattern", None, false),
    ("Hidden", Some("hidden"), true),
    ("Params", Some("params"), true),
    ("Decode memory", Some("memory"), true),
    ("Est. latency", Some("latency"), true),
    ("Measured", Some("measured"), true),
    ("PPL", Some("ppl"), true),
    ("Rung", Some("rung"), true),
    ("Status", Some("status"), false),
];

/// A link to the search page with the given table state.
fn table_href(
    id: i64,
    sort: SortKey,
    descending: bool,
    feasible: bool,
    cursor: Option<(&str, i64)>,
) -> String {
    let mut href =
        format!("/ui/searches/{id}?sort={}&order={}", sort.name(), if descending { "desc" } else { "asc" });
    if feasible {
        href.push_str("&feasible=true");
    }
    if let Some((cursor, start)) = cursor {
        href.push_str(&format!("&cursor={}&start={start}", cursor.replace('+', "%2B")));
    }
    href.push_str("#leaderboard");
    href
}

#[derive(Debug)]
pub struct Table {
    pub headers: Vec<Header>,
    /// One accuracy column per synthetic task the search trains, after the others.
    pub tasks: Vec<String>,
    pub rows: Vec<TableRow>,
    pub sort: &'static str,
    pub feasible_only: bool,
    pub feasible_href: String,
    pub first_href: Option<String>,
    pub next_href: Option<String>,
    pub csv_href: String,
    pub note: &'static str,
}

/// One stored scaling-law fit of a sweep, as the search page lists it.
#[derive(Debug)]
pub struct FitLink {
    pub id: i64,
    pub form: String,
    pub created: String,
    pub n: String,
    pub r2: String,
}

impl FitLink {
    fn of(row: &ScalingFitRow) -> Self {
        let num = |key: &str| row.report.get(key).and_then(Value::as_f64);
        Self {
            id: row.id,
            form: row.form.clone(),
            created: format::utc(row.created_at_ms),
            n: row.report.get("n").and_then(Value::as_u64).map_or_else(|| "—".to_owned(), |n| n.to_string()),
            r2: num("r2").filter(|v| v.is_finite()).map_or_else(|| "—".to_owned(), |v| format!("{v:.4}")),
        }
    }
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    title: String,
    refresh_secs: u64,
    s: SearchSummary,
    pareto: ParetoChart,
    by_count: LineChart,
    by_time: LineChart,
    table: Table,
    /// A sweep's scaling-law fits, newest first; `None` for the other algorithms.
    fits: Option<Vec<FitLink>>,
    /// Rank agreement between consecutive halving rungs (empty without halving results).
    rungs: Vec<RungRow>,
}

/// One line of the rung-agreement table, formatted.
struct RungRow {
    rungs: String,
    tokens: String,
    n: usize,
    spearman: String,
    kendall: String,
}

impl RungRow {
    fn of(a: &crate::app::rungs::RungAgreement) -> Self {
        let with_interval = |v: Option<f64>, lo: Option<f64>, hi: Option<f64>| match (v, lo, hi) {
            (Some(v), Some(lo), Some(hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
            (Some(v), _, _) => format!("{v:.3}"),
            _ => "—".to_owned(),
        };
        Self {
            rungs: format!("{} → {}", a.from_rung, a.to_rung),
            tokens: format!("{} → {}", a.from_tokens, a.to_tokens),
            n: a.n,
            spearman: with_interval(a.spearman, a.spearman_low, a.spearman_high),
            kendall: with_interval(a.kendall_tau, a.kendall_low, a.kendall_high),
        }
    }
}

pub async fn show(
    _: UiReader,
    State(state): State<AppState>,
    UiPath(id): UiPath<i64>,
    params: Result<Query<TableParams>, QueryRejection>,
) -> Result<Response, UiError> {
    let params = query(params)?;
    let q = params.leaderboard()?;
    let row = search_row(&state, id).await?;
    let s = summary(&state, &row).await?;
    let points = state.store.search_points(id).await?;
    let pareto = pareto_chart(&points, s.budget_ms);
    let evaluations = state.store.search_evaluations(id).await?;
    let (by_count, by_time) = progress_charts(&evaluations, row.created_at_ms);
    let rows = state.store.leaderboard(id, &q).await?;
    let start = params.start.unwrap_or(1).max(1);
    let next = next_cursor(&rows, &q);
    let headers = COLUMNS
        .iter()
        .map(|&(label, key, numeric)| {
            let key = key.and_then(|k| SortKey::from_name(k).map(|s| (k, s)));
            let (href, arrow) = match key {
                Some((_, k)) if k == q.sort => (
                    table_href(id, k, !q.descending, q.feasible_only, None),
                    if q.descending { "▼" } else { "▲" },
                ),
                Some((_, k)) => (table_href(id, k, false, q.feasible_only, None), ""),
                None => (String::new(), ""),
            };
            Header { label, key: key.map(|k| k.0), href, arrow, numeric }
        })
        .collect();
    let columns = TaskColumns::of(&row.spec);
    let table = Table {
        headers,
        rows: rows.iter().enumerate().map(|(i, c)| TableRow::of(start + i as i64, c, &columns)).collect(),
        tasks: columns.tasks.iter().map(|t| format!("{t} acc.")).collect(),
        sort: q.sort.name(),
        feasible_only: q.feasible_only,
        feasible_href: table_href(id, q.sort, q.descending, !q.feasible_only, None),
        first_href: params
            .cursor
            .is_some()
            .then(|| table_href(id, q.sort, q.descending, q.feasible_only, None)),
        next_href: next.as_deref().map(|c| {
            table_href(id, q.sort, q.descending, q.feasible_only, Some((c, start + rows.len() as i64)))
        }),
        csv_href: format!(
            "/ui/searches/{id}/leaderboard.csv?sort={}&order={}{}",
            q.sort.name(),
            if q.descending { "desc" } else { "asc" },
            if q.feasible_only { "&feasible=true" } else { "" }
        ),
        note: match q.sort {
            SortKey::Ppl => "Scored candidates only.",
            SortKey::Measured => "Candidates with a measured latency only.",
            SortKey::Latency => "Candidates with a latency estimate only.",
            _ => "",
        },
    };
    let fits = if row.spec.pointer("/algorithm/kind").and_then(Value::as_str) == Some("sweep") {
        Some(state.store.list_scaling_fits(id).await?.iter().map(FitLink::of).collect())
    } else {
        None
    };
    let trials = state.store.search_trials(id).await?;
    let rungs = crate::app::rungs::rung_agreement(id, &trials).iter().map(RungRow::of).collect();
    let refresh_secs = if s.active { refresh_secs(&state) } else { 0 };
    Ok(render_html(&SearchPage {
        title: format!("Search {} · {}", s.id, s.name),
        refresh_secs,
        s,
        pareto,
        by_count,
        by_time,
        table,
        fits,
        rungs,
    }))
}

async fn search_row(state: &AppState, id: i64) -> Result<SearchRow, UiError> {
    state.store.get_search(id).await?.ok_or_else(|| UiError::NotFound(format!("search {id} does not exist")))
}

/// Every candidate of the table (all pages) as CSV, in the table's order, with the same filter.
pub async fn csv(
    _: UiReader,
    State(state): State<AppState>,
    UiPath(id): UiPath<i64>,
    params: Result<Query<TableParams>, QueryRejection>,
) -> Result<Response, UiError> {
    let params = query(params)?;
    let q = params.leaderboard()?;
    let columns = TaskColumns::of(&search_row(&state, id).await?.spec);
    let mut query = LeaderboardQuery { limit: 1000, after: None, ..q };
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "id",
        "name",
        "pattern",
        "hidden_size",
        "params",
        "memory_bytes",
        "est_latency_ms",
        "measured_latency_ms",
        "ppl",
        "val_loss",
        "rung",
        "status",
        "feasible",
        "parent_id",
        "mutation",
    ];
    let write_err = |e: csv::Error| UiError::Internal(format!("csv: {e}"));
    let header =
        header.into_iter().map(str::to_owned).chain(columns.tasks.iter().map(|t| format!("accuracy.{t}")));
    out.write_record(header).map_err(write_err)?;
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    loop {
        let rows = state.store.leaderboard(id, &query).await?;
        for c in &rows {
            let e = entry(c);
            let accuracy = c.accuracy().unwrap_or_default();
            let fields = [
                c.id.to_string(),
                e.name.unwrap_or_default(),
                e.pattern,
                c.hidden_size.to_string(),
                c.params.to_string(),
                c.memory_bytes.to_string(),
                opt(c.est_latency_ms),
                opt(c.measured_latency_ms),
                opt(c.ppl),
                opt(c.val_loss),
                c.rung.to_string(),
                c.status.as_str().to_owned(),
                c.feasible.to_string(),
                c.parent_id.map_or_else(String::new, |p| p.to_string()),
                c.mutation.clone().unwrap_or_default(),
            ];
            let tasks = columns.tasks.iter().map(|t| opt(accuracy.get(t).copied()));
            out.write_record(fields.into_iter().chain(tasks)).map_err(write_err)?;
        }
        match rows.last().filter(|_| rows.len() as i64 == query.limit) {
            Some(last) => {
                let value =
                    CursorValue::parse(query.sort, &query.sort.cursor_value(last)).ok_or_else(|| {
                        UiError::Internal(format!("row {} has no {} to page on", last.id, query.sort.name()))
                    })?;
                query.after = Some((value, last.id));
            }
            None => break,
        }
    }
    let body = out.into_inner().map_err(|e| UiError::Internal(format!("csv: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"search-{id}-leaderboard.csv\"")),
        ],
        body,
    )
        .into_response())
}
