use search_space::space::rng;
use search_space::{
    BlockType, Genome, MixerKind, MixerRatio, MutationError, MutationKind, SearchSpace, Stage,
};

fn stage(mixers: &[MixerKind], ratio: MixerRatio, ffns: u8, blocks: u32) -> Stage {
    Stage { block: BlockType { mixers: mixers.to_vec(), ratio, ffns_per_mixer: ffns }, blocks }
}

use MixerKind::{Attention as A, DeltaNet as D, Mamba2 as M2};

#[test]
fn blocks_expand_in_ratio_order_with_ffns_after_each_mixer() {
    let b = BlockType { mixers: vec![A, M2], ratio: MixerRatio::R1to3, ffns_per_mixer: 2 };
    let codes: Vec<&str> = b.operators().iter().map(|o| o.code()).collect();
    assert_eq!(codes, ["A", "F", "F", "M2", "F", "F", "M2", "F", "F", "M2", "F", "F"]);
    assert_eq!(b.operator_count(), 12);
}

#[test]
fn over_the_cap_the_last_stage_is_trimmed_first() {
    // 3 stages of 4-op blocks (1:1, one FFN each): 8 + 8 + 6 blocks = 88 ops.
    let g = Genome {
        stages: vec![
            stage(&[D, M2], MixerRatio::R1to1, 1, 2),
            stage(&[A], MixerRatio::R0to1, 1, 5),
            stage(&[M2, D], MixerRatio::R1to1, 1, 6),
        ],
    };
    assert_eq!(g.operator_count(), 8 + 10 + 24);
    let t = g.trimmed_to(30, 1).unwrap();
    assert_eq!(t.stages.iter().map(|s| s.blocks).collect::<Vec<_>>(), [2, 5, 3]);
    assert_eq!(t.operator_count(), 30);
    // When the last stage alone cannot absorb it, the one before gives blocks too.
    let t = g.trimmed_to(16, 1).unwrap();
    assert_eq!(t.stages.iter().map(|s| s.blocks).collect::<Vec<_>>(), [2, 2, 1]);
    // The minimum blocks per stage is the floor.
    assert_eq!(g.trimmed_to(9, 1), None);
    assert_eq!(g.trimmed_to(30, 4), None);
    let t = g.trimmed_to(36, 2).unwrap();
    assert_eq!(t.stages.iter().map(|s| s.blocks).collect::<Vec<_>>(), [2, 5, 4]);
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_varies_across_seeds() {
    let space = SearchSpace::default();
    let a: Vec<Genome> = (0..20).map(|_| ()).scan(rng(7), |r, _| Some(space.sample(r).unwrap())).collect();
    let b: Vec<Genome> = (0..20).map(|_| ()).scan(rng(7), |r, _| Some(space.sample(r).unwrap())).collect();
    let c: Vec<Genome> = (0..20).map(|_| ()).scan(rng(8), |r, _| Some(space.sample(r).unwrap())).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn sampled_genomes_cover_every_mixer_ratio_and_ffn_count() {
    let space = SearchSpace::default();
    let mut r = rng(1);
    let genomes: Vec<Genome> = (0..300).map(|_| space.sample(&mut r).unwrap()).collect();
    for m in &space.mixers {
        assert!(
            genomes.iter().any(|g| g.stages.iter().any(|s| s.block.mixers.contains(m))),
            "{m} never sampled"
        );
    }
    for ratio in MixerRatio::ALL {
        assert!(
            genomes.iter().any(|g| g.stages.iter().any(|s| s.block.ratio == ratio)),
            "{ratio} never sampled"
        );
    }
    for f in 0..=2 {
        assert!(
            genomes.iter().any(|g| g.stages.iter().any(|s| s.block.ffns_per_mixer == f)),
            "{f} FFNs never sampled"
        );
    }
}

#[test]
fn each_mutation_kind_changes_exactly_its_factor() {
    let space = SearchSpace::default();
    let parent = Genome {
        stages: vec![
            stage(&[D, M2], MixerRatio::R1to1, 1, 2),
            stage(&[A], MixerRatio::R0to1, 1, 2),
            stage(&[M2], MixerRatio::R0to1, 2, 2),
        ],
    };
    space.contains(&parent).unwrap();
    let mut r = rng(3);
    for _ in 0..50 {
        let (child, m) = space.mutate_with(&parent, MutationKind::Operator, &mut r).unwrap();
        let diff: Vec<usize> = (0..3).filter(|i| parent.stages[*i] != child.stages[*i]).collect();
        assert_eq!(diff, [m.stage]);
        let (p, c) = (&parent.stages[m.stage].block, &child.stages[m.stage].block);
        assert_eq!((p.ratio, p.ffns_per_mixer), (c.ratio, c.ffns_per_mixer));
        assert_eq!(p.mixers.iter().zip(&c.mixers).filter(|(a, b)| a != b).count(), 1, "{m:?}");

        let (child, m) = space.mutate_with(&parent, MutationKind::FfnRatio, &mut r).unwrap();
        let (p, c) = (&parent.stages[m.stage].block, &child.stages[m.stage].block);
        assert_ne!(p.ffns_per_mixer, c.ffns_per_mixer);
        assert_eq!((&p.mixers, p.ratio), (&c.mixers, c.ratio));

        let (child, m) = space.mutate_with(&parent, MutationKind::MixerRatio, &mut r).unwrap();
        let (p, c) = (&parent.stages[m.stage].block, &child.stages[m.stage].block);
        assert_ne!(p.ratio, c.ratio);
        assert_eq!(p.ffns_per_mixer, c.ffns_per_mixer);
        space.contains(&child).unwrap();

        let (child, m) = space.mutate_with(&parent, MutationKind::Blocks, &mut r).unwrap();
        assert_ne!(parent.stages[m.stage].blocks, child.stages[m.stage].blocks);
        assert_eq!(parent.stages[m.stage].block, child.stages[m.stage].block);
    }
}

#[test]
fn a_mutation_that_cannot_happen_says_why() {
    let space = SearchSpace {
        mixers: vec![A],
        ratios: vec![MixerRatio::R0to1],
        ffns_per_mixer: vec![1],
        min_blocks_per_stage: 2,
        max_blocks_per_stage: 2,
        ..SearchSpace::default()
    };
    let only = Genome { stages: (0..3).map(|_| stage(&[A], MixerRatio::R0to1, 1, 2)).collect() };
    let mut r = rng(0);
    for kind in MutationKind::ALL {
        assert_eq!(space.mutate_with(&only, kind, &mut r), Err(MutationError::NoAlternative { kind }));
    }
    assert_eq!(space.mutate(&only, &mut r), Err(MutationError::Exhausted));

    let outside = Genome { stages: vec![stage(&[M2], MixerRatio::R0to1, 1, 2)] };
    let err = space.mutate(&outside, &mut r).unwrap_err();
    assert!(matches!(err, MutationError::ParentOutsideSpace(_)));
    assert!(
        err.to_string().contains("stages[0].block.mixers[0]: mamba2 is not among the space's mixers"),
        "{err}"
    );
}

#[test]
fn invalid_space_bounds_are_reported_with_paths() {
    let space = SearchSpace {
        mixers: vec![],
        ffns_per_mixer: vec![1, 1, 5],
        min_blocks_per_stage: 4,
        max_blocks_per_stage: 2,
        ..SearchSpace::default()
    };
    let e = space.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "mixers: must not be empty; ffns_per_mixer[1]: 1 is listed twice; \
         ffns_per_mixer[2]: must be 0, 1 or 2, got 5; max_blocks_per_stage: 2 is below min_blocks_per_stage 4"
    );
    let tiny_cap = SearchSpace { max_operators: 2, ..SearchSpace::default() };
    assert_eq!(
        tiny_cap.validate().unwrap_err().to_string(),
        "max_operators: 2 is below the smallest genome in the space (3 operators)"
    );
}

#[test]
fn widths_that_cannot_dimension_an_allowed_mixer_are_rejected() {
    let space = SearchSpace { hidden_sizes: vec![1024, 1000], ..SearchSpace::default() };
    let settings = search_space::presets::flash_1b_settings();
    let e = space.check_model(&settings).unwrap_err().to_string();
    assert!(e.starts_with("hidden_sizes[1]: hidden size 1000 is not divisible by 16 deltanet heads"), "{e}");
    SearchSpace::default().check_model(&settings).unwrap();
}

/// Found by the property tests: only the smallest block shapes fit, and drawing shapes blindly then
/// rejecting almost never hit them.
#[test]
fn sampling_finds_the_few_genomes_of_a_tight_space() {
    let space = SearchSpace {
        mixers: vec![M2, MixerKind::GatedDeltaNet],
        ratios: vec![MixerRatio::R0to1, MixerRatio::R1to1, MixerRatio::R1to3],
        ffns_per_mixer: vec![0, 1, 2],
        stages: 4,
        min_blocks_per_stage: 2,
        max_blocks_per_stage: 2,
        max_operators: 8,
        hidden_sizes: vec![1024],
    };
    space.validate().unwrap();
    let mut r = rng(3);
    for _ in 0..200 {
        let g = space.sample(&mut r).unwrap();
        space.contains(&g).unwrap();
        assert_eq!(g.operator_count(), 8, "only one-mixer, FFN-free blocks fit: {g:?}");
    }
}

#[test]
fn enumeration_lists_every_genome_of_a_small_space_once_and_every_sample_is_in_it() {
    let space = SearchSpace {
        mixers: vec![A, M2, D],
        ratios: vec![MixerRatio::R0to1, MixerRatio::R1to1],
        ffns_per_mixer: vec![0, 1],
        stages: 2,
        min_blocks_per_stage: 1,
        max_blocks_per_stage: 2,
        max_operators: 30,
        hidden_sizes: vec![64],
    };
    // Per stage: (3 single mixers + 6 ordered pairs) × 2 FFN counts × 2 block counts = 36.
    let all = space.enumerate(10_000).unwrap();
    assert_eq!(all.len(), 36 * 36);
    let distinct: std::collections::HashSet<&Genome> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a genome is listed twice");
    assert!(all.iter().all(|g| space.contains(g).is_ok()));
    let mut r = rng(7);
    for _ in 0..200 {
        let g = space.sample(&mut r).unwrap();
        assert!(distinct.contains(&g), "sampled {g:?} is not enumerated");
    }
    // The cap leaves genomes out rather than trimming them into duplicates.
    let capped = SearchSpace { max_operators: 6, ..space.clone() };
    let some = capped.enumerate(10_000).unwrap();
    assert!(some.len() < all.len() && some.iter().all(|g| g.operator_count() <= 6));
    // Too many to list is an error that names the count.
    let err = space.enumerate(1000).unwrap_err().to_string();
    assert!(err.contains("1296") && err.contains("1000"), "{err}");
}
