//! Pages rendered in-process (`app(state).oneshot`) against a real store.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use coordinator::app::ApiConfig;
use coordinator::store::NewCandidate;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::helpers::TestDb;
use crate::requests::{ADMIN, WORKER, api, api_with, get, post};
use crate::seed;

/// Sends a request and returns the status, headers and body as text.
async fn raw(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn page(router: &Router, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = raw(router, Request::get(uri).body(Body::empty()).unwrap()).await;
    (status, body)
}

async fn ok_page(router: &Router, uri: &str) -> String {
    let (status, body) = page(router, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// `(class, data-id)` of every element `<{tag} class="…" data-id="…"` in a page.
fn marked(html: &str, tag: &str) -> Vec<(String, i64)> {
    let open = format!("<{tag} class=\"");
    let mut out = Vec::new();
    for piece in html.split(&open).skip(1) {
        let (class, rest) = piece.split_once('"').unwrap();
        if let Some(rest) = rest.strip_prefix(" data-id=\"") {
            out.push((class.to_owned(), rest.split_once('"').unwrap().0.parse().unwrap()));
        }
    }
    out
}

fn with_class(marks: &[(String, i64)], class: &str) -> Vec<i64> {
    marks.iter().filter(|(c, _)| c.split(' ').any(|w| w == class)).map(|(_, id)| *id).collect()
}

pub async fn every_page_renders_for_a_finished_search(db: TestDb) {
    let (router, state) = api(&db.store);
    let (id, _) = seed::search(&router, &state, "nightly hybrids", 60, 0).await;
    coordinator::server::background_step(&state).await.unwrap();
    let list = ok_page(&router, "/ui/searches").await;
    assert!(list.contains(&format!("href=\"/ui/searches/{id}\"")), "the list links the search");
    assert!(list.contains("nightly hybrids") && list.contains("completed"), "{list}");
    let search = ok_page(&router, &format!("/ui/searches/{id}")).await;
    for needle in [
        "id=\"pareto-plot\"",
        "id=\"progress-evaluations\"",
        "id=\"progress-time\"",
        "id=\"leaderboard-table\"",
    ] {
        assert!(search.contains(needle), "the search page has {needle}");
    }
    assert!(!search.contains("data-refresh"), "a finished search does not refresh itself");
    assert!(search.contains("class=\"best\""), "the progress plots draw a best-so-far line");
    let best = db.store.best_candidate(id).await.unwrap().unwrap();
    let candidate = ok_page(&router, &format!("/ui/candidates/{}", best.id)).await;
    let blocks = candidate.matches("class=\"layer-block ").count();
    let (_, detail) = get(&router, &format!("/api/v1/candidates/{}", best.id)).await;
    assert_eq!(blocks, detail["layers"].as_array().unwrap().len(), "one block per layer");
    assert!(candidate.contains("id=\"export-config\""), "a tiny hybrid exports as a config");
    assert!(candidate.contains("id=\"loss-curve\""), "the loss curve is drawn");
    // The flat table costs 3.2 ms per layer over the setting's 32 steps.
    assert!(candidate.contains("3.2 ms"), "the per-layer breakdown comes from the latency table");
    let devices = ok_page(&router, "/ui/devices").await;
    assert!(devices.contains(seed::DEVICE) && devices.contains(seed::SETTING), "{devices}");
    let (status, _) = page(&router, "/ui/static/style.css").await;
    assert_eq!(status, StatusCode::OK);
}

pub async fn the_plot_marks_every_placed_candidate_and_the_front_matches_the_api(db: TestDb) {
    let (router, state) = api(&db.store);
    let (id, _) = seed::search(&router, &state, "plot", 90, 5).await;
    let html = ok_page(&router, &format!("/ui/searches/{id}")).await;
    assert!(html.contains("data-refresh="), "a running search refreshes itself");
    let circles = marked(&html, "circle");
    let api = seed::pareto(&router, id).await;
    let mut plotted: Vec<i64> = with_class(&circles, "pt");
    let mut points = seed::ids(&api["points"]);
    plotted.sort_unstable();
    points.sort_unstable();
    assert!(
        points.len() >= 50,
        "a search of at least 50 scored candidates, got {}: {:?}",
        points.len(),
        db.store.search_points(id).await.unwrap()
    );
    assert_eq!(plotted, points, "one mark per scored candidate");
    let mut front = with_class(&circles, "front");
    let mut api_front = seed::ids(&api["front"]);
    front.sort_unstable();
    api_front.sort_unstable();
    assert_eq!(front, api_front, "the highlighted front is the API's");
    let rug = marked(&html, "line");
    assert_eq!(
        with_class(&rug, "rug").len(),
        seed::unscored_with_latency(&db.store, id).await,
        "unscored marks"
    );
    assert!(
        !with_class(&rug, "infeasible").is_empty(),
        "over-budget candidates are recorded and shown dimmed"
    );
    assert!(html.contains("class=\"budget\""), "the budget is drawn");
}

pub async fn the_table_sorts_by_every_column_and_pages_by_cursor(db: TestDb) {
    let (router, state) = api(&db.store);
    let (id, _) = seed::search(&router, &state, "table", 60, 0).await;
    for key in ["ppl", "latency", "params", "memory", "hidden", "measured", "rung", "status", "id"] {
        for order in ["asc", "desc"] {
            let query = format!("sort={key}&order={order}&limit=20");
            let html = ok_page(&router, &format!("/ui/searches/{id}?{query}")).await;
            let rows: Vec<i64> = marked(&html, "tr").into_iter().map(|(_, id)| id).collect();
            let (_, api) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?{query}")).await;
            assert_eq!(rows, seed::ids(&api["items"]), "{query}: the table shows the API's order");
        }
    }
    // Following `next page` links visits every scored candidate once.
    let mut uri = format!("/ui/searches/{id}?sort=latency&limit=7");
    let mut seen = Vec::new();
    loop {
        let html = ok_page(&router, &uri).await;
        seen.extend(marked(&html, "tr").into_iter().map(|(_, id)| id));
        let Some(next) = html.split("id=\"next-page\" href=\"").nth(1) else { break };
        uri = next.split('"').next().unwrap().replace("&#38;", "&").replace("&amp;", "&");
    }
    let with_latency =
        db.store.search_points(id).await.unwrap().iter().filter(|p| p.est_latency_ms.is_some()).count();
    assert_eq!(seen.len(), with_latency, "every candidate with a latency estimate, once");
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len());
    // Feasible only hides the over-budget ones.
    let html = ok_page(&router, &format!("/ui/searches/{id}?sort=latency&feasible=true&limit=1000")).await;
    let rows = marked(&html, "tr");
    assert!(!rows.is_empty() && rows.iter().all(|(c, _)| !c.contains("infeasible")), "{rows:?}");
}

pub async fn the_csv_holds_every_row_in_the_tables_order(db: TestDb) {
    let (router, state) = api(&db.store);
    let (id, _) = seed::search(&router, &state, "csv", 60, 0).await;
    let (status, headers, body) = raw(
        &router,
        Request::get(format!("/ui/searches/{id}/leaderboard.csv?sort=latency&order=desc"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("attachment"));
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let head = reader.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let (_, api) =
        get(&router, &format!("/api/v1/searches/{id}/leaderboard?sort=latency&order=desc&limit=1000")).await;
    let ids: Vec<i64> = rows.iter().map(|r| r[col("id")].parse().unwrap()).collect();
    assert_eq!(ids, seed::ids(&api["items"]), "every row, in the table's order");
    let latencies: Vec<f64> = rows.iter().map(|r| r[col("est_latency_ms")].parse().unwrap()).collect();
    assert!(latencies.windows(2).all(|w| w[0] >= w[1]), "descending latency");
    for (row, item) in rows.iter().zip(api["items"].as_array().unwrap()) {
        assert_eq!(row[col("pattern")], *item["pattern"].as_str().unwrap());
        assert_eq!(row[col("status")], *item["status"].as_str().unwrap());
    }
}

pub async fn user_text_is_escaped(db: TestDb) {
    let (router, state) = api(&db.store);
    let evil = "<script>alert('x')</script> & \"friends\"";
    let (id, _) = seed::search(&router, &state, evil, 12, 0).await;
    let arch = search_space::presets::preset("tiny-hybrid").unwrap().named(evil);
    let (c, _) = db
        .store
        .insert_candidate(
            id,
            &NewCandidate {
                arch_hash: "evil".into(),
                architecture: serde_json::to_value(&arch).unwrap(),
                parent_id: None,
                mutation: Some("<img src=x onerror=alert(1)>".into()),
                hidden_size: 128,
                params: 1,
                est_latency_ms: Some(1.0),
                memory_bytes: 1,
                feasible: true,
            },
        )
        .await
        .unwrap();
    let escaped = "&#60;script&#62;";
    for uri in
        ["/ui/searches".to_owned(), format!("/ui/searches/{id}?sort=id"), format!("/ui/candidates/{}", c.id)]
    {
        let html = ok_page(&router, &uri).await;
        assert!(!html.contains("<script>alert"), "{uri} shows the name as text");
        assert!(!html.contains("<img src=x"), "{uri}");
        assert!(
            html.contains(escaped) || html.contains("&lt;script&gt;"),
            "{uri}: the name is escaped: {html}"
        );
    }
    // A bad query string is echoed escaped too.
    let (status, html) = page(&router, &format!("/ui/searches/{id}?sort=%3Cscript%3E")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(html.matches("<script").count(), 1, "only the page's own script tag: {html}");
}

pub async fn bad_input_is_a_page_naming_the_problem(db: TestDb) {
    let (router, state) = api(&db.store);
    let (id, _) = seed::search(&router, &state, "bad input", 12, 0).await;
    let before = (db.store.get_search(id).await.unwrap(), db.store.search_points(id).await.unwrap());
    let cases = [
        (format!("/ui/searches/{id}?sort=colour"), StatusCode::BAD_REQUEST, "sort"),
        (format!("/ui/searches/{id}?order=sideways"), StatusCode::BAD_REQUEST, "order"),
        (format!("/ui/searches/{id}?cursor=nonsense"), StatusCode::BAD_REQUEST, "cursor"),
        (format!("/ui/searches/{id}?limit=0"), StatusCode::BAD_REQUEST, "limit"),
        (format!("/ui/searches/{id}?colour=red"), StatusCode::BAD_REQUEST, "colour"),
        (format!("/ui/searches/{id}/leaderboard.csv?sort=colour"), StatusCode::BAD_REQUEST, "sort"),
        ("/ui/searches/999999".to_owned(), StatusCode::NOT_FOUND, "search 999999 does not exist"),
        ("/ui/candidates/999999".to_owned(), StatusCode::NOT_FOUND, "candidate 999999 does not exist"),
    ];
    for (uri, want, mention) in cases {
        let (status, html) = page(&router, &uri).await;
        assert_eq!(status, want, "{uri}: {html}");
        assert!(html.contains(mention), "{uri} names `{mention}`: {html}");
        assert!(html.contains("<html"), "{uri} answers with a page");
    }
    let (status, _) = page(&router, "/ui/candidates/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing was lost on the way.
    let after = (db.store.get_search(id).await.unwrap(), db.store.search_points(id).await.unwrap());
    assert_eq!(before, after);
}

pub async fn protected_reads_need_a_token_or_the_sign_in_cookie(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    let (router, _) = api_with(&db.store, config);
    let (status, html) = page(&router, "/ui/searches").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("action=\"/ui/login\"") && html.contains("value=\"/ui/searches\""), "{html}");
    let form = |token: &str, next: &str| {
        Request::post("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next={next}")))
            .unwrap()
    };
    let (status, _, _) = raw(&router, form("wrong", "/ui/devices")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = raw(&router, form(WORKER, "/ui/devices")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/devices");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie =
        |uri: &str| Request::get(uri).header("cookie", pair.clone()).body(Body::empty()).unwrap();
    let (status, _, _) = raw(&router, with_cookie("/ui/searches")).await;
    assert_eq!(status, StatusCode::OK, "the cookie opens the pages");
    let (status, _, _) = raw(&router, with_cookie("/api/v1/searches")).await;
    assert_eq!(status, StatusCode::OK, "and the API's reads, for export links");
    let create = Request::post("/api/v1/searches")
        .header("cookie", format!("frontier_session={ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({}).to_string()))
        .unwrap();
    let (status, _, _) = raw(&router, create).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a cookie never authorises a mutation");
    // Sign-in only ever sends the browser back into the UI.
    let (_, headers, _) = raw(&router, form(ADMIN, "https://evil.example/")).await;
    assert_eq!(headers["location"], "/ui/searches");
    let (_, headers, _) = raw(&router, form(ADMIN, "//evil.example/ui")).await;
    assert_eq!(headers["location"], "/ui/searches");
}

pub async fn the_devices_page_shows_fidelity_and_the_scatter_of_its_cases(db: TestDb) {
    let (router, state) = api(&db.store);
    seed::search(&router, &state, "devices", 4, 0).await;
    let key: lut::DeploymentSetting = seed::SETTING.parse().unwrap();
    let cases: Vec<serde_json::Value> = (1..=7)
        .map(|i| json!({ "pattern": "A F", "hidden": 64, "layers": 2, "measured_ms": 10.0 * f64::from(i),
                         "raw_ms": 9.0 * f64::from(i), "calibrated_ms": 10.1 * f64::from(i), "loo_ms": 10.3 * f64::from(i) }))
        .collect();
    let fidelity = json!({
        "raw": { "n": 7, "spearman": 1.0, "kendall_tau": 1.0, "mape_pct": 10.0, "within_5pct": 0.0, "within_10pct": 1.0 },
        "calibrated_leave_one_out": { "n": 7, "spearman": 0.9876, "kendall_tau": 0.95, "mape_pct": 3.0, "within_5pct": 1.0, "within_10pct": 0.857 },
        "samples": 7, "cases": cases
    });
    db.store
        .put_lut_calibration(seed::DEVICE, &key.key(), &json!({ "a": 1.0, "b": 0.0, "c": 0.0 }), &fidelity)
        .await
        .unwrap();
    let html = ok_page(&router, "/ui/devices").await;
    assert!(html.contains("0.988") && html.contains("86 %"), "the leave-one-out figures are shown: {html}");
    let scatter = html
        .split("class=\"chart small scatter\"")
        .nth(1)
        .expect("a scatter plot")
        .split("</svg>")
        .next()
        .unwrap();
    assert_eq!(scatter.matches("<circle class=\"pt\"").count(), 7, "one mark per validated architecture");
    assert!(scatter.contains("class=\"diagonal\""));
}

/// The inside of the SVG with id `id`.
fn svg<'a>(html: &'a str, id: &str) -> &'a str {
    html.split(&format!("<svg id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no #{id}: {html}"))
        .split("</svg>")
        .next()
        .unwrap()
}

/// Each `<circle class="…"` of `part` whose class has `class`, from its class attribute on.
fn circles<'a>(part: &'a str, class: &str) -> Vec<&'a str> {
    part.split("<circle class=\"")
        .skip(1)
        .filter(|piece| piece.split_once('"').unwrap().0.split(' ').any(|c| c == class))
        .collect()
}

/// The value of the first attribute `name` in `element`.
fn attr<'a>(element: &'a str, name: &str) -> &'a str {
    element
        .split(&format!(" {name}=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        .split('"')
        .next()
        .unwrap()
}

pub async fn a_sweeps_fit_page_plots_the_law_and_recommends_within_a_budget(db: TestDb) {
    let (router, _) = api(&db.store);
    let search = seed::sweep(&router, "depth-width sweep").await;
    let before = ok_page(&router, &format!("/ui/searches/{search}")).await;
    assert!(before.contains("id=\"scaling-fits\""), "a sweep lists its fits: {before}");
    assert!(before.contains(&format!("frontier scaling-law fit {search}")), "and how to make one");
    let fit = seed::scaling_fit(&router, search).await;
    let after = ok_page(&router, &format!("/ui/searches/{search}")).await;
    assert!(after.contains(&format!("href=\"/ui/scaling-fits/{fit}\"")), "the search page links the fit");

    let html = ok_page(&router, &format!("/ui/scaling-fits/{fit}")).await;
    assert!(html.contains(&format!("href=\"/ui/searches/{search}\"")), "the fit links its search");
    let plot = svg(&html, "loss-vs-depth");
    let obs = circles(plot, "obs");
    assert_eq!(obs.len(), 16, "one mark per observation");
    for o in &obs {
        let (d, w): (u32, u32) =
            (attr(o, "data-depth").parse().unwrap(), attr(o, "data-width").parse().unwrap());
        let loss: f64 = attr(o, "data-loss").parse().unwrap();
        assert!((loss - seed::law_loss(d, w)).abs() < 1e-9, "the measured loss at D={d}, W={w}");
    }
    assert_eq!(plot.matches("<polyline class=\"fit ").count(), 4, "one fitted curve per width");
    let coefficients = html.split("id=\"coefficients\"").nth(1).expect("a coefficient table");
    let alpha: f64 =
        attr(coefficients.split("data-coefficient=\"alpha\"").nth(1).unwrap(), "data-value").parse().unwrap();
    assert!((alpha - 0.5).abs() < 0.05, "alpha {alpha}");
    assert!(html.contains("id=\"extrapolation\""), "the held-out check is shown: {html}");
    assert!(!html.contains("id=\"feasible-region\""), "no recommendation without a budget");

    // Without a latency table a recommendation is a message, not a failure.
    let (status, html) = page(&router, &format!("/ui/scaling-fits/{fit}?budget_ms=5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("id=\"recommend-error\"") && html.contains("no latency table"), "{html}");

    seed::sweep_latency_table(&db.store).await;
    // A budget in the middle of the grid's latencies, so some models fit and some do not.
    let (status, all) =
        post(&router, &format!("/api/v1/scaling-fits/{fit}/recommend"), ADMIN, &json!({ "budget_ms": 1e9 }))
            .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut latencies: Vec<f64> =
        all["grid"].as_array().unwrap().iter().map(|g| g["latency_ms"].as_f64().unwrap()).collect();
    latencies.sort_by(f64::total_cmp);
    let budget = latencies[latencies.len() / 2];
    let (status, api) = post(
        &router,
        &format!("/api/v1/scaling-fits/{fit}/recommend"),
        ADMIN,
        &json!({ "budget_ms": budget }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{api}");
    let within = api["within_budget"].as_u64().unwrap() as usize;
    assert!(within > 0 && within < latencies.len(), "{within} of {}", latencies.len());

    let html = ok_page(&router, &format!("/ui/scaling-fits/{fit}?budget_ms={budget}&device=&setting=")).await;
    let region = svg(&html, "feasible-region");
    assert_eq!(circles(region, "grid-point").len(), latencies.len(), "one mark per model evaluated");
    assert_eq!(circles(region, "feasible").len(), within, "the API's count within the budget");
    let best = circles(region, "best");
    assert_eq!(best.len(), 1, "one recommendation highlighted");
    assert_eq!(attr(best[0], "data-depth"), api["best"]["depth"].to_string());
    assert_eq!(attr(best[0], "data-width"), api["best"]["width"].to_string());
    let latency: f64 = attr(best[0], "data-latency").parse().unwrap();
    assert!(latency <= budget, "the best model fits the budget: {latency} > {budget}");
    let table = html.split("id=\"recommendations\"").nth(1).expect("a table of recommendations");
    let rows = table.split("</table>").next().unwrap().matches("<tr class=").count();
    assert_eq!(rows, 1 + api["runners_up"].as_array().unwrap().len(), "the best and the runners-up");
    let row = table.split("<tr class=\"best\"").nth(1).unwrap();
    assert_eq!(attr(row, "data-width"), api["best"]["width"].to_string());
    assert!(attr(row, "data-latency").parse::<f64>().unwrap() <= budget);
    let constraint = html.split("id=\"constraint\"").nth(1).unwrap();
    assert!(
        constraint.contains(&format!("space.hidden_sizes = [{}]", api["best"]["width"]))
            && constraint.contains(&format!("space.max_operators = {}", api["best"]["layers"])),
        "{constraint}"
    );
}

pub async fn the_fit_page_names_bad_input_and_unknown_fits(db: TestDb) {
    let (router, _) = api(&db.store);
    let search = seed::sweep(&router, "bad input sweep").await;
    let fit = seed::scaling_fit(&router, search).await;
    seed::sweep_latency_table(&db.store).await;
    for (query, mention) in [
        ("budget_ms=-1", "must be a positive number"),
        ("budget_ms=abc", "is not a number"),
        ("budget_ms=0.000001", "budget_ms"),
        ("budget_ms=5&setting=nonsense", "setting"),
        ("budget_ms=5&device=no-such-device", "no-such-device"),
    ] {
        let (status, html) = page(&router, &format!("/ui/scaling-fits/{fit}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {html}");
        assert!(
            html.contains("id=\"recommend-error\"") && html.contains(mention),
            "{query} names `{mention}`: {html}"
        );
        assert!(html.contains("id=\"coefficients\""), "{query}: the fit is still shown");
        assert!(!html.contains("id=\"feasible-region\""), "{query}");
    }
    let cases = [
        (format!("/ui/scaling-fits/{fit}?colour=red"), StatusCode::BAD_REQUEST, "colour"),
        ("/ui/scaling-fits/999999".to_owned(), StatusCode::NOT_FOUND, "scaling fit 999999 does not exist"),
    ];
    for (uri, want, mention) in cases {
        let (status, html) = page(&router, &uri).await;
        assert_eq!(status, want, "{uri}: {html}");
        assert!(
            html.contains(mention) && html.contains("<html"),
            "{uri} answers with a page naming `{mention}`"
        );
    }
    // Text typed into the form comes back escaped.
    let (_, html) = page(&router, &format!("/ui/scaling-fits/{fit}?budget_ms=%3Cscript%3E")).await;
    assert_eq!(html.matches("<script").count(), 1, "only the page's own script tag: {html}");
}

pub async fn the_leaderboard_shows_per_task_accuracy_and_marks_results_below_a_floor(db: TestDb) {
    let (router, _) = api(&db.store);
    let mut s = crate::requests::spec(json!({ "kind": "random", "candidates": 4, "batch": 4 }));
    s["proxy"]["corpus"] = json!("synthetic:in_context_recall,selective_copying?copy=8");
    s["accuracy"] = json!({ "min": { "in_context_recall": 0.8 } });
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    crate::protocol::register(&router, "sim").await;
    // Recall 0.95, 0.5, 0.95, ... in lease order; copying always 0.25.
    let mut recall = std::collections::BTreeMap::new();
    let mut n = 0;
    while let Some(grant) = crate::protocol::lease(&router, "sim").await {
        let r = if n % 2 == 0 { 0.95 } else { 0.5 };
        n += 1;
        let mut metrics = crate::protocol::metrics(10.0 + f64::from(n));
        metrics["accuracy"] = json!({ "in_context_recall": r, "selective_copying": 0.25 });
        let body = json!({ "lease_token": grant["lease_token"], "metrics": metrics });
        let (code, ack) =
            post(&router, &format!("/api/v1/trials/{}/complete", grant["trial_id"]), WORKER, &body).await;
        assert_eq!(code, StatusCode::OK, "{ack}");
        recall.insert(grant["candidate_id"].as_i64().unwrap(), r);
    }
    assert!(recall.len() >= 2, "{recall:?}");

    let search = ok_page(&router, &format!("/ui/searches/{id}")).await;
    assert!(
        search.contains("in_context_recall acc.") && search.contains("selective_copying acc."),
        "{search}"
    );
    assert!(search.contains("<dd id=\"accuracy-goals\">in_context_recall ≥ 0.800</dd>"), "{search}");
    for (cid, r) in &recall {
        let row = search
            .split("<tr class=\"candidate")
            .find(|r| r.contains(&format!("data-id=\"{cid}\">")))
            .and_then(|r| r.split("</tr>").next())
            .unwrap();
        let short = *r < 0.8;
        assert!(row.contains(&format!("{r:.3}")) && row.contains("0.250"), "candidate {cid}: {row}");
        assert_eq!(row.contains("accuracy short"), short, "candidate {cid}: {row}");
        let candidate = ok_page(&router, &format!("/ui/candidates/{cid}")).await;
        assert_eq!(candidate.contains("below the floor of 0.800"), short, "candidate {cid}");
    }
    let (_, _, body) =
        raw(&router, Request::get(format!("/ui/searches/{id}/leaderboard.csv")).body(Body::empty()).unwrap())
            .await;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let head = reader.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    for row in reader.records().map(Result::unwrap) {
        let cid: i64 = row[col("id")].parse().unwrap();
        assert_eq!(row[col("accuracy.in_context_recall")].parse::<f64>().unwrap(), recall[&cid]);
        assert_eq!(row[col("feasible")], (recall[&cid] >= 0.8).to_string());
    }
}

/// A sign-in form post from `client`, with extra headers.
fn sign_in(token: &str, client: [u8; 4], headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post("/ui/login").header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(format!("token={token}&next=/ui/searches"))).unwrap();
    let addr = std::net::SocketAddr::from((client, 40_000));
    request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    request
}

/// A page read with `cookie`.
async fn with_cookie(router: &Router, cookie: &str) -> StatusCode {
    let request = Request::get("/ui/searches").header("cookie", cookie).body(Body::empty()).unwrap();
    raw(router, request).await.0
}

pub async fn the_sign_in_cookie_is_a_signed_session_never_the_token(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    let (router, _) = api_with(&db.store, config.clone());
    let (status, headers, _) = raw(&router, sign_in(ADMIN, [10, 0, 0, 1], &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(!cookie.contains(ADMIN) && !cookie.contains(WORKER), "the cookie holds no token: {cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "not over TLS: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(with_cookie(&router, &pair).await, StatusCode::OK);
    // Behind a TLS-terminating proxy, or when configured, the cookie is Secure.
    let (_, headers, _) =
        raw(&router, sign_in(ADMIN, [10, 0, 0, 1], &[("x-forwarded-proto", "https")])).await;
    assert!(headers["set-cookie"].to_str().unwrap().contains("; Secure"), "{headers:?}");
    let mut secure = config.clone();
    secure.secure_cookies = true;
    let (secure_router, _) = api_with(&db.store, secure);
    let (_, headers, _) = raw(&secure_router, sign_in(ADMIN, [10, 0, 0, 1], &[])).await;
    assert!(headers["set-cookie"].to_str().unwrap().contains("; Secure"), "{headers:?}");
    // A token where the session should be, an altered session, one from another coordinator, or
    // an expired one opens nothing.
    let session = pair.split_once('=').unwrap().1.to_owned();
    let mut parts: Vec<&str> = session.split('.').collect();
    let later = (parts[1].parse::<i64>().unwrap() + 86_400_000).to_string();
    parts[1] = &later;
    let altered = parts.join(".");
    let (other_router, _) = api_with(&db.store, config.clone());
    assert_eq!(
        with_cookie(&other_router, &pair).await,
        StatusCode::UNAUTHORIZED,
        "another coordinator's key"
    );
    for bad in [
        format!("frontier_session={ADMIN}"),
        format!("frontier_token={ADMIN}"),
        format!("frontier_session={altered}"),
        format!("frontier_session={}", &session[..session.len() - 2]),
        "frontier_session=v1.9999999999999.00.00".to_owned(),
    ] {
        assert_eq!(with_cookie(&router, &bad).await, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let mut brief = config;
    brief.session_ttl = std::time::Duration::from_millis(200);
    let (brief_router, _) = api_with(&db.store, brief);
    let (_, headers, _) = raw(&brief_router, sign_in(WORKER, [10, 0, 0, 1], &[])).await;
    let pair = headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(with_cookie(&brief_router, &pair).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(with_cookie(&brief_router, &pair).await, StatusCode::UNAUTHORIZED, "expired");
}

pub async fn wrong_sign_ins_are_throttled_per_client(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    config.max_failed_sign_ins = 3;
    config.sign_in_window = std::time::Duration::from_secs(1);
    let (router, _) = api_with(&db.store, config);
    let attacker = [192, 0, 2, 7];
    for attempt in 1..=3 {
        let (status, _, _) = raw(&router, sign_in(&format!("guess-{attempt}"), attacker, &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Past the limit even the right token is refused until the window has passed.
    let (status, headers, html) = raw(&router, sign_in(ADMIN, attacker, &[])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{html}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "{retry}");
    assert!(html.contains("<html") && html.contains("Too many"), "{html}");
    // Other clients sign in meanwhile.
    let (status, _, _) = raw(&router, sign_in(ADMIN, [198, 51, 100, 1], &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) = raw(&router, sign_in(ADMIN, attacker, &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the window has passed");
}

pub async fn bad_paths_and_methods_under_ui_are_pages(db: TestDb) {
    let (router, _) = api(&db.store);
    for (method, uri, want) in [
        (Method::GET, "/ui/searches/not-a-number", StatusCode::BAD_REQUEST),
        (Method::GET, "/ui/scaling-fits/1e99", StatusCode::BAD_REQUEST),
        (Method::GET, "/ui/searches/1/leaderboard.csv/x", StatusCode::NOT_FOUND),
        (Method::POST, "/ui/searches", StatusCode::METHOD_NOT_ALLOWED),
        (Method::DELETE, "/ui/login", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let request = Request::builder().method(method.clone()).uri(uri).body(Body::empty()).unwrap();
        let (status, headers, body) = raw(&router, request).await;
        assert_eq!(status, want, "{method} {uri}: {body}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{method} {uri}");
        assert!(body.contains("<html"), "{method} {uri}: {body}");
    }
}
