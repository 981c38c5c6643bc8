//! Candidates and their deduplication by canonical architecture hash.

use serde_json::json;

use crate::helpers::{TestDb, candidate};

pub async fn duplicate_architecture_returns_the_existing_candidate(db: TestDb) {
    let search = db.store.create_search("s", &json!({})).await.unwrap();
    let (first, inserted) = db.store.insert_candidate(search.id, &candidate(7)).await.unwrap();
    assert!(inserted);

    // The engine may reach the same architecture again by another mutation path.
    let mut again = candidate(7);
    again.parent_id = Some(first.id);
    again.mutation = Some("swap_operator".to_owned());
    let (second, inserted) = db.store.insert_candidate(search.id, &again).await.unwrap();

    assert!(!inserted, "a known architecture is not inserted twice");
    assert_eq!(second, first, "the existing row comes back unchanged");
}

pub async fn same_architecture_in_another_search_is_a_new_candidate(db: TestDb) {
    let a = db.store.create_search("a", &json!({})).await.unwrap();
    let b = db.store.create_search("b", &json!({})).await.unwrap();

    let (in_a, _) = db.store.insert_candidate(a.id, &candidate(1)).await.unwrap();
    let (in_b, inserted) = db.store.insert_candidate(b.id, &candidate(1)).await.unwrap();

    assert!(inserted);
    assert_ne!(in_a.id, in_b.id);
    assert_eq!(in_b.search_id, b.id);
}

pub async fn candidate_keeps_its_lineage_and_optional_fields(db: TestDb) {
    let search = db.store.create_search("s", &json!({})).await.unwrap();
    let (parent, _) = db.store.insert_candidate(search.id, &candidate(1)).await.unwrap();
    let mut child = candidate(2);
    child.parent_id = Some(parent.id);
    child.mutation = Some("ffn_ratio".to_owned());
    child.est_latency_ms = None;
    child.params = 5_000_000_000;

    let (stored, _) = db.store.insert_candidate(search.id, &child).await.unwrap();

    assert_eq!(stored.parent_id, Some(parent.id));
    assert_eq!(stored.mutation.as_deref(), Some("ffn_ratio"));
    assert_eq!(stored.est_latency_ms, None);
    assert_eq!(stored.params, 5_000_000_000, "params need 64 bits");
    assert_eq!(stored.architecture, child.architecture);
    assert_eq!(parent.est_latency_ms, Some(12.5));
    assert_eq!(db.store.get_candidate(stored.id).await.unwrap(), Some(stored));
}
