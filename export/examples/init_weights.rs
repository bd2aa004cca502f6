//! Writes a preset's seeded random initialisation as a weights file that `vertebra-export
//! export` turns into a bundle: the `paper` preset has no trained weights, and ONNX Runtime's
//! latency does not depend on the weight values (scripts/bench-window.sh).
//!
//! ```text
//! cargo run -p vertebra-export --example init_weights -- PRESET OUT.safetensors [SEED]
//! ```

use std::path::PathBuf;

use burn::tensor::Device;
use vertebra_model::{Preset, weights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(preset), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: init_weights PRESET OUT.safetensors [SEED]".into());
    };
    let preset = Preset::from_name(preset)?;
    let seed: u64 = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let device = Device::flex();
    device.seed(seed);
    let config = preset.config();
    let out = PathBuf::from(out);
    weights::save(&config.init(&device)?, &config, &out)?;
    println!(
        "{}: {} preset, seeded random initialisation (seed {seed}), not trained",
        out.display(),
        preset.name()
    );
    Ok(())
}
