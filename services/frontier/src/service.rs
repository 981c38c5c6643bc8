//! The service roles and the client commands: `serve` (the coordinator), `worker` (the pull loop),
//! and `submit`, `status`, `leaderboard`, `export`, which talk to a coordinator over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::SearchSpec;
use clap::Args;
use coordinator::app::ApiConfig;
use coordinator::server::{Application, shutdown_signal};
use serde_json::Value;
use worker::backend::Precision;
use worker::pull::{Worker, WorkerConfig};
use worker::run::{DeviceChoice, DeviceSet};

/// `frontier serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Storage URL: `sqlite://PATH` or `postgres://USER@HOST/DB`.
    #[arg(long, env = "FRONTIER_DATABASE_URL", default_value = "sqlite://frontier.db")]
    database_url: String,
    /// Address to listen on.
    #[arg(long, env = "FRONTIER_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Token for creating and cancelling searches.
    #[arg(long, env = "FRONTIER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Token workers present.
    #[arg(long, env = "FRONTIER_WORKER_TOKEN", hide_env_values = true)]
    worker_token: String,
    /// Require a token for read endpoints too.
    #[arg(long, env = "FRONTIER_PROTECT_READS")]
    protect_reads: bool,
    /// Seconds a lease lasts without a heartbeat.
    #[arg(long, env = "FRONTIER_LEASE_TTL_S", default_value_t = 60)]
    lease_ttl_s: u64,
    /// Seconds a request may take, body included, before it is answered 408 (lease long-polls
    /// wait at most half of it).
    #[arg(long, env = "FRONTIER_REQUEST_TIMEOUT_S", default_value_t = 60)]
    request_timeout_s: u64,
    /// Seconds a connection may take to send a request's headers, or stay idle between
    /// requests, before it is closed.
    #[arg(long, env = "FRONTIER_HEADER_TIMEOUT_S", default_value_t = 10)]
    header_timeout_s: u64,
    /// Most connections served at once.
    #[arg(long, env = "FRONTIER_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Most requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "FRONTIER_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Mark the web UI's sign-in cookie Secure (it is whenever a proxy sends
    /// `X-Forwarded-Proto: https`).
    #[arg(long, env = "FRONTIER_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Folder of tabular benchmarks (`NAME.json.gz`, from `frontier table build`): a search whose
    /// `proxy.corpus` is `table:NAME` is answered from it instead of trained.
    #[arg(long, env = "FRONTIER_TABLE_DIR")]
    table_dir: Option<PathBuf>,
}

fn check_token(name: &str, token: &str) -> Result<()> {
    if token.len() < 8 {
        bail!("{name} must be at least 8 characters");
    }
    Ok(())
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub fn serve(args: ServeArgs) -> Result<String> {
    check_token("--admin-token", &args.admin_token)?;
    check_token("--worker-token", &args.worker_token)?;
    if args.admin_token == args.worker_token {
        bail!("--admin-token and --worker-token must differ: workers must not be able to create searches");
    }
    if args.lease_ttl_s == 0 {
        bail!("--lease-ttl-s must be at least 1");
    }
    if args.request_timeout_s < 2 || args.header_timeout_s == 0 {
        bail!("--request-timeout-s must be at least 2 and --header-timeout-s at least 1");
    }
    if args.max_connections == 0 || args.max_concurrent_requests == 0 {
        bail!("--max-connections and --max-concurrent-requests must be at least 1");
    }
    init_tracing();
    runtime()?.block_on(async {
        let store = coordinator::Store::connect(&args.database_url).await.context("cannot open the store")?;
        let mut config = ApiConfig::new(args.admin_token, args.worker_token);
        config.protect_reads = args.protect_reads;
        config.lease_ttl = Duration::from_secs(args.lease_ttl_s);
        config.request_timeout = Duration::from_secs(args.request_timeout_s);
        config.header_read_timeout = Duration::from_secs(args.header_timeout_s);
        config.max_connections = args.max_connections;
        config.max_concurrent_requests = args.max_concurrent_requests;
        config.secure_cookies = args.secure_cookies;
        config.table_dir = args.table_dir;
        let app = Application::build(store, config, args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        tracing::info!(addr = %app.local_addr(), backend = %app.state().store.backend(), "coordinator listening");
        eprintln!("web UI: http://{}/ui", app.local_addr());
        app.run_until_stopped(shutdown_signal()).await.context("server failed")?;
        Ok(String::new())
    })
}

/// `frontier worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Coordinator base URL.
    #[arg(long, env = "FRONTIER_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// The coordinator's worker token.
    #[arg(long, env = "FRONTIER_WORKER_TOKEN", hide_env_values = true)]
    token: String,
    /// A stable id for this worker; defaults to HOSTNAME-PID.
    #[arg(long, env = "FRONTIER_WORKER_ID")]
    worker_id: Option<String>,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature; cuda:0,1,2,3 trains every
    /// trial data parallel over those GPUs (its batch split evenly between them).
    #[arg(long, env = "FRONTIER_DEVICE", default_value = "cpu")]
    device: DeviceSet,
    /// Float type every trial trains in: f32, or bf16 (half the memory; the GPU's bf16 tensor
    /// cores). Reported with each result's device.
    #[arg(long, env = "FRONTIER_PRECISION", default_value = "f32")]
    precision: Precision,
    /// Cache for tokenized corpora and trained tokenizers.
    #[arg(long, env = "FRONTIER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Folder that `proxy.corpus` paths in search specs are read from, and confined to (default:
    /// the working directory), e.g. where a container mounts its data.
    #[arg(long, env = "FRONTIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where trials save checkpoints when their spec sets `proxy.checkpoint_every`: local disk,
    /// or a shared file system so another worker resumes a trial this one did not finish.
    /// Without it, trials are trained without checkpoints.
    #[arg(long, env = "FRONTIER_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Stop after this many completed trials (default: run until stopped).
    #[arg(long)]
    max_trials: Option<u64>,
}

/// The device description this build reports for `device`.
pub fn device_info(device: DeviceChoice) -> Result<api::DeviceInfo> {
    Ok(worker::profile::fingerprint(device)?)
}

pub fn worker(args: WorkerArgs) -> Result<String> {
    if let Some(dir) = &args.data_dir
        && !dir.is_dir()
    {
        bail!("--data-dir {} is not a folder", dir.display());
    }
    init_tracing();
    let worker_id = args.worker_id.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    // Before anything runs on the devices: burn fixes a device's float type at its first tensor.
    worker::run::set_precision(&args.device, args.precision)?;
    let primary = args.device.primary();
    let config = WorkerConfig {
        coordinator: args.coordinator,
        token: args.token,
        worker_id,
        device: args.device,
        cache_dir: Some(args.cache_dir.unwrap_or_else(|| std::env::temp_dir().join("frontier-cache"))),
        data_dir: args.data_dir,
        checkpoint_dir: args.checkpoint_dir,
        lease_wait: Duration::from_secs(20),
        max_backoff: Duration::from_secs(10),
    };
    let info = device_info(primary)?;
    runtime()?.block_on(async move {
        let mut worker = Worker::new(config, info);
        let stop = worker.stop_flag();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping after the current trial");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let done = worker.run(args.max_trials).await?;
        Ok(format!("worker stopped after {done} completed trials\n"))
    })
}

/// Where a client command finds the coordinator.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Coordinator base URL.
    #[arg(long, env = "FRONTIER_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    coordinator: String,
    /// Token: the admin token to submit; any token for reads when the coordinator protects them.
    #[arg(long, env = "FRONTIER_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    pub(crate) fn blocking(&self) -> Result<Client> {
        Ok(Client { base: self.coordinator.trim_end_matches('/').to_owned(), token: self.token.clone() })
    }
}

/// A small blocking-style client over the async one.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        runtime()?.block_on(async {
            let mut req = reqwest::Client::new().request(method, &url).timeout(Duration::from_secs(60));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let response =
                req.send().await.with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
            let status = response.status().as_u16();
            Ok((status, response.text().await.unwrap_or_default()))
        })
    }

    pub(crate) fn json(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            let message = match serde_json::from_str::<api::ErrorBody>(&text) {
                Ok(e) if e.fields.is_empty() => e.error,
                Ok(e) => {
                    let fields: Vec<String> =
                        e.fields.iter().map(|f| format!("{}: {}", f.path, f.message)).collect();
                    format!("{}: {}", e.error, fields.join("; "))
                }
                Err(_) => text,
            };
            bail!("coordinator answered {status}: {message}");
        }
        serde_json::from_str(&text).context("coordinator sent a body that is not JSON")
    }
}

/// Reads and validates a spec file (TOML or JSON), naming the field at fault.
pub fn read_spec(path: &Path) -> Result<SearchSpec> {
    let spec = parse_spec(path)?;
    spec.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(spec)
}

/// A spec file parsed but not yet validated (for callers that change it first).
pub fn parse_spec(path: &Path) -> Result<SearchSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SearchSpec::from_file_text(&path.to_string_lossy(), &text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The search spec (TOML or JSON).
    spec: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
    /// Validate the spec and print what its trials cost (parameters, FLOPs, memory per device,
    /// device-hours) without submitting it.
    #[arg(long)]
    dry_run: bool,
    /// Measured training throughput per device, tokens/s, for --dry-run's device-hours.
    #[arg(long, requires = "dry_run")]
    tokens_per_s: Option<f64>,
    /// Without --tokens-per-s: the device's peak dense TFLOP/s (default: an H100's bf16).
    #[arg(long, default_value_t = 989.0, requires = "dry_run")]
    peak_tflops: f64,
    /// Without --tokens-per-s: the share of the peak training reaches.
    #[arg(long, default_value_t = 0.4, requires = "dry_run")]
    utilisation: f64,
}

pub fn submit(args: SubmitArgs) -> Result<String> {
    let spec = read_spec(&args.spec)?;
    if args.dry_run {
        let throughput = match args.tokens_per_s {
            Some(t) if t.is_finite() && t > 0.0 => crate::cost::Throughput::Measured { tokens_per_s: t },
            Some(t) => bail!("--tokens-per-s must be a positive number, got {t}"),
            None if args.peak_tflops > 0.0 && args.utilisation > 0.0 && args.utilisation <= 1.0 => {
                crate::cost::Throughput::Peak { tflops: args.peak_tflops, utilisation: args.utilisation }
            }
            None => bail!("--peak-tflops must be positive and --utilisation in (0, 1]"),
        };
        return crate::cost::report(&spec, throughput);
    }
    let body = serde_json::to_value(&spec)?;
    let created = args.client.blocking()?.json(reqwest::Method::POST, "/api/v1/searches", Some(&body))?;
    Ok(format!(
        "search {} created ({}): {}\n",
        created["id"],
        created["status"].as_str().unwrap_or("?"),
        created["name"].as_str().unwrap_or("")
    ))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Search id.
    id: i64,
    #[command(flatten)]
    client: ClientArgs,
    /// Print the JSON the API returns.
    #[arg(long)]
    json: bool,
}

pub fn status(args: StatusArgs) -> Result<String> {
    let s =
        args.client.blocking()?.json(reqwest::Method::GET, &format!("/api/v1/searches/{}", args.id), None)?;
    if args.json {
        return Ok(format!("{s}\n"));
    }
    Ok(status_text(&s))
}

pub fn status_text(s: &Value) -> String {
    let mut out = format!(
        "search {} `{}`: {} ({})\n",
        s["id"],
        s["name"].as_str().unwrap_or(""),
        s["status"].as_str().unwrap_or("?"),
        s["algorithm"].as_str().unwrap_or("?")
    );
    if let Some(e) = s["error"].as_str() {
        out.push_str(&format!("error: {e}\n"));
    }
    let counts = |v: &Value| -> String {
        v.as_object()
            .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    out.push_str(&format!("generations: {}\n", s["progress"]["generations"]));
    out.push_str(&format!("trials: {}\n", counts(&s["progress"]["trials"])));
    out.push_str(&format!("candidates: {}\n", counts(&s["progress"]["candidates"])));
    out
}

#[derive(Debug, Args)]
pub struct LeaderboardArgs {
    /// Search id.
    id: i64,
    #[command(flatten)]
    client: ClientArgs,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    top: u32,
    /// ppl, latency, params, memory, hidden, measured, rung, status or id (the coordinator checks it).
    #[arg(long, default_value = "ppl")]
    sort: String,
    /// Only candidates within the latency budget.
    #[arg(long)]
    feasible: bool,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn leaderboard(args: LeaderboardArgs) -> Result<String> {
    if !["table", "json", "csv"].contains(&args.format.as_str()) {
        bail!("--format must be table, json or csv, not `{}`", args.format);
    }
    if args.top == 0 || args.top > 1000 {
        bail!("--top must be in 1..=1000");
    }
    let path = format!(
        "/api/v1/searches/{}/leaderboard?sort={}&limit={}{}",
        args.id,
        args.sort,
        args.top,
        if args.feasible { "&feasible=true" } else { "" }
    );
    let page = args.client.blocking()?.json(reqwest::Method::GET, &path, None)?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    Ok(match args.format.as_str() {
        "json" => format!("{}\n", serde_json::to_string_pretty(&items)?),
        "csv" => leaderboard_csv(&items)?,
        _ => leaderboard_table(&items),
    })
}

const COLUMNS: [&str; 11] = [
    "id",
    "ppl",
    "est_latency_ms",
    "params",
    "memory_bytes",
    "hidden_size",
    "rung",
    "feasible",
    "status",
    "pattern",
    "accuracy",
];

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        // Per-task accuracy on synthetic corpora: `task=0.93 other=0.41`.
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={:.2}", v.as_f64().unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

pub fn leaderboard_csv(items: &[Value]) -> Result<String> {
    csv_text(&COLUMNS, items.iter().map(|it| COLUMNS.iter().map(|c| cell(&it[*c])).collect()))
}

pub fn leaderboard_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> =
        items.iter().map(|it| COLUMNS.iter().map(|c| cell(&it[*c])).collect()).collect();
    let mut out = text_table(&COLUMNS, rows);
    if items.is_empty() {
        out.push_str("(no scored candidates yet)\n");
    }
    out
}

/// CSV text: the header line, then one line per row; a field is quoted when it holds a comma, a
/// quote or a line break.
pub fn csv_text(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Result<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(header)?;
    for row in rows {
        out.write_record(&row)?;
    }
    let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("cannot write CSV: {}", e.error()))?;
    Ok(String::from_utf8(bytes)?)
}

/// Left-aligned columns two spaces apart, the header first.
pub fn text_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(h.len()))
        .collect();
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(header.iter().map(|s| (*s).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Candidate id.
    #[arg(required_unless_present = "best", conflicts_with = "best")]
    candidate: Option<i64>,
    /// Export the best feasible candidate of this search instead.
    #[arg(long)]
    best: Option<i64>,
    /// frontier (architecture document) or nemotron-flash (Hugging Face config.json).
    #[arg(long, default_value = "frontier")]
    format: String,
    /// Directory to write into (created when missing).
    #[arg(short = 'o', long, default_value = ".")]
    out: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn export(args: ExportArgs) -> Result<String> {
    let path = match (args.candidate, args.best) {
        (Some(id), _) => format!("/api/v1/candidates/{id}/export?format={}", args.format),
        (None, Some(search)) => format!("/api/v1/searches/{search}/best/export?format={}", args.format),
        (None, None) => bail!("give a candidate id or --best SEARCH"),
    };
    let doc = args.client.blocking()?.json(reqwest::Method::GET, &path, None)?;
    write_export(&doc, &args.format, &args.out)
}

/// Writes an exported document as `architecture.json` or `config.json` under `dir`.
pub fn write_export(doc: &Value, format: &str, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(if format == "nemotron-flash" { "config.json" } else { "architecture.json" });
    std::fs::write(&file, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(format!("wrote {}\n", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderboard_csv_has_a_header_and_quotes_only_cells_that_need_it() {
        let items = [serde_json::json!({
            "id": 3, "ppl": 12.5, "params": 1000, "status": "scored", "pattern": "A,F \"x\"",
            "accuracy": { "copy": 0.5 }
        })];
        assert_eq!(
            leaderboard_csv(&items).unwrap(),
            "id,ppl,est_latency_ms,params,memory_bytes,hidden_size,rung,feasible,status,pattern,accuracy\n\
             3,12.500,-,1000,-,-,-,-,scored,\"A,F \"\"x\"\"\",copy=0.50\n"
        );
        assert_eq!(leaderboard_csv(&[]).unwrap(), COLUMNS.join(",") + "\n");
    }
}
