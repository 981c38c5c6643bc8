//! 3. Decode.

use worker::decode::{self, DecodeSetting};
use worker::kernels::Kernels;
use worker::model::lm::HybridLm;

use super::report::{DecodeRow, Plan};
use super::{MODELS, SEED, model_spec};

pub fn decode_table<B: Kernels>(plan: &Plan, device: &B::Device) -> Vec<DecodeRow> {
    let width = 128;
    println!(
        "\n3. Decode at batch 1, d_model {width}: ms per generated token after a prompt of each length \
         ({} tokens generated; median of {} runs after 1 warm-up)",
        plan.decode_gen_len, plan.decode_repeats
    );
    let mut header = format!("{:<18}", "model");
    for p in &plan.decode_prompts {
        header += &format!(" {:>9}", format!("ctx {p}"));
    }
    header += &format!("  {:>9}   prefill ms at each length", "last/first");
    println!("{header}");
    let mut rows = Vec::new();
    for (name, layers) in MODELS {
        let spec = model_spec(&layers, width);
        B::seed(device, SEED);
        let model = HybridLm::<B>::init(&spec, device);
        let mut line = format!("{name:<18}");
        let mut prefills = Vec::new();
        let mut per_token = Vec::new();
        for &prompt_len in &plan.decode_prompts {
            let setting = DecodeSetting {
                batch: 1,
                prompt_len,
                gen_len: plan.decode_gen_len,
                warmup: 1,
                repeats: plan.decode_repeats,
            };
            let report = decode::bench(&model, setting, device).expect("the decode settings are valid");
            line += &format!(" {:>9.2}", report.per_token_ms);
            prefills.push(format!("{:.0}", report.prefill_ms));
            per_token.push(report.per_token_ms);
            rows.push(DecodeRow {
                model: name.to_string(),
                d_model: width,
                prompt_len,
                gen_len: plan.decode_gen_len,
                prefill_ms: report.prefill_ms,
                per_token_ms: report.per_token_ms,
                totals_ms: report.totals_ms,
            });
        }
        let growth = per_token[per_token.len() - 1] / per_token[0];
        line += &format!("  {growth:>9.2}×  {}", prefills.join(" / "));
        println!("{line}");
    }
    rows
}
