//! Windows of a token stream, batched for next-token training and evaluation.
//!
//! A window of `seq_len` inputs needs `seq_len + 1` tokens: the targets are the inputs shifted
//! by one. Batches are plain row-major `Vec<u32>`s; the trainer turns them into tensors.
//!
//! - [`TrainBatches`] draws `batch_size` windows at random offsets. The offsets of the batch at
//!   step `s` are a pure function of `(seed, s)`: they come from a ChaCha8 stream seeded with
//!   `seed` and positioned at word `2 x batch_size x s`, one `u64` per offset, mapped onto the
//!   `len - seq_len` valid offsets by the widening multiply `(x x n) >> 64`. So batches repeat
//!   across machines and runs, and a resumed run can ask for step `s` directly. (The mapping has
//!   a bias below `n / 2^64`, far too small to matter.)
//! - [`ValidationBatches`] walks the stream once in order: window `i` starts at `i x seq_len`,
//!   so windows share one boundary token and every token after the first is a target exactly
//!   once, up to the last full window (a shorter tail is not evaluated).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::shardset::ShardStream;

/// A token stream batches are cut from: ids in memory, or one side of a shard set on disk, read
/// window by window. Both give the same windows for the same positions.
#[derive(Clone, Copy, Debug)]
pub enum TokenStream<'a> {
    Memory(&'a [u32]),
    Shards(&'a ShardStream),
}

impl TokenStream<'_> {
    /// Ids in the stream.
    pub fn len(&self) -> usize {
        match self {
            TokenStream::Memory(tokens) => tokens.len(),
            TokenStream::Shards(stream) => stream.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the ids at `start..start + n` to `out`.
    fn extend_into(&self, start: usize, n: usize, out: &mut Vec<u32>) {
        match self {
            TokenStream::Memory(tokens) => out.extend_from_slice(&tokens[start..start + n]),
            TokenStream::Shards(stream) => stream.extend_into(start, n, out),
        }
    }
}

impl<'a> From<&'a [u32]> for TokenStream<'a> {
    fn from(tokens: &'a [u32]) -> Self {
        TokenStream::Memory(tokens)
    }
}

impl<'a> From<&'a Vec<u32>> for TokenStream<'a> {
    fn from(tokens: &'a Vec<u32>) -> Self {
        TokenStream::Memory(tokens)
    }
}

impl<'a> From<&'a ShardStream> for TokenStream<'a> {
    fn from(stream: &'a ShardStream) -> Self {
        TokenStream::Shards(stream)
    }
}

/// Why windows could not be cut from a stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A batch needs at least one window of at least one token.
    #[error("sequence length and batch size must be positive (got {seq_len} and {batch_size})")]
    EmptyShape { seq_len: usize, batch_size: usize },
    /// The stream does not hold one window.
    #[error(
        "the token stream has {tokens} tokens, fewer than one window needs ({needed}: sequence length {seq_len} + 1)"
    )]
    StreamTooShort { tokens: usize, needed: usize, seq_len: usize },
}

/// A batch of windows, row-major: row `r` is `inputs[r * seq_len..(r + 1) * seq_len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Input ids, `rows x seq_len`.
    pub inputs: Vec<u32>,
    /// Target ids, `rows x seq_len`: each input's next token for text (synthetic tasks may
    /// ask for other targets; see `synthetic`).
    pub targets: Vec<u32>,
    /// Which targets count in loss and accuracy, `rows x seq_len`; `None` scores every target,
    /// as for text.
    pub scored: Option<Vec<bool>>,
    /// Number of windows.
    pub rows: usize,
    /// Tokens per window.
    pub seq_len: usize,
}

impl Batch {
    fn with_capacity(rows: usize, seq_len: usize) -> Self {
        Self {
            // One more than the inputs: a window is read whole before its last id moves over.
            inputs: Vec::with_capacity(rows * seq_len + 1),
            targets: Vec::with_capacity(rows * seq_len),
            scored: None,
            rows: 0,
            seq_len,
        }
    }

    /// Appends the window at `start`: `seq_len + 1` ids read once, the inputs all but the last
    /// and the targets all but the first.
    fn push_window(&mut self, tokens: TokenStream<'_>, start: usize) {
        let at = self.inputs.len();
        tokens.extend_into(start, self.seq_len + 1, &mut self.inputs);
        let last = self.inputs.pop().expect("a window holds seq_len + 1 >= 2 ids");
        self.targets.extend_from_slice(&self.inputs[at + 1..]);
        self.targets.push(last);
        self.rows += 1;
    }

    /// The rows `rows` of this batch as a batch of their own (micro-batches of one step).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let cells = rows.start * self.seq_len..rows.end * self.seq_len;
        Batch {
            inputs: self.inputs[cells.clone()].to_vec(),
            targets: self.targets[cells.clone()].to_vec(),
            scored: self.scored.as_ref().map(|s| s[cells].to_vec()),
            rows: rows.len(),
            seq_len: self.seq_len,
        }
    }
}

fn check_shape(tokens: usize, seq_len: usize, batch_size: usize) -> Result<(), BatchError> {
    if seq_len == 0 || batch_size == 0 {
        return Err(BatchError::EmptyShape { seq_len, batch_size });
    }
    let needed = seq_len + 1;
    if tokens < needed {
        return Err(BatchError::StreamTooShort { tokens, needed, seq_len });
    }
    Ok(())
}

/// Seeded random training windows; see the module doc.
#[derive(Clone, Debug)]
pub struct TrainBatches<'a> {
    tokens: TokenStream<'a>,
    seq_len: usize,
    batch_size: usize,
    seed: u64,
}

impl<'a> TrainBatches<'a> {
    /// Samples windows of `seq_len` from `tokens`, `batch_size` per batch; an error when the
    /// stream is shorter than one window.
    pub fn new(
        tokens: impl Into<TokenStream<'a>>,
        seq_len: usize,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self, BatchError> {
        let tokens = tokens.into();
        check_shape(tokens.len(), seq_len, batch_size)?;
        Ok(Self { tokens, seq_len, batch_size, seed })
    }

    /// Tokens per window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Windows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Input tokens in one batch (`batch_size x seq_len`), for token budgets.
    pub fn tokens_per_batch(&self) -> usize {
        self.batch_size * self.seq_len
    }

    /// The window start offsets of the batch at `step`.
    pub fn offsets(&self, step: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // Each offset takes one u64, i.e. two 32-bit words of the stream.
        rng.set_word_pos(u128::from(step) * 2 * self.batch_size as u128);
        let starts = (self.tokens.len() - self.seq_len) as u128;
        (0..self.batch_size).map(|_| ((u128::from(rng.next_u64()) * starts) >> 64) as usize).collect()
    }

    /// The batch at `step`: the same for the same seed, stream, shape and step.
    pub fn batch(&self, step: u64) -> Batch {
        let mut batch = Batch::with_capacity(self.batch_size, self.seq_len);
        for start in self.offsets(step) {
            batch.push_window(self.tokens, start);
        }
        batch
    }
}

/// Sequential, non-overlapping evaluation windows; see the module doc. The last batch may hold
/// fewer than `batch_size` windows.
#[derive(Clone, Debug)]
pub struct ValidationBatches<'a> {
    tokens: TokenStream<'a>,
    seq_len: usize,
    batch_size: usize,
    next_window: usize,
    windows: usize,
}

impl<'a> ValidationBatches<'a> {
    /// Cuts `tokens` into consecutive windows of `seq_len`, `batch_size` per batch; an error when
    /// the stream is shorter than one window.
    pub fn new(
        tokens: impl Into<TokenStream<'a>>,
        seq_len: usize,
        batch_size: usize,
    ) -> Result<Self, BatchError> {
        let tokens = tokens.into();
        check_shape(tokens.len(), seq_len, batch_size)?;
        let windows = (tokens.len() - 1) / seq_len;
        Ok(Self { tokens, seq_len, batch_size, next_window: 0, windows })
    }

    /// The number of windows in the whole stream.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The number of target tokens the whole stream evaluates (`windows x seq_len`).
    pub fn target_tokens(&self) -> usize {
        self.windows * self.seq_len
    }
}

impl Iterator for ValidationBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let rows = self.batch_size.min(self.windows - self.next_window);
        if rows == 0 {
            return None;
        }
        let mut batch = Batch::with_capacity(rows, self.seq_len);
        for window in self.next_window..self.next_window + rows {
            batch.push_window(self.tokens, window * self.seq_len);
        }
        self.next_window += rows;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let batches = (self.windows - self.next_window).div_ceil(self.batch_size);
        (batches, Some(batches))
    }
}

impl ExactSizeIterator for ValidationBatches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose token at position i is i, so windows show where they came from.
    fn counting(len: u32) -> Vec<u32> {
        (0..len).collect()
    }

    #[test]
    fn train_batches_repeat_for_a_seed_and_differ_across_seeds() {
        let tokens = counting(10_000);
        let sampler = TrainBatches::new(&tokens, 16, 8, 42).unwrap();
        let again = TrainBatches::new(&tokens, 16, 8, 42).unwrap();
        let other = TrainBatches::new(&tokens, 16, 8, 43).unwrap();
        for step in 0..5 {
            assert_eq!(sampler.batch(step), again.batch(step));
        }
        assert_ne!(sampler.offsets(0), other.offsets(0));
        assert_ne!(sampler.offsets(0), sampler.offsets(1));
        // Pinned so a change in the generator or the offset mapping cannot pass unnoticed; a
        // changed stream would change every proxy run's data order.
        assert_eq!(sampler.offsets(0), [6808, 9487, 4268, 6263, 2881, 1497, 3075, 8025]);
    }

    #[test]
    fn batch_at_a_step_does_not_depend_on_the_steps_drawn_before() {
        let tokens = counting(1_000);
        let sampler = TrainBatches::new(&tokens, 4, 3, 7).unwrap();
        let later = sampler.batch(9);
        let _ = sampler.batch(2);
        assert_eq!(sampler.batch(9), later);
        // Step s starts where step s - 1 ended in the generator's stream: drawing the offsets of
        // steps 0 and 1 with a batch of 6 gives the offsets of steps 0..4 with a batch of 3.
        let wide = TrainBatches::new(&tokens, 4, 6, 7).unwrap();
        let mut narrow = sampler.offsets(0);
        narrow.extend(sampler.offsets(1));
        assert_eq!(wide.offsets(0), narrow);
    }

    #[test]
    fn train_targets_are_inputs_shifted_by_one_and_windows_stay_inside_the_stream() {
        let tokens = counting(50);
        let sampler = TrainBatches::new(&tokens, 8, 16, 1).unwrap();
        for step in 0..20 {
            let batch = sampler.batch(step);
            assert_eq!((batch.rows, batch.seq_len), (16, 8));
            assert_eq!(batch.inputs.len(), 16 * 8);
            for (input_row, target_row) in batch.inputs.chunks(8).zip(batch.targets.chunks(8)) {
                let start = input_row[0];
                assert!(start as usize + 8 < 50, "window at {start} runs off the stream");
                assert_eq!(input_row, (start..start + 8).collect::<Vec<_>>());
                assert_eq!(target_row, (start + 1..start + 9).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn train_offsets_reach_both_ends_of_a_small_stream() {
        // 10 tokens, windows of 4: offsets 0..=5 are valid, and 2000 draws hit them all.
        let tokens = counting(10);
        let sampler = TrainBatches::new(&tokens, 4, 100, 3).unwrap();
        let mut seen = [false; 6];
        for step in 0..20 {
            for offset in sampler.offsets(step) {
                seen[offset] = true;
            }
        }
        assert_eq!(seen, [true; 6]);
    }

    #[test]
    fn stream_shorter_than_one_window_is_an_error() {
        let tokens = counting(8);
        assert_eq!(
            TrainBatches::new(&tokens, 8, 1, 0).unwrap_err(),
            BatchError::StreamTooShort { tokens: 8, needed: 9, seq_len: 8 }
        );
        assert!(ValidationBatches::new(&tokens, 8, 1).is_err());
        assert!(TrainBatches::new(&tokens, 7, 1, 0).is_ok(), "exactly one window fits");
        assert_eq!(
            TrainBatches::new(&tokens, 0, 1, 0).unwrap_err(),
            BatchError::EmptyShape { seq_len: 0, batch_size: 1 }
        );
        assert!(ValidationBatches::new(&tokens, 4, 0).is_err());
    }

    #[test]
    fn validation_windows_are_sequential_non_overlapping_and_cover_the_stream() {
        // 23 tokens, windows of 5: 4 windows (inputs 0..20, targets 1..21); tokens 21 and 22
        // are a tail too short for a window.
        let tokens = counting(23);
        let batches = ValidationBatches::new(&tokens, 5, 3).unwrap();
        assert_eq!((batches.windows(), batches.target_tokens(), batches.len()), (4, 20, 2));
        let batches: Vec<Batch> = batches.collect();
        assert_eq!(batches.iter().map(|b| b.rows).collect::<Vec<_>>(), [3, 1]);
        let inputs: Vec<u32> = batches.iter().flat_map(|b| b.inputs.clone()).collect();
        let targets: Vec<u32> = batches.iter().flat_map(|b| b.targets.clone()).collect();
        assert_eq!(inputs, counting(20));
        assert_eq!(targets, (1..21).collect::<Vec<_>>());
    }

    #[test]
    fn validation_stream_of_exactly_one_window_gives_one_batch() {
        let tokens = counting(6);
        let batches: Vec<Batch> = ValidationBatches::new(&tokens, 5, 4).unwrap().collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].inputs, [0, 1, 2, 3, 4]);
        assert_eq!(batches[0].targets, [1, 2, 3, 4, 5]);
    }
}
