//! NSGA-II (Deb et al., 2002): a generic core over objective vectors, and the [`Nsga2`] engine
//! that runs it over genomes.
//!
//! # The core
//! All objectives are minimised. Points may carry a constraint violation (0 when feasible):
//! under Deb's constrained domination a feasible point dominates an infeasible one, of two
//! infeasible points the smaller violation dominates, and feasible points compare by Pareto
//! dominance. [`non_dominated_sort`] splits points into fronts, [`crowding_distance`] measures
//! how isolated each point of a front is, [`Ranking`] holds both for the crowded comparison and
//! the binary tournament, and [`environmental_selection`] keeps the best `n` (whole fronts, the
//! last one cut by crowding distance). The core knows nothing of genomes; a test drives it as a
//! real-coded GA on ZDT1.
//!
//! # The engine
//! Objectives: perplexity and decode latency, plus decode memory with `memory_objective`, plus
//! the error rate (1 − accuracy) of each task the spec's `accuracy.maximize` names. A member
//! below the accuracy floors has a violation equal to its shortfall (the summed gap to the
//! floors); a member over the latency budget, one equal to its latency (every such member
//! exceeds the same budget, so ordering by latency orders by violation; the driver never trains
//! one, so only reused results get here). Unscored members (not yet trained, failed, diverged)
//! rank after every scored one.
//!
//! The population is rebuilt from the history on every call, so the engine keeps no state: the
//! population after generation 0 is the best `population` members of generation 0, and the
//! population after generation g is the environmental selection over the previous population
//! plus generation g's children, the (μ + λ) replacement of NSGA-II. A child that repeats an
//! earlier candidate (its result is reused) enters the union once. Each generation breeds
//! `population` children: a parent is chosen by crowded binary tournament; with probability
//! `crossover_probability` a second parent too, and the child takes each stage (block type and
//! block count) from one parent or the other, trimmed to the operator cap; then one mutation, of
//! one factor, as in aging evolution. The result is the non-dominated front of the feasible
//! scored members of the whole history.

use std::cmp::Ordering;
use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use search_space::{Genome, Stage};

use super::{
    Engine, EngineContext, EngineError, History, Member, Proposal, initial_population, mutated_child,
};

/// Pareto dominance for minimisation: `a` is no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Deb's constrained domination; a violation of 0 means feasible.
pub fn constrained_dominates(a: &[f64], violation_a: f64, b: &[f64], violation_b: f64) -> bool {
    match (violation_a > 0.0, violation_b > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => violation_a < violation_b,
        (false, false) => dominates(a, b),
    }
}

/// A point's violation; a short (or empty) slice means the rest are feasible.
fn violation(violations: &[f64], i: usize) -> f64 {
    violations.get(i).copied().unwrap_or(0.0)
}

/// Fast non-dominated sorting: the indices of `objectives` split into fronts, the first front
/// non-dominated, each later one dominated only by earlier fronts. Indices ascend within a front.
pub fn non_dominated_sort(objectives: &[Vec<f64>], violations: &[f64]) -> Vec<Vec<usize>> {
    let n = objectives.len();
    let dom = |a: usize, b: usize| {
        constrained_dominates(
            &objectives[a],
            violation(violations, a),
            &objectives[b],
            violation(violations, b),
        )
    };
    // For each point: whom it dominates, and by how many it is dominated.
    let mut dominated: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut dominators = vec![0usize; n];
    for a in 0..n {
        for b in a + 1..n {
            if dom(a, b) {
                dominated[a].push(b);
                dominators[b] += 1;
            } else if dom(b, a) {
                dominated[b].push(a);
                dominators[a] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|i| dominators[*i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &a in &current {
            for &b in &dominated[a] {
                dominators[b] -= 1;
                if dominators[b] == 0 {
                    next.push(b);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::replace(&mut current, next));
    }
    fronts
}

/// Crowding distance of each point of `front` (same order): per objective, the normalised gap
/// between its two neighbours, summed; the extremes of every objective get infinity. An
/// objective on which the whole front is equal adds nothing.
#[allow(
    clippy::needless_range_loop,
    reason = "`d` picks one objective out of every point's vector, not one element of a slice"
)]
pub fn crowding_distance(objectives: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let mut distance = vec![0.0; front.len()];
    if front.len() <= 2 {
        distance.fill(f64::INFINITY);
        return distance;
    }
    let dims = objectives[front[0]].len();
    let mut order: Vec<usize> = (0..front.len()).collect();
    for d in 0..dims {
        let value = |k: usize| objectives[front[k]][d];
        // Ties by position keep the result independent of the sort's stability.
        order.sort_by(|a, b| value(*a).total_cmp(&value(*b)).then(a.cmp(b)));
        let (lo, hi) = (value(order[0]), value(order[front.len() - 1]));
        distance[order[0]] = f64::INFINITY;
        distance[order[front.len() - 1]] = f64::INFINITY;
        if hi - lo <= 0.0 {
            continue;
        }
        for w in order.windows(3) {
            distance[w[1]] += (value(w[2]) - value(w[0])) / (hi - lo);
        }
    }
    distance
}

/// Every point's front (0 = non-dominated) and crowding distance within its front.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    pub rank: Vec<usize>,
    pub crowding: Vec<f64>,
}

impl Ranking {
    pub fn new(objectives: &[Vec<f64>], violations: &[f64]) -> Self {
        let n = objectives.len();
        let mut rank = vec![0; n];
        let mut crowding = vec![0.0; n];
        for (r, front) in non_dominated_sort(objectives, violations).iter().enumerate() {
            for (i, d) in front.iter().zip(crowding_distance(objectives, front)) {
                rank[*i] = r;
                crowding[*i] = d;
            }
        }
        Self { rank, crowding }
    }

    pub fn len(&self) -> usize {
        self.rank.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rank.is_empty()
    }

    /// The crowded comparison: the lower front first, then the larger crowding distance.
    /// `Less` means `a` is better.
    pub fn crowded_cmp(&self, a: usize, b: usize) -> Ordering {
        self.rank[a].cmp(&self.rank[b]).then(self.crowding[b].total_cmp(&self.crowding[a]))
    }

    /// Binary tournament: two distinct points drawn uniformly, the better by the crowded
    /// comparison wins (the first drawn on a tie). Panics on an empty ranking.
    pub fn tournament<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let n = self.len();
        let a = rng.random_range(0..n);
        if n == 1 {
            return a;
        }
        let b = (a + rng.random_range(1..n)) % n;
        if self.crowded_cmp(b, a) == Ordering::Less { b } else { a }
    }

    /// The best `n` points by the crowded comparison (ties to the lower index), best first.
    pub fn best(&self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|a, b| self.crowded_cmp(*a, *b).then(a.cmp(b)));
        order.truncate(n);
        order
    }
}

/// NSGA-II's environmental selection: the best `n` points, whole fronts first and the last
/// front that fits only partly cut by crowding distance (crowding within that front).
pub fn environmental_selection(objectives: &[Vec<f64>], violations: &[f64], n: usize) -> Vec<usize> {
    Ranking::new(objectives, violations).best(n)
}

/// The non-dominated points only (plain Pareto dominance), indices ascending; cheaper than a
/// full sort when only the first front is wanted.
pub fn pareto_front(objectives: &[Vec<f64>]) -> Vec<usize> {
    let mut front: Vec<usize> = Vec::new();
    for (i, p) in objectives.iter().enumerate() {
        if front.iter().any(|&j| dominates(&objectives[j], p)) {
            continue;
        }
        front.retain(|&j| !dominates(p, &objectives[j]));
        front.push(i);
    }
    front
}

/// NSGA-II over genomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nsga2 {
    /// Population size N, also the children per generation.
    pub population: u32,
    /// Generations after generation 0.
    pub generations: u32,
    /// Probability that a child is a crossover of two parents (it is mutated either way).
    pub crossover_probability: f64,
    /// Decode memory as a third objective.
    pub memory_objective: bool,
}

impl Nsga2 {
    /// The objective vector of a scored member: perplexity, latency, memory when asked for, then
    /// the error rate of each maximised task.
    fn objectives(&self, m: &Member) -> Option<Vec<f64>> {
        m.objectives.map(|o| {
            let mut v = vec![o.ppl, o.latency_ms];
            if self.memory_objective {
                v.push(o.memory_bytes);
            }
            v.extend_from_slice(&m.task_errors);
            v
        })
    }

    /// Ranks `members`: scored ones by constrained domination and crowding, unscored ones in a
    /// front after all of them, with no crowding (they are all alike).
    pub fn rank(&self, members: &[&Member]) -> Ranking {
        let scored: Vec<usize> = (0..members.len()).filter(|i| members[*i].objectives.is_some()).collect();
        let objectives: Vec<Vec<f64>> = scored.iter().filter_map(|i| self.objectives(members[*i])).collect();
        let violations: Vec<f64> = scored
            .iter()
            .map(|i| match members[*i].objectives {
                Some(_) if members[*i].shortfall > 0.0 => members[*i].shortfall,
                Some(o) if !members[*i].feasible => o.latency_ms.max(f64::MIN_POSITIVE),
                _ => 0.0,
            })
            .collect();
        let inner = Ranking::new(&objectives, &violations);
        let last = inner.rank.iter().max().map_or(0, |r| r + 1);
        let mut ranking = Ranking { rank: vec![last; members.len()], crowding: vec![0.0; members.len()] };
        for (k, i) in scored.iter().enumerate() {
            ranking.rank[*i] = inner.rank[k];
            ranking.crowding[*i] = inner.crowding[k];
        }
        ranking
    }

    /// The population after the history's last generation (see the module doc).
    pub fn population<'h>(&self, history: &'h History) -> Vec<&'h Member> {
        let n = self.population as usize;
        let mut population: Vec<&Member> = Vec::new();
        for generation in &history.generations {
            let mut seen: HashSet<i64> = population.iter().map(|m| m.candidate_id).collect();
            let mut union = population;
            union.extend(generation.iter().filter(|m| seen.insert(m.candidate_id)));
            let ranking = self.rank(&union);
            population = ranking.best(n).into_iter().map(|i| union[i]).collect();
        }
        population
    }
}

impl Engine for Nsga2 {
    fn propose(
        &self,
        ctx: &EngineContext,
        history: &History,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Proposal>, EngineError> {
        if history.generations.is_empty() {
            return initial_population(ctx, self.population as usize, rng);
        }
        if history.generations.len() > self.generations as usize {
            return Ok(Vec::new());
        }
        let population = self.population(history);
        if population.is_empty() {
            return Ok(Vec::new());
        }
        let ranking = self.rank(&population);
        let mut children = Vec::with_capacity(self.population as usize);
        for _ in 0..self.population {
            let a = population[ranking.tournament(rng)];
            if !rng.random_bool(self.crossover_probability.clamp(0.0, 1.0)) {
                children.push(mutated_child(ctx, a, rng)?);
                continue;
            }
            let b = population[ranking.tournament(rng)];
            let Some(mix) = crossover(ctx, a, b, rng) else {
                // The parents agree wherever a crossover could differ: mutation alone.
                children.push(mutated_child(ctx, a, rng)?);
                continue;
            };
            let mut child = mutated_child(ctx, &mix, rng)?;
            if child.parents == [mix.candidate_id] {
                child.parents = vec![a.candidate_id, b.candidate_id];
                child.origin = format!("{} + {}", crossover_origin(a, b, &mix), child.origin);
            }
            children.push(child);
        }
        Ok(children)
    }

    fn best<'h>(&self, history: &'h History) -> Vec<&'h Member> {
        let mut seen = HashSet::new();
        let members: Vec<&Member> = history
            .members()
            .filter(|m| m.feasible && m.objectives.is_some() && seen.insert(m.candidate_id))
            .collect();
        let objectives: Vec<Vec<f64>> = members.iter().filter_map(|m| self.objectives(m)).collect();
        pareto_front(&objectives).into_iter().map(|i| members[i]).collect()
    }
}

/// Stage-wise uniform crossover: each stage (block type and block count) from `a` or `b`, the
/// width (when it evolves) from either; then trimmed to the cap. Returns the mix as a member
/// (its id is `a`'s, a placeholder the caller replaces) or `None` when a few draws give nothing
/// new inside the space.
fn crossover(ctx: &EngineContext, a: &Member, b: &Member, rng: &mut ChaCha8Rng) -> Option<Member> {
    const DRAWS: usize = 8;
    for _ in 0..DRAWS {
        let stages: Vec<Stage> = a
            .genome
            .stages
            .iter()
            .zip(&b.genome.stages)
            .map(|(sa, sb)| if rng.random_bool(0.5) { sa.clone() } else { sb.clone() })
            .collect();
        let hidden_size = if rng.random_bool(0.5) { a.hidden_size } else { b.hidden_size };
        let Some(genome) =
            (Genome { stages }).trimmed_to(ctx.space.max_operators, ctx.space.min_blocks_per_stage)
        else {
            continue;
        };
        let is_parent =
            |m: &Member| m.genome == genome && (!ctx.evolve_width || m.hidden_size == hidden_size);
        if is_parent(a) || is_parent(b) || ctx.space.contains(&genome).is_err() {
            continue;
        }
        return Some(Member {
            genome,
            hidden_size,
            objectives: None,
            rung: 0,
            feasible: true,
            shortfall: 0.0,
            task_errors: Vec::new(),
            ..a.clone()
        });
    }
    None
}

/// Which stages came from which parent, for lineage.
fn crossover_origin(a: &Member, b: &Member, mix: &Member) -> String {
    let from = |p: &Member| -> Vec<String> {
        mix.genome
            .stages
            .iter()
            .zip(&p.genome.stages)
            .enumerate()
            .filter(|(_, (m, s))| m.block == s.block)
            .map(|(i, _)| i.to_string())
            .collect()
    };
    format!(
        "crossover(stages [{}] of {}, [{}] of {})",
        from(a).join(", "),
        a.candidate_id,
        from(b).join(", "),
        b.candidate_id
    )
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use search_space::space::rng;

    use super::*;
    use crate::engine::test_support::{evaluate, roomy_space, run_search};

    fn points(p: &[(f64, f64)]) -> Vec<Vec<f64>> {
        p.iter().map(|(a, b)| vec![*a, *b]).collect()
    }

    #[test]
    fn sorting_splits_hand_made_points_into_their_known_fronts() {
        let pts = points(&[
            (6.0, 6.0), // 0: front 2
            (2.0, 5.0), // 1: front 1
            (1.0, 4.0), // 2: front 0
            (3.0, 3.0), // 3: front 1
            (2.0, 2.0), // 4: front 0
            (5.0, 2.0), // 5: front 1
            (4.0, 1.0), // 6: front 0
            (2.0, 2.0), // 7: front 0, equal to 4 (equal points do not dominate each other)
        ]);
        assert_eq!(non_dominated_sort(&pts, &[]), vec![vec![2, 4, 6, 7], vec![1, 3, 5], vec![0]]);
        assert!(dominates(&[1.0, 1.0], &[1.0, 2.0]));
        assert!(!dominates(&[1.0, 1.0], &[1.0, 1.0]));
        assert!(!dominates(&[0.0, 3.0], &[1.0, 2.0]));
    }

    #[test]
    fn a_feasible_point_dominates_every_infeasible_one_and_smaller_violations_come_first() {
        let pts = points(&[(1.0, 1.0), (9.0, 9.0), (0.0, 0.0), (5.0, 5.0), (0.5, 0.5)]);
        // 0 and 2 and 4 break a constraint (2 and 4 by less than 0), so the poor feasible points
        // 1 and 3 rank ahead of them however good their objectives.
        let violations = [3.0, 0.0, 1.0, 0.0, 1.0];
        assert_eq!(non_dominated_sort(&pts, &violations), vec![vec![3], vec![1], vec![2, 4], vec![0]]);
    }

    #[test]
    fn crowding_distance_matches_a_hand_computed_example() {
        // Both objectives span 0..4. Sorted by f1, point 1 has neighbours 0 and 3: (3 - 0) / 4;
        // sorted by f2 its neighbours have f2 = 1 and 4: (4 - 1) / 4. Point 2: (4 - 1) / 4 and
        // (2 - 0) / 4. The extremes are infinite.
        let pts = points(&[(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]);
        let d = crowding_distance(&pts, &[0, 1, 2, 3]);
        assert_eq!(d[0], f64::INFINITY);
        assert_eq!(d[3], f64::INFINITY);
        assert!((d[1] - 1.5).abs() < 1e-12, "{}", d[1]);
        assert!((d[2] - 1.25).abs() < 1e-12, "{}", d[2]);
        // Two points or fewer: all extremes.
        assert_eq!(crowding_distance(&pts, &[1, 2]), [f64::INFINITY; 2]);
        // An objective on which the front is flat adds nothing (and divides by nothing).
        let flat = points(&[(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (4.0, 1.0)]);
        let d = crowding_distance(&flat, &[0, 1, 2, 3]);
        assert!((d[1] - 0.5).abs() < 1e-12 && (d[2] - 0.75).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn environmental_selection_keeps_whole_fronts_then_the_least_crowded() {
        let pts = points(&[
            (1.0, 4.0), // front 0
            (4.0, 1.0), // front 0
            (2.0, 9.0), // front 1, extreme
            (3.0, 7.0), // front 1, crowding (4-2)/7 + (9-4)/5 = 1.2857
            (4.0, 5.0), // front 1, crowding (6-3)/7 + (7-4)/5 = 1.0286
            (6.0, 4.0), // front 1, crowding (9-4)/7 + (5-2)/5 = 1.3143
            (9.0, 2.0), // front 1, extreme
            (9.0, 9.0), // front 2
        ]);
        let picked = environmental_selection(&pts, &[], 5);
        assert_eq!(picked, [0, 1, 2, 6, 5]);
        let picked = environmental_selection(&pts, &[], 6);
        assert_eq!(picked, [0, 1, 2, 6, 5, 3]);
    }

    #[test]
    fn the_binary_tournament_always_prefers_the_lower_front() {
        let pts = points(&[(1.0, 1.0), (2.0, 2.0)]);
        let ranking = Ranking::new(&pts, &[]);
        let mut r = rng(1);
        assert!((0..100).all(|_| ranking.tournament(&mut r) == 0));
        // Among three points of one front the interior one (finite crowding) loses to an
        // extreme; it can only win a tournament it is not in, so it never wins.
        let ranking = Ranking::new(&points(&[(0.0, 2.0), (1.0, 1.0), (2.0, 0.0)]), &[]);
        assert!((0..100).all(|_| ranking.tournament(&mut r) != 1));
    }

    /// ZDT1 (Zitzler, Deb & Thiele, 2000) with `x` in [0, 1]^30: the true front is
    /// f2 = 1 - √f1 for f1 in [0, 1], reached when x2..x30 are all 0.
    fn zdt1(x: &[f64]) -> Vec<f64> {
        let f1 = x[0];
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        vec![f1, g * (1.0 - (f1 / g).sqrt())]
    }

    /// Simulated binary crossover (Deb & Agrawal) per variable with probability 1/2, distribution
    /// index `eta`, children clamped to [0, 1].
    fn sbx(a: &[f64], b: &[f64], eta: f64, rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>) {
        let (mut c, mut d) = (a.to_vec(), b.to_vec());
        for i in 0..a.len() {
            if !rng.random_bool(0.5) {
                continue;
            }
            let u: f64 = rng.random();
            let beta = if u <= 0.5 {
                (2.0 * u).powf(1.0 / (eta + 1.0))
            } else {
                (0.5 / (1.0 - u)).powf(1.0 / (eta + 1.0))
            };
            c[i] = (0.5 * ((1.0 + beta) * a[i] + (1.0 - beta) * b[i])).clamp(0.0, 1.0);
            d[i] = (0.5 * ((1.0 - beta) * a[i] + (1.0 + beta) * b[i])).clamp(0.0, 1.0);
        }
        (c, d)
    }

    /// Polynomial mutation, each variable with probability `p`, distribution index `eta`.
    fn polynomial_mutation(x: &mut [f64], p: f64, eta: f64, rng: &mut ChaCha8Rng) {
        for v in x.iter_mut() {
            if rng.random_bool(p) {
                let u: f64 = rng.random();
                let delta = if u < 0.5 {
                    (2.0 * u).powf(1.0 / (eta + 1.0)) - 1.0
                } else {
                    1.0 - (2.0 * (1.0 - u)).powf(1.0 / (eta + 1.0))
                };
                *v = (*v + delta).clamp(0.0, 1.0);
            }
        }
    }

    #[test]
    fn nsga2_core_recovers_the_zdt1_front() {
        const VARS: usize = 30;
        const POP: usize = 100;
        const GENERATIONS: usize = 500;
        let mut r = ChaCha8Rng::seed_from_u64(2002);
        let mut xs: Vec<Vec<f64>> = (0..POP).map(|_| (0..VARS).map(|_| r.random()).collect()).collect();
        let mut fs: Vec<Vec<f64>> = xs.iter().map(|x| zdt1(x)).collect();
        for _ in 0..GENERATIONS {
            let ranking = Ranking::new(&fs, &[]);
            let mut children = Vec::with_capacity(POP);
            while children.len() < POP {
                let (a, b) = (ranking.tournament(&mut r), ranking.tournament(&mut r));
                let (mut c, mut d) = if r.random_bool(0.9) {
                    sbx(&xs[a], &xs[b], 15.0, &mut r)
                } else {
                    (xs[a].clone(), xs[b].clone())
                };
                polynomial_mutation(&mut c, 1.0 / VARS as f64, 20.0, &mut r);
                polynomial_mutation(&mut d, 1.0 / VARS as f64, 20.0, &mut r);
                children.push(c);
                children.push(d);
            }
            xs.extend(children);
            fs = xs.iter().map(|x| zdt1(x)).collect();
            let keep = environmental_selection(&fs, &[], POP);
            xs = keep.iter().map(|i| xs[*i].clone()).collect();
            fs = keep.iter().map(|i| fs[*i].clone()).collect();
        }
        // Generational distance, measured as the mean vertical gap to f2 = 1 - √f1 (an upper
        // bound on each point's Euclidean distance to the front).
        let gd = fs.iter().map(|f| f[1] - (1.0 - f[0].sqrt())).sum::<f64>() / POP as f64;
        let mut f1: Vec<f64> = fs.iter().map(|f| f[0]).collect();
        f1.sort_by(f64::total_cmp);
        let widest_gap = f1.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        eprintln!(
            "ZDT1 after {GENERATIONS} generations: GD {gd:.5}, f1 in [{:.4}, {:.4}], widest gap {widest_gap:.4}",
            f1[0],
            f1[POP - 1]
        );
        assert!(gd < 0.01, "generational distance {gd}");
        assert!(f1[0] < 0.01 && f1[POP - 1] > 0.99, "the front spans f1 in [{}, {}]", f1[0], f1[POP - 1]);
        assert!(widest_gap < 0.05, "the front has a hole of {widest_gap} in f1");
    }

    fn engine() -> Nsga2 {
        Nsga2 { population: 12, generations: 6, crossover_probability: 0.7, memory_objective: true }
    }

    #[test]
    fn nsga2_proposes_the_planned_candidates_and_the_same_seed_gives_the_same_search() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: true };
        let a = run_search(&engine(), &ctx, 8, |_| true);
        let b = run_search(&engine(), &ctx, 8, |_| true);
        assert_eq!(a.history, b.history);
        assert_eq!(a.proposals, b.proposals);
        assert_eq!(a.history.generations.len(), 7);
        assert!(a.history.generations.iter().all(|g| g.len() == 12));
        let planned = api::Algorithm::Nsga2 {
            population: 12,
            generations: 6,
            crossover_probability: 0.7,
            memory_objective: true,
        }
        .planned_candidates();
        assert_eq!(a.history.len() as u64, planned);
        assert!(a.proposals.iter().all(|p| ctx.space.contains(&p.genome).is_ok()));
    }

    #[test]
    fn crossover_children_take_every_stage_but_one_mutated_factor_from_their_parents() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = Nsga2 { crossover_probability: 1.0, ..engine() };
        let run = run_search(&e, &ctx, 9, |_| true);
        let member = |id: i64| run.history.members().find(|m| m.candidate_id == id).unwrap();
        let mut crossed = 0;
        for child in run.history.generations[1..].iter().flatten() {
            let proposal = &run.proposals[child.candidate_id as usize];
            if proposal.parents.len() != 2 {
                continue;
            }
            crossed += 1;
            assert!(proposal.origin.starts_with("crossover("), "{}", proposal.origin);
            let (a, b) = (member(proposal.parents[0]), member(proposal.parents[1]));
            let foreign = (0..child.genome.stages.len())
                .filter(|i| {
                    let s = &child.genome.stages[*i];
                    *s != a.genome.stages[*i] && *s != b.genome.stages[*i]
                })
                .count();
            assert!(
                foreign <= 1,
                "{foreign} stages of candidate {} come from neither parent",
                child.candidate_id
            );
        }
        assert!(crossed > 40, "only {crossed} of 72 children were crossovers");
    }

    #[test]
    fn the_population_prefers_feasible_then_scored_members() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = Nsga2 { population: 6, ..engine() };
        let mut r = rng(0);
        let proposals: Vec<Proposal> =
            (0..10).map(|_| crate::engine::random_proposal(&ctx, &mut r, "random").unwrap()).collect();
        let mut members = evaluate(&proposals, 0, |id| id >= 4);
        // 0..4 are infeasible with the best perplexities; 8 and 9 are unscored.
        for (i, m) in members.iter_mut().enumerate().take(4) {
            m.objectives.as_mut().unwrap().ppl = i as f64 * 0.01;
        }
        members[8].objectives = None;
        members[9].objectives = None;
        let history = History { generations: vec![members] };
        let ids: Vec<i64> = e.population(&history).iter().map(|m| m.candidate_id).collect();
        assert_eq!(ids.len(), 6);
        assert!(
            [4, 5, 6, 7].iter().all(|id| ids.contains(id)),
            "the feasible scored members survive: {ids:?}"
        );
        assert!(ids.iter().all(|id| *id < 8), "infeasible scored members before unscored: {ids:?}");
        let e = Nsga2 { population: 9, ..engine() };
        let ids: Vec<i64> = e.population(&history).iter().map(|m| m.candidate_id).collect();
        assert!(ids.contains(&8) ^ ids.contains(&9), "one unscored member fills the last place: {ids:?}");
    }

    #[test]
    fn the_result_is_the_non_dominated_front_of_the_feasible_members() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = Nsga2 { memory_objective: false, ..engine() };
        let run = run_search(&e, &ctx, 10, |id| id % 4 != 1);
        let best = e.best(&run.history);
        assert!(!best.is_empty());
        let feasible: Vec<&Member> = run.history.members().filter(|m| m.feasible).collect();
        let objectives = |m: &Member| {
            let o = m.objectives.unwrap();
            [o.ppl, o.latency_ms]
        };
        for m in &feasible {
            let on_front = best.iter().any(|b| b.candidate_id == m.candidate_id);
            let dominated = feasible.iter().any(|o| dominates(&objectives(o), &objectives(m)));
            assert_eq!(on_front, !dominated, "candidate {}", m.candidate_id);
        }
        assert!(best.iter().all(|m| m.feasible));
    }

    #[test]
    fn members_below_the_accuracy_floors_rank_after_feasible_ones_by_their_shortfall() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = Nsga2 { population: 4, memory_objective: false, ..engine() };
        let mut r = rng(2);
        let proposals: Vec<Proposal> =
            (0..6).map(|_| crate::engine::random_proposal(&ctx, &mut r, "random").unwrap()).collect();
        let mut members = evaluate(&proposals, 0, |_| true);
        // 0..3 fall short of the floors with the best perplexities, 0 by the least.
        for (i, m) in members.iter_mut().enumerate().take(3) {
            m.objectives.as_mut().unwrap().ppl = i as f64 * 0.01;
            m.feasible = false;
            m.shortfall = 0.1 * (i + 1) as f64;
        }
        let history = History { generations: vec![members] };
        let population = |n: u32| {
            let mut ids: Vec<i64> =
                Nsga2 { population: n, ..e }.population(&history).iter().map(|m| m.candidate_id).collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(population(3), [3, 4, 5], "the feasible members first");
        assert_eq!(population(4), [0, 3, 4, 5], "then the smallest shortfall");
        assert_eq!(population(5), [0, 1, 3, 4, 5]);
        assert!(e.best(&history).iter().all(|m| m.candidate_id >= 3));
    }

    #[test]
    fn a_maximised_task_is_one_more_objective() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = Nsga2 { memory_objective: false, ..engine() };
        let mut r = rng(3);
        let proposals: Vec<Proposal> =
            (0..3).map(|_| crate::engine::random_proposal(&ctx, &mut r, "random").unwrap()).collect();
        let mut members = evaluate(&proposals, 0, |_| true);
        // Equal perplexity and latency: only the recall error separates them.
        for (m, error) in members.iter_mut().zip([0.5, 0.1, 0.1]) {
            let o = m.objectives.as_mut().unwrap();
            (o.ppl, o.latency_ms) = (10.0, 5.0);
            m.task_errors = vec![error];
        }
        assert_eq!(e.objectives(&members[0]), Some(vec![10.0, 5.0, 0.5]));
        let refs: Vec<&Member> = members.iter().collect();
        let ranking = e.rank(&refs);
        assert_eq!(ranking.rank, [1, 0, 0], "the worse recall is dominated");
        let history = History { generations: vec![members.clone()] };
        let best: Vec<i64> = e.best(&history).iter().map(|m| m.candidate_id).collect();
        assert_eq!(best, [1, 2]);
        // Without the objective the three tie on the first front.
        for m in &mut members {
            m.task_errors.clear();
        }
        let refs: Vec<&Member> = members.iter().collect();
        assert_eq!(e.rank(&refs).rank, [0, 0, 0]);
    }
}
