//! The web UI: pages rendered in-process against a real store (SQLite file and a fresh Postgres
//! database), and the whole flow in headless Chromium over WebDriver against a served
//! coordinator: the Pareto plot against the API's front, sorting, a candidate's layer strip,
//! a downloaded config, live refresh and escaping of user text. A sweep trained to a known law
//! checks its scaling-law fit's page and recommendation against the API.

#![allow(
    clippy::unwrap_used,
    reason = "test bodies are plain async fns wrapped by a macro, which `allow-unwrap-in-tests` \
              does not recognise as tests"
)]

#[path = "../store/helpers.rs"]
#[allow(dead_code, reason = "shared with the store tests; not every helper is used here")]
mod helpers;
#[path = "../api/protocol.rs"]
#[allow(dead_code, reason = "the API tests' bodies come along with their helpers")]
mod protocol;
#[path = "../api/requests.rs"]
#[allow(dead_code, reason = "the API tests' bodies come along with their helpers")]
mod requests;

mod browser;
mod pages;
mod seed;

on_both_backends! {
    pages::every_page_renders_for_a_finished_search,
    pages::the_plot_marks_every_placed_candidate_and_the_front_matches_the_api,
    pages::the_table_sorts_by_every_column_and_pages_by_cursor,
    pages::the_csv_holds_every_row_in_the_tables_order,
    pages::the_leaderboard_shows_per_task_accuracy_and_marks_results_below_a_floor,
    pages::user_text_is_escaped,
    pages::bad_input_is_a_page_naming_the_problem,
    pages::protected_reads_need_a_token_or_the_sign_in_cookie,
    pages::the_devices_page_shows_fidelity_and_the_scatter_of_its_cases,
    pages::a_sweeps_fit_page_plots_the_law_and_recommends_within_a_budget,
    pages::the_fit_page_names_bad_input_and_unknown_fits,
    pages::the_sign_in_cookie_is_a_signed_session_never_the_token,
    pages::wrong_sign_ins_are_throttled_per_client,
    pages::bad_paths_and_methods_under_ui_are_pages,
}
