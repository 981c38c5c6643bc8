//! The store's integration tests. Every test in `catalog`, `candidates`, `lut` and `queue` is written
//! once, against a fresh [`coordinator::Store`], and runs on both backends: as `sqlite::<name>`
//! on a temporary file and as `postgres::<name>` on a new database of the server named by
//! `FRONTIER_TEST_POSTGRES_URL` (see `helpers::with_postgres` for what happens without one).

#![allow(
    clippy::unwrap_used,
    reason = "test bodies are plain async fns wrapped by a macro, which `allow-unwrap-in-tests` \
              does not recognise as tests"
)]

mod candidates;
mod catalog;
mod connect;
mod helpers;
mod lut;
mod queue;
mod searches;

on_both_backends! {
    searches::generation_records_members_and_queues_only_new_feasible_candidates,
    searches::recording_a_generation_twice_is_refused,
    searches::completed_trial_scores_its_candidate,
    searches::a_late_lower_rung_result_never_overwrites_a_higher_one,
    searches::retryable_failure_requeues_until_attempts_run_out,
    searches::permanent_failure_fails_at_once,
    searches::cancelling_a_search_fails_its_queued_work_once,
    searches::leaderboard_pages_by_keyset_in_every_order,
    connect::migrations_run_twice_without_error,
    connect::store_reports_its_backend,
    catalog::upserting_a_device_updates_it_and_keeps_its_creation_time,
    catalog::missing_device_is_none,
    catalog::lut_entry_put_twice_keeps_one_row_with_the_latest_measurement,
    catalog::lut_entries_are_scoped_to_device_and_setting,
    catalog::lut_entry_for_an_unknown_device_is_rejected,
    catalog::created_search_reads_back_with_its_spec,
    catalog::searches_are_listed_newest_first,
    candidates::duplicate_architecture_returns_the_existing_candidate,
    candidates::same_architecture_in_another_search_is_a_new_candidate,
    candidates::candidate_keeps_its_lineage_and_optional_fields,
    queue::empty_queue_leases_nothing,
    queue::oldest_queued_trial_is_leased_first,
    queue::lease_hands_out_a_fresh_token_and_expiry,
    queue::heartbeat_with_the_lease_token_extends_the_lease,
    queue::heartbeat_with_a_stale_token_is_refused,
    queue::completed_trial_records_its_result,
    queue::stale_token_cannot_complete_a_trial,
    queue::non_finite_loss_marks_the_trial_diverged,
    queue::unexpired_lease_is_not_reclaimed,
    queue::expired_lease_is_reclaimed_by_another_worker,
    queue::trial_out_of_attempts_is_marked_failed,
    queue::trial_for_an_unknown_candidate_is_rejected,
    queue::concurrent_workers_never_lease_the_same_trial,
    lut::lut_entries_round_trip_through_the_store_to_the_same_table,
    lut::bulk_entries_are_all_or_nothing,
    lut::lut_tables_list_each_device_and_setting_with_its_entry_count,
    lut::the_newest_calibration_is_the_one_in_use,
}
