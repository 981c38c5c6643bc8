//! Token embedding with learnable meta tokens, and the output head.
//!
//! ```text
//! h_0 = [m_1, …, m_M, E[x_1], …, E[x_T]]          (M meta tokens, then the tokens)
//! logits_t = h_t · Eᵀ           (tied head: the token rows of E, never the meta rows)
//! logits_t = h_t · W_head       (untied head, no bias)
//! ```
//!
//! Meta tokens (Nemotron-Flash, after Hymba) are `M` learned vectors put in front of every
//! sequence in training and prefill; they give attention a place to park its mass and give
//! recurrent layers a learned initial state. They have no vocabulary ids, so they live in a table
//! of their own rather than in `E`: the tied head can then never predict one, and the loss is
//! taken only over the token positions ([`TokenEmbedding::drop_meta_positions`]). While decoding
//! they are already in every layer's cache or state from the prefill, so a decode step embeds
//! the new token alone.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::prelude::*;
use burn::tensor::module::linear;
use search_space::ModelSpec;

/// Configuration of a [`TokenEmbedding`].
#[derive(Config, Debug)]
pub struct TokenEmbeddingConfig {
    /// Vocabulary size: rows of the token table and columns of the logits.
    pub vocab_size: usize,
    /// Model width.
    pub hidden: usize,
    /// Learned vectors prepended to every sequence (256 in Nemotron-Flash); 0 for none.
    #[config(default = 0)]
    pub meta_tokens: usize,
    /// Whether the output head is the token table itself (`logits = h · Eᵀ`).
    #[config(default = true)]
    pub tied: bool,
    /// Standard deviation of the normal initialisation of the token and meta tables. 0.02 as in
    /// the reference models: with a tied head, burn's default of 1.0 would start the logits at a
    /// standard deviation of about √hidden.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// Token and meta-token embeddings with the output head.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    /// Token table `E`, `[vocab_size, hidden]`.
    pub tokens: Embedding<B>,
    /// Meta tokens, `[meta_tokens, hidden]`; `None` when there are none.
    pub meta: Option<Param<Tensor<B, 2>>>,
    /// Untied head, `[hidden, vocab_size]`; `None` when the head is tied to `tokens`.
    pub head: Option<Linear<B>>,
}

impl TokenEmbeddingConfig {
    /// The embedding and head of the model `spec`.
    pub fn from_spec(spec: &ModelSpec) -> Self {
        TokenEmbeddingConfig::new(spec.vocab_size as usize, spec.hidden_size as usize)
            .with_meta_tokens(spec.meta_tokens as usize)
            .with_tied(spec.tied_embeddings)
    }

    /// Builds the tables; an untied head starts normal with the same deviation, as the
    /// reference models' `_init_weights` start every `nn.Linear`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenEmbedding<B> {
        let normal = Initializer::Normal { mean: 0.0, std: self.init_std };
        TokenEmbedding {
            tokens: EmbeddingConfig::new(self.vocab_size, self.hidden)
                .with_initializer(normal.clone())
                .init(device),
            meta: (self.meta_tokens > 0).then(|| normal.init([self.meta_tokens, self.hidden], device)),
            head: (!self.tied)
                .then(|| super::init::linear(self.hidden, self.vocab_size, self.init_std, device)),
        }
    }
}

impl<B: Backend> TokenEmbedding<B> {
    /// Meta tokens in front of every sequence.
    pub fn meta_tokens(&self) -> usize {
        self.meta.as_ref().map_or(0, |m| m.dims()[0])
    }

    /// Embeds a batch of sequences with the meta tokens in front: the input of the first layer in
    /// training and prefill.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, meta_tokens + seq, hidden]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let batch = tokens.dims()[0];
        let embedded = self.embed(tokens);
        match self.meta_prefix(batch) {
            Some(meta) => Tensor::cat(vec![meta, embedded], 1),
            None => embedded,
        }
    }

    /// Embeds tokens alone, for a prefill that continues a cached sequence.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, seq, hidden]`
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.tokens.forward(tokens)
    }

    /// Embeds one token per sequence, for a decode step.
    ///
    /// # Shapes
    /// - `tokens`: `[batch]` → `[batch, hidden]`
    pub fn embed_step(&self, tokens: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let batch = tokens.dims()[0];
        let hidden = self.tokens.weight.dims()[1];
        self.tokens.forward(tokens.reshape([batch, 1])).reshape([batch, hidden])
    }

    /// The meta tokens repeated for each sequence, `None` when there are none; lets a decoder
    /// prefill them before any prompt token.
    ///
    /// # Shapes
    /// - → `[batch, meta_tokens, hidden]`
    pub fn meta_prefix(&self, batch: usize) -> Option<Tensor<B, 3>> {
        let meta = self.meta.as_ref()?.val();
        let [count, hidden] = meta.dims();
        Some(meta.unsqueeze::<3>().expand([batch, count, hidden]))
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `h`: `[..., hidden]` → `[..., vocab_size]`
    pub fn logits<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        match &self.head {
            Some(head) => head.forward(h),
            // burn's `linear` multiplies by a `[d_in, d_out]` weight: `Eᵀ` is `[hidden, vocab]`.
            None => linear(h, self.tokens.weight.val().transpose(), None),
        }
    }

    /// Drops the meta positions from the front of the last layer's output, leaving the positions
    /// the loss is taken over.
    ///
    /// # Shapes
    /// - `h`: `[batch, meta_tokens + seq, width]` → `[batch, seq, width]`
    pub fn drop_meta_positions(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let meta = self.meta_tokens();
        let len = h.dims()[1];
        assert!(len >= meta, "{len} positions cannot hold {meta} meta tokens");
        if meta == 0 { h } else { h.narrow(1, meta, len - meta) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff, CpuDevice};
    use burn::tensor::Distribution;
    use search_space::ops::{FfnSpec, LayerSpec};

    type B = Cpu;

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn tokens(device: &CpuDevice) -> Tensor<B, 2, Int> {
        Tensor::from_ints([[1, 2, 3, 4, 5], [9, 0, 1, 1, 2]], device)
    }

    fn row(table: &[f32], r: usize, hidden: usize) -> &[f32] {
        &table[r * hidden..(r + 1) * hidden]
    }

    #[test]
    fn forward_prepends_the_meta_tokens_to_every_sequence() {
        let device = Default::default();
        let ids = [[1, 2, 3, 4, 5], [9, 0, 1, 1, 2]];
        for meta in [0, 3] {
            let emb = TokenEmbeddingConfig::new(10, 4).with_meta_tokens(meta).init::<B>(&device);
            let out = emb.forward(tokens(&device));
            assert_eq!(out.dims(), [2, meta + 5, 4]);
            let out = host(out);
            let table = host(emb.tokens.weight.val());
            let meta_table = emb.meta.as_ref().map(|m| host(m.val())).unwrap_or_default();
            for (b, seq) in ids.iter().enumerate() {
                let at = |p: usize| row(&out, b * (meta + 5) + p, 4);
                for m in 0..meta {
                    assert_eq!(at(m), row(&meta_table, m, 4), "sequence {b}, meta token {m}");
                }
                for (s, &id) in seq.iter().enumerate() {
                    assert_eq!(at(meta + s), row(&table, id, 4), "sequence {b}, token {s}");
                }
            }
        }
    }

    #[test]
    fn dropping_the_meta_positions_leaves_the_token_positions() {
        let device = Default::default();
        let emb = TokenEmbeddingConfig::new(10, 4).with_meta_tokens(3).init::<B>(&device);
        let kept = emb.drop_meta_positions(emb.forward(tokens(&device)));
        assert_eq!(kept.dims(), [2, 5, 4]);
        assert_eq!(host(kept), host(emb.embed(tokens(&device))));
        let step = emb.embed_step(Tensor::from_ints([9, 2], &device));
        assert_eq!(host(step), [host(emb.embed(Tensor::from_ints([[9], [2]], &device)))].concat());
    }

    #[test]
    fn tied_head_uses_exactly_the_token_embedding() {
        let device = Default::default();
        let (vocab, hidden) = (10, 4);
        let mut emb = TokenEmbeddingConfig::new(vocab, hidden).with_meta_tokens(3).init::<B>(&device);
        assert!(emb.head.is_none());
        let h = Tensor::<B, 3>::random([2, 5, hidden], Distribution::Normal(0.0, 1.0), &device);
        let logits = emb.logits(h.clone());
        // Vocabulary only: the meta rows are not in the head.
        assert_eq!(logits.dims(), [2, 5, vocab]);
        let (hs, table, before) = (host(h.clone()), host(emb.tokens.weight.val()), host(logits));
        for p in 0..10 {
            for v in 0..vocab {
                let want: f32 =
                    row(&hs, p, hidden).iter().zip(row(&table, v, hidden)).map(|(a, b)| a * b).sum();
                assert!((before[p * vocab + v] - want).abs() < 1e-5, "position {p}, token {v}");
            }
        }
        // Changing row 7 of the table changes logit 7 everywhere and no other logit.
        let weight = emb.tokens.weight.val();
        let bumped = weight.clone().slice_assign([7..8, 0..hidden], weight.narrow(0, 7, 1) + 0.5);
        emb.tokens.weight = Param::from_tensor(bumped);
        let after = host(emb.logits(h));
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            assert_eq!(i % vocab == 7, a != b, "logit {} of position {}", i % vocab, i / vocab);
        }
    }

    #[test]
    fn untied_head_is_its_own_linear_map() {
        let device = Default::default();
        let mut emb = TokenEmbeddingConfig::new(10, 4).with_tied(false).init::<B>(&device);
        let h = Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let before = emb.logits(h.clone());
        assert_eq!(before.dims(), [3, 10]);
        let head = emb.head.as_ref().expect("an untied head").weight.val();
        assert_eq!(host(before.clone()), host(h.clone().matmul(head)));
        emb.tokens.weight = Param::from_tensor(emb.tokens.weight.val() + 1.0);
        assert_eq!(host(emb.logits(h)), host(before));
    }

    #[test]
    fn parameter_counts_match_the_model_spec() {
        for (tied, meta) in [(true, 4), (false, 4), (true, 0)] {
            let spec = ModelSpec {
                hidden_size: 12,
                vocab_size: 50,
                tied_embeddings: tied,
                meta_tokens: meta,
                layers: vec![LayerSpec::Ffn(FfnSpec { intermediate_size: 24 })],
            };
            let want = spec.params();
            let emb = TokenEmbeddingConfig::from_spec(&spec).init::<B>(&Default::default());
            let case = format!("tied {tied}, {meta} meta tokens");
            assert_eq!(emb.tokens.num_params() as u64, want.embedding, "{case}");
            assert_eq!(emb.meta.num_params() as u64, want.meta_tokens, "{case}");
            assert_eq!(emb.head.num_params() as u64, want.head, "{case}");
            assert_eq!(emb.num_params() as u64, want.embedding + want.meta_tokens + want.head, "{case}");
        }
    }

    #[test]
    fn tied_table_learns_from_the_head_and_meta_tokens_learn_from_the_loss() {
        let device = Default::default();
        let emb = TokenEmbeddingConfig::new(10, 4).with_meta_tokens(2).init::<CpuAutodiff>(&device);
        // Token 8 never appears in the input, so its row gets a gradient only through the head.
        let x = emb.forward(Tensor::from_ints([[1, 2, 3]], &device));
        let loss = emb.logits(x).powi_scalar(2).mean();
        let grads = loss.backward();
        let table = emb.tokens.weight.grad(&grads).expect("a table gradient");
        let row_8: f32 = table.narrow(0, 8, 1).powi_scalar(2).sum().into_scalar();
        assert!(row_8 > 0.0, "the unused token's row got no gradient through the tied head");
        let meta = emb.meta.as_ref().expect("meta tokens").grad(&grads).expect("a meta gradient");
        let meta_norm: f32 = meta.powi_scalar(2).sum().into_scalar();
        assert!(meta_norm > 0.0);
    }
}
