//! Causal grouped-query self-attention with rotary position embeddings, full or sliding-window.
//!
//! For a sequence `x ∈ R^{T×hidden}` and query head `j` (of `H`), served by key/value head
//! `j / (H / H_kv)`:
//!
//! ```text
//! q_t = RoPE(W_q x_t, t),  k_s = RoPE(W_k x_s, s),  v_s = W_v x_s
//! y_t = W_o · concat_j Σ_{s ∈ S(t)} softmax_s(q_t·k_s / √head_dim) v_s
//! S(t) = { s : s ≤ t }                      (full attention)
//! S(t) = { s : s ≤ t, t − w < s or s < M }  (sliding window of w, M meta tokens)
//! ```
//!
//! With a window, the meta tokens (the first `M` positions, which the model puts in front of
//! every sequence) stay visible to every query however far it is past them: the mask of
//! Nemotron-Flash and Hymba's sliding-window layers with meta tokens (XinDongol/SWA-SinkMeta
//! `modules.py`: the causal window mask or'ed with "key is a meta token"). Without them a
//! windowed layer would lose its attention sink once the window slides past the prefix.
//!
//! RoPE uses the rotate-half convention: the head vector is split into halves `(a, b)` and
//! pair `i` (`a_i`, `b_i`) is rotated by the angle `pos · θ^(−2i/head_dim)`. burn's
//! `RotaryEncoding` rotates interleaved pairs `(x_2i, x_2i+1)` instead and precomputes a table
//! up to a maximum length, so it would neither load checkpoints written in the rotate-half layout
//! nor serve unbounded decode positions; the angles are computed here per call, in f64.
//!
//! Training and prefill compute the whole `[T, cached + T]` score matrix at once under one
//! boolean mask (future keys, and keys older than the window that are not meta tokens), built
//! once per call from the keys' absolute positions. The query
//! heads that share a key/value head are folded into the query rows of that head
//! (`[batch, H_kv, groups·T, head_dim]`), so the keys and values are never copied `groups` times.
//! The product runs through burn's fused attention op: flash-style kernels on the CPU and GPU
//! backends when no gradient is taken, a materialised score matrix under autodiff.
//!
//! Decoding keeps a caller-owned [`KvCache`] of rotated keys and values. With a sliding window it
//! keeps only the meta tokens' entries and the last `w`, so decode memory is bounded by
//! `M + w`, not the context.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use search_space::ops::AttentionSpec;

use super::init::linear;

/// Configuration of an [`Attention`] layer.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width: the size of the input and output vectors.
    pub hidden: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; divides `num_heads`, each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head (even, for the RoPE half split).
    pub head_dim: usize,
    /// Keys a query sees, itself included, besides the meta tokens; `None` is full causal
    /// attention.
    #[config(default = "None")]
    pub sliding_window: Option<usize>,
    /// Leading positions (the model's meta tokens) that every query sees whatever the window.
    #[config(default = 0)]
    pub meta_tokens: usize,
    /// RoPE base θ.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Deviation of the normal initial weights of the projections that read the input.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Deviation of the normal initial weights of the output projection, which writes to the
    /// residual stream; the model scales it by depth ([`super::init::residual_output_std`]).
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

/// Grouped-query causal self-attention with RoPE and no biases.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[hidden, num_heads · head_dim]`.
    pub q_proj: Linear<B>,
    /// `[hidden, num_kv_heads · head_dim]`.
    pub k_proj: Linear<B>,
    /// `[hidden, num_kv_heads · head_dim]`.
    pub v_proj: Linear<B>,
    /// `[num_heads · head_dim, hidden]`.
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub sliding_window: Option<usize>,
    /// Leading positions visible to every query under the window.
    pub meta_tokens: usize,
    pub rope_theta: f64,
}

/// Rotated keys and values of the tokens seen so far, owned by the caller while decoding.
///
/// The cached entries are the first `min(prefix, position())` positions (the meta tokens, kept
/// whatever the window) followed by the most recent ones, up to `position()`; without trimming
/// that is every position `0 .. position()`.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    /// `[batch, num_kv_heads, len, head_dim]`, oldest first, RoPE already applied; `None` until
    /// the first token, because burn tensors with a zero-length dimension are not portable.
    keys: Option<Tensor<B, 4>>,
    /// `[batch, num_kv_heads, len, head_dim]`, oldest first.
    values: Option<Tensor<B, 4>>,
    /// Tokens seen so far: the absolute position of the next token.
    position: usize,
    /// Recent entries kept besides the prefix; `None` keeps all of them.
    capacity: Option<usize>,
    /// Leading entries that are never dropped.
    prefix: usize,
}

impl AttentionConfig {
    /// The configuration of the attention layer `spec` at model width `hidden`.
    pub fn from_spec(spec: &AttentionSpec, hidden: usize) -> Self {
        AttentionConfig::new(
            hidden,
            spec.num_heads as usize,
            spec.num_kv_heads as usize,
            spec.head_dim as usize,
        )
        .with_sliding_window(spec.sliding_window.map(|w| w as usize))
        .with_rope_theta(spec.rope_theta)
    }

    /// Builds the layer, projections normal as in [`super::init`].
    ///
    /// # Panics
    /// If `num_kv_heads` does not divide `num_heads`, `head_dim` is odd, or the window is 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        assert!(
            self.num_heads > 0 && self.num_kv_heads > 0 && self.num_heads.is_multiple_of(self.num_kv_heads),
            "num_kv_heads ({}) must divide num_heads ({})",
            self.num_kv_heads,
            self.num_heads
        );
        assert!(
            self.head_dim > 0 && self.head_dim.is_multiple_of(2),
            "head_dim must be even, got {}",
            self.head_dim
        );
        assert!(self.sliding_window != Some(0), "a sliding window must keep at least one key");
        let q_width = self.num_heads * self.head_dim;
        let kv_width = self.num_kv_heads * self.head_dim;
        let reads = |d_in, d_out| linear(d_in, d_out, self.init_std, device);
        Attention {
            q_proj: reads(self.hidden, q_width),
            k_proj: reads(self.hidden, kv_width),
            v_proj: reads(self.hidden, kv_width),
            o_proj: linear(q_width, self.hidden, self.output_init_std, device),
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            sliding_window: self.sliding_window,
            meta_tokens: self.meta_tokens,
            rope_theta: self.rope_theta,
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache that keeps its first `prefix` entries and at most `capacity` more, the
    /// most recent (`None`: all of them).
    pub fn new(capacity: Option<usize>, prefix: usize) -> Self {
        KvCache { keys: None, values: None, position: 0, capacity, prefix }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens seen so far, which is the position the next token gets.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The cached keys and values, `[batch, num_kv_heads, len, head_dim]` each.
    pub fn entries(&self) -> Option<(Tensor<B, 4>, Tensor<B, 4>)> {
        Some((self.keys.clone()?, self.values.clone()?))
    }

    /// Appends `count` new entries (`[batch, num_kv_heads, count, head_dim]`) without trimming.
    fn push(&mut self, keys: Tensor<B, 4>, values: Tensor<B, 4>, count: usize) {
        let join = |old: Option<Tensor<B, 4>>, new: Tensor<B, 4>| match old {
            Some(old) => {
                assert_eq!(old.dims()[0], new.dims()[0], "the cache was filled with another batch size");
                Tensor::cat(vec![old, new], 2)
            }
            None => new,
        };
        self.keys = Some(join(self.keys.take(), keys));
        self.values = Some(join(self.values.take(), values));
        self.position += count;
    }

    /// Absolute positions of the cached entries, in cache order.
    pub fn key_positions(&self) -> Vec<usize> {
        let len = self.len();
        let prefix = self.prefix.min(len);
        (0..prefix).chain(self.position - (len - prefix)..self.position).collect()
    }

    /// Drops the entries that no future query can see: all but the prefix and the last
    /// `capacity`.
    fn trim(&mut self) {
        let (Some(capacity), len, prefix) = (self.capacity, self.len(), self.prefix) else { return };
        if len > prefix + capacity {
            let keep = |t: Option<Tensor<B, 4>>| {
                t.map(|t| {
                    let recent = t.clone().narrow(2, len - capacity, capacity);
                    // Zero-length tensors are not portable: no empty prefix in the `cat`.
                    if prefix == 0 { recent } else { Tensor::cat(vec![t.narrow(2, 0, prefix), recent], 2) }
                })
            };
            self.keys = keep(self.keys.take());
            self.values = keep(self.values.take());
        }
    }
}

impl<B: Backend> Attention<B> {
    /// An empty decode cache sized for this layer's window and meta tokens.
    pub fn empty_cache(&self) -> KvCache<B> {
        KvCache::new(self.sliding_window, if self.sliding_window.is_some() { self.meta_tokens } else { 0 })
    }

    /// Attends over a whole sequence whose first token sits at absolute position `start_pos`
    /// (0 in training), with no cache.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, start_pos: usize) -> Tensor<B, 3> {
        let seq = x.dims()[1];
        let (q, k, v) = self.project(x, start_pos);
        let keys: Vec<usize> = (start_pos..start_pos + seq).collect();
        let mask = self.mask(start_pos, seq, &keys, &q.device());
        self.o_proj.forward(self.attend(q, k, v, Some(mask)))
    }

    /// Prefills: attends over `x`, which continues the tokens already in `cache`, and appends
    /// its keys and values to the cache.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_with_cache(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let seq = x.dims()[1];
        let start = cache.position;
        let (q, k, v) = self.project(x, start);
        cache.push(k, v, seq);
        let (k, v) = cache.entries().expect("the cache holds the new entries");
        let mask = self.mask(start, seq, &cache.key_positions(), &q.device());
        let y = self.attend(q, k, v, Some(mask));
        cache.trim();
        self.o_proj.forward(y)
    }

    /// Decodes one token: attends from it over the cache and itself, and appends it.
    ///
    /// # Shapes
    /// - `x`: `[batch, hidden]` → `[batch, hidden]`
    pub fn step(&self, x: Tensor<B, 2>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let [batch, hidden] = x.dims();
        let (q, k, v) = self.project(x.reshape([batch, 1, hidden]), cache.position);
        cache.push(k, v, 1);
        // Trimming first leaves exactly the keys this query may see (the meta tokens and the
        // window), so no mask is needed.
        cache.trim();
        let (k, v) = cache.entries().expect("the cache holds the new entry");
        let y = self.attend(q, k, v, None);
        self.o_proj.forward(y).reshape([batch, hidden])
    }

    /// Projects and rotates: queries `[batch, seq, num_heads, head_dim]`, keys and values
    /// `[batch, num_kv_heads, seq, head_dim]`.
    fn project(&self, x: Tensor<B, 3>, start_pos: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, seq, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (cos, sin) = rope_angles::<B>(start_pos, seq, d, self.rope_theta, &x.device());
        let q = self.q_proj.forward(x.clone()).reshape([batch, seq, h, d]);
        let k = self.k_proj.forward(x.clone()).reshape([batch, seq, kv, d]);
        let v = self.v_proj.forward(x).reshape([batch, seq, kv, d]);
        let q = rotate_half(q, cos.clone(), sin.clone());
        let k = rotate_half(k, cos, sin);
        (q, k.swap_dims(1, 2), v.swap_dims(1, 2))
    }

    /// `[queries, keys]`, `true` where a query must not see a key (burn's convention, as in
    /// `generate_autoregressive_mask`). The queries sit at absolute positions `first_query ..
    /// first_query + queries`, the keys at `key_positions`.
    fn mask(
        &self,
        first_query: usize,
        queries: usize,
        key_positions: &[usize],
        device: &B::Device,
    ) -> Tensor<B, 2, Bool> {
        let shape = [queries, key_positions.len()];
        let first = first_query as i64;
        let query = Tensor::<B, 1, Int>::arange(first..first + queries as i64, device)
            .reshape([queries, 1])
            .expand(shape);
        let keys: Vec<i64> = key_positions.iter().map(|&p| p as i64).collect();
        let key = Tensor::<B, 1, Int>::from_data(TensorData::new(keys, [shape[1]]), device)
            .reshape([1, shape[1]])
            .expand(shape);
        let future = key.clone().greater(query.clone());
        match self.sliding_window {
            Some(w) => {
                // At or before `query − w`: outside the window, hidden unless a meta token.
                let old = key.clone().lower_equal(query.sub_scalar(w as i64));
                let meta = key.lower_elem(self.meta_tokens as i64);
                future.bool_or(old.bool_and(meta.bool_not()))
            }
            None => future,
        }
    }

    /// Scaled dot-product attention of queries `[batch, seq, num_heads, head_dim]` over keys and
    /// values `[batch, num_kv_heads, keys, head_dim]`; returns the concatenated heads
    /// `[batch, seq, num_heads · head_dim]`.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, h, d] = q.dims();
        let kv = self.num_kv_heads;
        let groups = h / kv;
        let keys = k.dims()[2];
        // Query head `j` belongs to key/value head `j / groups`: its rows go after the other
        // heads of that group, `[batch, kv, groups · seq, d]`.
        let rows = groups * seq;
        let q = q.reshape([batch, seq, kv, groups, d]).permute([0, 2, 3, 1, 4]).reshape([batch, kv, rows, d]);
        // Every head in a group repeats the same `[seq, keys]` pattern.
        let mask =
            mask.map(|m| m.repeat_dim(0, groups).reshape([1, 1, rows, keys]).expand([batch, kv, rows, keys]));
        // The default scale is 1/√head_dim; leaving it unset keeps the GPU flash kernel eligible.
        let y = attention(q, k, v, mask, None, AttentionModuleOptions::default());
        y.reshape([batch, kv, groups, seq, d]).permute([0, 3, 1, 2, 4]).reshape([batch, seq, h * d])
    }
}

/// Cosines and sines of the RoPE angles `pos · θ^(−2i/head_dim)` for positions
/// `start..start + len` and `i < head_dim / 2`, `[len, head_dim / 2]` each. Computed in f64
/// because `pos · freq` loses digits in f32 at long positions.
fn rope_angles<B: Backend>(
    start: usize,
    len: usize,
    head_dim: usize,
    theta: f64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half).map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64)).collect();
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in start..start + len {
        for f in &inv_freq {
            let angle = pos as f64 * f;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, half]), device),
        Tensor::from_data(TensorData::new(sin, [len, half]), device),
    )
}

/// Rotates each pair `(a_i, b_i)` of the two halves of `x` `[batch, seq, heads, head_dim]` by
/// the angle whose cosine and sine are given per position, `[seq, head_dim / 2]`.
fn rotate_half<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, seq, _, d] = x.dims();
    let half = d / 2;
    let cos = cos.reshape([1, seq, 1, half]);
    let sin = sin.reshape([1, seq, 1, half]);
    let a = x.clone().narrow(3, 0, half);
    let b = x.narrow(3, half, half);
    Tensor::cat(vec![a.clone() * cos.clone() - b.clone() * sin.clone(), b * cos + a * sin], 3)
}

#[cfg(test)]
mod tests;
