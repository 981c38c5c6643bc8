//! The generators against reference solvers: short programs that answer each task by lookup
//! from the inputs seen so far, and so show that every scored target is recoverable and that
//! nothing else is scored.

use std::collections::HashMap;

use super::*;

/// A solver's answers: target position → predicted token.
type Answers = BTreeMap<usize, u32>;

/// Recall with single-token keys (`0..k`) and values (`k..2k`), noise or pads elsewhere: at a
/// key seen earlier in a complete pair, predict its value.
fn solve_recall(inputs: &[u32], k: u32) -> Answers {
    let mut map = HashMap::new();
    let mut out = Answers::new();
    for t in 0..inputs.len() {
        let token = inputs[t];
        if token < k {
            if let Some(&value) = map.get(&token) {
                out.insert(t, value);
            }
        } else if token < 2 * k && t > 0 && inputs[t - 1] < k {
            map.insert(inputs[t - 1], token);
        }
    }
    out
}

/// Fuzzy recall: runs of key tokens are keys and runs of value tokens their values; predict
/// the next value token of a key seen earlier.
fn solve_fuzzy(inputs: &[u32], k: u32) -> Answers {
    let is_key = |x: u32| x < k;
    let is_value = |x: u32| (k..2 * k).contains(&x);
    // Only pairs completed before a position are known there.
    let mut known: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
    let (mut key, mut value): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let mut out = Answers::new();
    for (t, &token) in inputs.iter().enumerate() {
        if is_key(token) {
            if !value.is_empty() {
                known.entry(std::mem::take(&mut key)).or_insert(std::mem::take(&mut value));
            }
            key.push(token);
        } else if is_value(token) {
            value.push(token);
        } else {
            key.clear();
            value.clear();
        }
        if let Some(v) = known.get(&key)
            && value.len() < v.len()
        {
            out.insert(t, v[value.len()]);
        }
    }
    out
}

/// Copying and compression: the non-blank tokens before the marker, written out at the blanks
/// after it.
fn solve_copy(inputs: &[u32], blank: u32, marker: u32) -> Answers {
    let p = inputs.iter().position(|&x| x == marker).expect("the marker is present");
    let content: Vec<u32> = inputs[..p].iter().copied().filter(|&x| x != blank).collect();
    content.into_iter().enumerate().map(|(j, x)| (p + 1 + j, x)).collect()
}

/// Memorization: at an insert token, the memorised value of the key before it.
fn solve_memorization(inputs: &[u32], insert: u32, map: &[u32]) -> Answers {
    (1..inputs.len()).filter(|&t| inputs[t] == insert).map(|t| (t, map[inputs[t - 1] as usize])).collect()
}

fn solve(tasks: &SyntheticTasks, task: usize, inputs: &[u32]) -> Answers {
    let spec = &tasks.config().tasks[task];
    let top = (spec.vocab - 1) as u32;
    match spec.task {
        Task::InContextRecall | Task::NoisyRecall => solve_recall(inputs, spec.key_count() as u32),
        Task::FuzzyRecall => solve_fuzzy(inputs, spec.key_count() as u32),
        Task::SelectiveCopying | Task::Compression => solve_copy(inputs, spec.pad(), top),
        Task::Memorization => solve_memorization(inputs, top, tasks.memorization_map()),
    }
}

fn scored(example: &Example) -> Answers {
    (0..example.inputs.len()).filter(|&t| example.scored[t]).map(|t| (t, example.targets[t])).collect()
}

fn all_tasks() -> SyntheticConfig {
    SyntheticConfig::new(Task::ALL)
}

#[test]
fn every_answer_is_recovered_by_the_reference_solver_and_nothing_else_is_scored() {
    // An odd and an even length, so padding on the left is exercised.
    for seq_len in [64, 127, 128] {
        let tasks = SyntheticTasks::new(&all_tasks(), seq_len).unwrap();
        for task in 0..Task::ALL.len() {
            let mut total = 0;
            for index in 0..40 {
                let example = tasks.local_example(task, 11, index);
                assert_eq!(example.inputs.len(), seq_len);
                assert_eq!(example.targets.len(), seq_len);
                assert_eq!(example.scored.len(), seq_len);
                let want = scored(&example);
                let got = solve(&tasks, task, &example.inputs);
                assert_eq!(got, want, "{} at seq_len {seq_len}, example {index}", Task::ALL[task]);
                total += want.len();
            }
            assert!(total > 40, "{} scores almost nothing: {total} answers", Task::ALL[task]);
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_examples_and_another_seed_other_ones() {
    let tasks = SyntheticTasks::new(&all_tasks(), 64).unwrap();
    let again = SyntheticTasks::new(&all_tasks(), 64).unwrap();
    for task in 0..Task::ALL.len() {
        assert_eq!(tasks.example(task, 3, 9), again.example(task, 3, 9));
        assert_ne!(tasks.example(task, 3, 9), tasks.example(task, 4, 9), "{}", Task::ALL[task]);
        assert_ne!(tasks.example(task, 3, 9), tasks.example(task, 3, 10), "{}", Task::ALL[task]);
    }
    assert_eq!(tasks.train_batch(5, 7, 8), again.train_batch(5, 7, 8));
    assert_eq!(tasks.validation_batches(2, 10, 4), again.validation_batches(2, 10, 4));
    // Pinned: a change to the generators changes every synthetic proxy run's data.
    let example = tasks.local_example(0, 0, 0);
    assert_eq!(example.inputs[..8], [15, 4, 10, 4, 10, 0, 13, 3]);
}

#[test]
fn recall_values_follow_one_map_per_sequence_and_differ_across_sequences() {
    let tasks = SyntheticTasks::new(&SyntheticConfig::new([Task::InContextRecall]), 128).unwrap();
    let map_of = |e: &Example| {
        let mut map = HashMap::new();
        for pair in e.inputs[1..].chunks(2).filter(|p| p.len() == 2) {
            assert_eq!(*map.entry(pair[0]).or_insert(pair[1]), pair[1], "one value per key");
        }
        map
    };
    let maps: Vec<_> = (0..5).map(|i| map_of(&tasks.local_example(0, 1, i))).collect();
    assert!(maps.windows(2).any(|w| w[0] != w[1]), "each sequence draws its own map");
}

#[test]
fn the_memorization_map_is_a_bijection_from_keys_onto_values_fixed_by_the_data_seed() {
    let config = SyntheticConfig::new([Task::Memorization]);
    let tasks = SyntheticTasks::new(&config, 32).unwrap();
    let mut values = tasks.memorization_map().to_vec();
    values.sort_unstable();
    assert_eq!(values, (127..254).collect::<Vec<u32>>());
    let other = SyntheticTasks::new(&SyntheticConfig { seed: 1, ..config }, 32).unwrap();
    assert_ne!(tasks.memorization_map(), other.memorization_map());
}

#[test]
fn tasks_in_a_mix_use_disjoint_ids_and_rows_take_the_tasks_in_turn() {
    let config: SyntheticConfig = "in_context_recall,selective_copying?vocab=8,memorization".parse().unwrap();
    let tasks = SyntheticTasks::new(&config, 64).unwrap();
    assert_eq!(tasks.vocab_size(), 16 + 8 + 256);
    let ranges = [0..16, 16..24, 24..280];
    let batch = tasks.train_batch(0, 3, 6);
    assert_eq!((batch.rows, batch.seq_len), (6, 64));
    for (row, (inputs, targets)) in batch.inputs.chunks(64).zip(batch.targets.chunks(64)).enumerate() {
        let range = &ranges[row % 3];
        assert!(inputs.iter().chain(targets).all(|x| range.contains(x)), "row {row}: {inputs:?}");
    }
    let scored = batch.scored.as_ref().unwrap();
    assert_eq!(scored.len(), 6 * 64);
}

#[test]
fn corpus_strings_parse_with_parameters_and_print_back() {
    let config: SyntheticConfig =
        "in-context-recall,noisy_recall?noise=0.4&vocab=48,compression?tokens=8".parse().unwrap();
    assert_eq!(config.tasks.len(), 3);
    assert_eq!(config.tasks[0], TaskSpec::new(Task::InContextRecall));
    assert_eq!((config.tasks[1].noise, config.tasks[1].vocab, config.tasks[1].noise_vocab), (0.4, 48, 16));
    assert_eq!(config.tasks[2].tokens, 8);
    let printed = config.to_string();
    assert_eq!(printed, "synthetic:in_context_recall,noisy_recall?vocab=48&noise=0.4,compression?tokens=8");
    assert_eq!(printed["synthetic:".len()..].parse::<SyntheticConfig>().unwrap(), config);
}

#[test]
fn bad_corpus_strings_say_what_is_wrong() {
    let err = |s: &str| s.parse::<SyntheticConfig>().unwrap_err().to_string();
    assert!(err("recall").contains("unknown synthetic task `recall`"), "{}", err("recall"));
    assert_eq!(err("compression,compression"), "synthetic task compression is named twice");
    assert_eq!(
        err("in_context_recall?noise=0.1"),
        "synthetic task in_context_recall has no parameter `noise` (it takes vocab)"
    );
    assert_eq!(err("noisy_recall?noise=1.5"), "synthetic task noisy_recall: noise=1.5: must be in [0, 1)");
    assert_eq!(
        err("fuzzy_recall?key_motif=x"),
        "synthetic task fuzzy_recall: key_motif=x: not a whole number"
    );
    assert_eq!(err("memorization?vocab"), "`vocab` is not a KEY=VALUE parameter");
}

#[test]
fn a_layout_that_does_not_fit_the_sequence_length_is_refused() {
    let err = |s: &str, seq_len| SyntheticTasks::new(&s.parse().unwrap(), seq_len).unwrap_err().to_string();
    assert_eq!(
        err("selective_copying", 32),
        "synthetic task selective_copying: copying 16 tokens needs seq_len ≥ 33"
    );
    assert_eq!(
        err("compression", 32),
        "synthetic task compression: reconstructing 31 tokens needs seq_len ≥ 63"
    );
    assert!(err("in_context_recall?vocab=2", 64).contains("no room for keys"));
    assert!(err("fuzzy_recall?key_motif=9", 64).contains("motifs of 9 tokens"));
    assert!(SyntheticTasks::new(&"selective_copying".parse().unwrap(), 33).is_ok());
}

#[test]
fn the_tasks_are_the_ones_search_specs_name() {
    let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, api::accuracy::SYNTHETIC_TASKS);
    assert_eq!(super::super::SYNTHETIC_PREFIX, api::accuracy::SYNTHETIC_PREFIX);
}
