//! The HTTP API, driven in-process through `app(state).oneshot(...)` against a real store (a
//! SQLite file, or a fresh Postgres database): auth, validation, the worker protocol and its
//! fencing, searches run to completion by simulated workers, a restart mid-search, and who may do
//! what (tokens, lease tokens, body and size limits).

#![allow(
    clippy::unwrap_used,
    reason = "test bodies are plain async fns wrapped by a macro, which `allow-unwrap-in-tests` \
              does not recognise as tests"
)]

mod accuracy;
#[path = "../store/helpers.rs"]
#[allow(dead_code, reason = "shared with the store tests; not every helper is used here")]
mod helpers;
mod latency_tables;
mod limits;
mod protocol;
mod requests;
mod results;
mod scaling;
mod searches;
mod security;
mod tables;

on_both_backends! {
    accuracy::a_candidate_below_an_accuracy_floor_is_infeasible_and_never_a_parent,
    accuracy::nsga2_takes_accuracy_as_an_objective_and_refuses_goals_it_cannot_measure,
    requests::mutating_search_endpoints_need_the_admin_token,
    requests::worker_endpoints_need_the_worker_token,
    requests::malformed_json_is_a_400_and_a_wrong_field_a_422_with_its_path,
    requests::an_invalid_spec_is_refused_with_every_problem_and_its_path,
    requests::a_latency_budget_without_a_latency_table_is_refused,
    requests::a_relative_budget_is_resolved_against_the_reference_model_on_the_target,
    requests::unknown_ids_are_404_and_cancelling_twice_is_409,
    requests::oversized_bodies_are_413,
    requests::bad_leaderboard_parameters_name_the_parameter,
    requests::every_documented_operation_is_served,
    requests::health_readiness_and_metrics_answer,
    requests::a_number_without_a_fraction_is_read_as_an_integer,
    protocol::a_worker_leases_trains_and_reports_through_the_api,
    protocol::a_stale_lease_token_is_refused_and_the_fresh_result_kept,
    protocol::checkpoint_notes_from_heartbeats_join_the_trial_history,
    protocol::an_unregistered_worker_is_told_to_register,
    protocol::reads_can_be_protected,
    protocol::a_worker_uploads_a_latency_table_all_or_nothing,
    protocol::a_diverged_result_does_not_break_the_next_result_on_the_same_connection,
    searches::aging_evolution_runs_to_completion_with_every_candidate_once,
    searches::random_search_with_halving_promotes_the_top_third,
    searches::nsga2_search_reports_a_pareto_front,
    searches::a_search_resumes_after_the_coordinator_restarts,
    searches::cancelling_a_search_revokes_its_running_leases,
    searches::concurrent_steps_of_a_new_search_record_its_first_generation_once,
    scaling::a_sweep_trains_every_depth_and_width_at_every_budget,
    scaling::a_fit_recovers_the_law_the_results_came_from,
    scaling::a_recommendation_is_the_best_predicted_model_within_the_budget,
    scaling::bad_fits_and_recommendations_name_the_field_or_the_state,
    security::every_mutating_operation_refuses_a_missing_unknown_or_wrong_token,
    security::a_worker_token_cannot_create_or_cancel_searches,
    security::the_admin_token_cannot_act_as_a_worker,
    security::a_lease_token_the_worker_did_not_receive_cannot_finish_a_trial,
    security::every_body_over_the_limit_is_413,
    security::absurd_sizes_are_refused_naming_the_field_before_anything_is_allocated,
    security::text_with_a_nul_character_is_refused_never_an_internal_error,
    security::the_bearer_scheme_is_read_in_any_case_and_a_401_names_it,
    security::metrics_need_a_token_when_reads_are_protected,
    security::wrong_methods_and_bad_path_parameters_answer_json,
    security::a_stale_lease_is_refused_without_an_error_in_the_log,
    latency_tables::a_bad_latency_row_is_refused_naming_its_index_and_field,
    latency_tables::a_stored_row_that_does_not_parse_never_fails_a_search,
    latency_tables::an_admin_deletes_a_devices_table_or_one_row,
    latency_tables::another_devices_table_cannot_make_a_running_search_ambiguous,
    results::an_implausible_result_is_refused_and_the_trial_stays_leased,
    results::a_perplexity_within_rounding_of_exp_loss_and_a_diverged_run_are_accepted,
    results::worker_supplied_sizes_and_ids_are_bounded,
    limits::idle_and_slow_connections_are_closed_within_the_timeouts,
    limits::requests_over_the_concurrency_limit_are_answered_503,
    limits::a_lease_long_poll_answers_before_the_request_timeout,
    tables::a_table_search_is_answered_with_the_tables_runs_and_no_worker_trains,
    tables::a_table_search_names_a_missing_table_or_other_model_settings,
}
