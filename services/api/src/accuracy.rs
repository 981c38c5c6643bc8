//! Goals on per-task accuracy, for searches whose proxy trains on the built-in synthetic tasks.
//!
//! Perplexity alone cannot see what cutting the KV cache costs in recall: attention-free mixers
//! can reach a good language-modelling loss and still fail to look a value up in their context.
//! A search that trains on a synthetic task mix (`proxy.corpus = "synthetic:..."`) gets each
//! task's accuracy with every result, and its spec can use it in two ways:
//!
//! - **Floors** (`min`, every engine): a candidate whose accuracy on a task ends below that task's
//!   floor is infeasible, like one over the latency budget. Aging evolution never breeds from it
//!   and it is never the best; NSGA-II ranks it after every feasible member, by how far it falls
//!   short ([`AccuracyGoals::shortfall`]); the leaderboard's `feasible` filter and the exported
//!   best leave it out.
//! - **Objectives** (`maximize`, NSGA-II only): each task's error rate (1 − accuracy) is minimised
//!   next to perplexity and latency (and decode memory).
//!
//! A task the result does not report counts as accuracy 0. The names are those of
//! [`SYNTHETIC_TASKS`]; the worker's generators implement the same six.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use search_space::ValidationErrors;
use serde::{Deserialize, Serialize};

/// The built-in synthetic tasks, by the names corpus strings and results use.
pub const SYNTHETIC_TASKS: [&str; 6] =
    ["in_context_recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression", "memorization"];

/// The prefix of a synthetic corpus string.
pub const SYNTHETIC_PREFIX: &str = "synthetic:";

/// The tasks a corpus string trains, by canonical name (`-` read as `_`), in its order; `None`
/// for a path. Parameters after `?` are the worker's to check.
pub fn synthetic_tasks(corpus: &str) -> Option<Vec<String>> {
    let tasks = corpus.strip_prefix(SYNTHETIC_PREFIX)?;
    Some(tasks.split(',').map(|t| t.split('?').next().unwrap_or_default().trim().replace('-', "_")).collect())
}

/// What a search asks of candidates' per-task accuracy (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccuracyGoals {
    /// Floors: task → the lowest acceptable accuracy, in [0, 1]. A candidate below any floor is
    /// infeasible.
    #[schemars(extend(
        "propertyNames" = { "enum": SYNTHETIC_TASKS },
        "additionalProperties" = { "type": "number", "minimum": 0, "maximum": 1 }
    ))]
    pub min: BTreeMap<String, f64>,
    /// Tasks whose accuracy NSGA-II maximises, each an extra objective (as the error rate
    /// 1 − accuracy) after perplexity, latency and, when asked for, memory.
    #[schemars(length(max = 6), extend("uniqueItems" = true, "items" = { "enum": SYNTHETIC_TASKS }))]
    pub maximize: Vec<String>,
}

impl AccuracyGoals {
    /// The goals of a stored spec (its `accuracy` field); none when it has none.
    pub fn of_spec(spec: &serde_json::Value) -> Self {
        spec.get("accuracy").and_then(|a| serde_json::from_value(a.clone()).ok()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.min.is_empty() && self.maximize.is_empty()
    }

    /// How far `accuracy` falls below the floors, summed over the tasks (0 when every floor is
    /// met, and without floors). A task missing from `accuracy` counts as 0.
    pub fn shortfall(&self, accuracy: &BTreeMap<String, f64>) -> f64 {
        self.min
            .iter()
            .map(|(task, floor)| (floor - accuracy.get(task).copied().unwrap_or(0.0)).max(0.0))
            .sum()
    }

    /// Every floor is met.
    pub fn met(&self, accuracy: &BTreeMap<String, f64>) -> bool {
        self.shortfall(accuracy) <= 0.0
    }

    /// The error rate (1 − accuracy) of each maximised task, in `maximize`'s order; 1 for a task
    /// missing from `accuracy`.
    pub fn errors(&self, accuracy: &BTreeMap<String, f64>) -> Vec<f64> {
        self.maximize.iter().map(|t| 1.0 - accuracy.get(t).copied().unwrap_or(0.0)).collect()
    }

    /// The problems of these goals for a search training on `corpus`; `maximize_allowed` says
    /// whether the algorithm takes extra objectives (NSGA-II).
    pub(crate) fn validate(
        &self,
        corpus: &str,
        maximize_allowed: bool,
        algorithm: &str,
        errs: &mut ValidationErrors,
    ) {
        if self.is_empty() {
            return;
        }
        let trained = synthetic_tasks(corpus);
        let check = |path: String, task: &str, errs: &mut ValidationErrors| {
            if !SYNTHETIC_TASKS.contains(&task) {
                errs.push(
                    path,
                    format!("unknown task `{}`; expected one of {}", shown(task), SYNTHETIC_TASKS.join(", ")),
                );
            } else if let Some(tasks) = &trained
                && !tasks.iter().any(|t| t == task)
            {
                errs.push(path, format!("`{task}` is not in the proxy corpus `{}`", shown(corpus)));
            }
        };
        if trained.is_none() {
            errs.push(
                "accuracy",
                "accuracy is measured on the built-in synthetic tasks only: set proxy.corpus to synthetic:TASK[,TASK...]",
            );
        }
        for (task, floor) in &self.min {
            let path = format!("accuracy.min.{}", shown(task));
            check(path.clone(), task, errs);
            if !(floor.is_finite() && (0.0..=1.0).contains(floor)) {
                errs.push(path, format!("must be an accuracy in [0, 1], got {floor}"));
            }
        }
        if !self.maximize.is_empty() && !maximize_allowed {
            errs.push(
                "accuracy.maximize",
                format!(
                    "only nsga2 takes extra objectives; `{algorithm}` can use floors (accuracy.min) instead"
                ),
            );
        }
        if self.maximize.len() > SYNTHETIC_TASKS.len() {
            errs.push(
                "accuracy.maximize",
                format!("at most {} tasks, got {}", SYNTHETIC_TASKS.len(), self.maximize.len()),
            );
            return;
        }
        for (i, task) in self.maximize.iter().enumerate() {
            let path = format!("accuracy.maximize[{i}]");
            if self.maximize[..i].contains(task) {
                errs.push(path, format!("repeats `{}`", shown(task)));
            } else {
                check(path, task, errs);
            }
        }
    }
}

/// At most 40 characters of user text, for messages.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

/// The problems of a corpus string's task names (`proxy.corpus`), if it is synthetic.
pub(crate) fn validate_corpus(corpus: &str, errs: &mut ValidationErrors) {
    let Some(tasks) = synthetic_tasks(corpus) else {
        return;
    };
    for task in &tasks {
        if task.is_empty() {
            errs.push("proxy.corpus", "names an empty task (synthetic:TASK[,TASK...])");
        } else if !SYNTHETIC_TASKS.contains(&task.as_str()) {
            errs.push(
                "proxy.corpus",
                format!(
                    "unknown synthetic task `{}`; expected one of {}",
                    shown(task),
                    SYNTHETIC_TASKS.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn corpus_strings_name_their_tasks_without_parameters() {
        assert_eq!(
            synthetic_tasks("synthetic:in_context_recall,noisy-recall?noise=0.4&vocab=48"),
            Some(vec!["in_context_recall".to_owned(), "noisy_recall".to_owned()])
        );
        assert_eq!(synthetic_tasks("data/tinyshakespeare.txt"), None);
    }

    #[test]
    fn shortfall_sums_the_gaps_below_the_floors_and_missing_tasks_count_as_zero() {
        let goals = AccuracyGoals {
            min: acc(&[("in_context_recall", 0.9), ("compression", 0.5)]).into_iter().collect(),
            maximize: vec![],
        };
        assert_eq!(goals.shortfall(&acc(&[("in_context_recall", 0.95), ("compression", 0.6)])), 0.0);
        assert!(goals.met(&acc(&[("in_context_recall", 0.9), ("compression", 0.5)])));
        let short = goals.shortfall(&acc(&[("in_context_recall", 0.7), ("compression", 0.6)]));
        assert!((short - 0.2).abs() < 1e-12, "{short}");
        let missing = goals.shortfall(&acc(&[("in_context_recall", 0.7)]));
        assert!((missing - 0.7).abs() < 1e-12, "{missing}");
        assert!(!goals.met(&acc(&[])));
        assert!(AccuracyGoals::default().met(&acc(&[])));
    }

    #[test]
    fn errors_follow_the_maximised_tasks_in_order() {
        let goals = AccuracyGoals {
            min: BTreeMap::new(),
            maximize: vec!["selective_copying".into(), "in_context_recall".into()],
        };
        assert_eq!(
            goals.errors(&acc(&[("in_context_recall", 0.75), ("selective_copying", 0.5)])),
            vec![0.5, 0.25]
        );
        assert_eq!(goals.errors(&acc(&[])), vec![1.0, 1.0]);
    }

    #[test]
    fn validation_names_each_bad_goal_by_its_path() {
        let goals = AccuracyGoals {
            min: acc(&[("in_context_recall", 1.5), ("recall", 0.5), ("compression", 0.5)]),
            maximize: vec!["in_context_recall".into(), "in_context_recall".into()],
        };
        let mut errs = ValidationErrors::new();
        goals.validate("synthetic:in_context_recall", false, "aging_evolution", &mut errs);
        let paths: Vec<&str> = errs.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "accuracy.min.compression",
                "accuracy.min.in_context_recall",
                "accuracy.min.recall",
                "accuracy.maximize",
                "accuracy.maximize[1]",
            ],
            "{errs:?}"
        );
        let mut errs = ValidationErrors::new();
        goals.validate("data/text.txt", true, "nsga2", &mut errs);
        assert_eq!(errs.errors()[0].path, "accuracy");
    }

    #[test]
    fn unknown_task_names_in_a_corpus_string_are_refused() {
        let mut errs = ValidationErrors::new();
        validate_corpus("synthetic:in_context_recall,copy", &mut errs);
        assert_eq!(errs.errors().len(), 1);
        assert!(errs.errors()[0].message.contains("unknown synthetic task `copy`"), "{errs:?}");
        let mut errs = ValidationErrors::new();
        validate_corpus("synthetic:fuzzy-recall?key_motif=2,memorization", &mut errs);
        validate_corpus("corpus/", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }
}
