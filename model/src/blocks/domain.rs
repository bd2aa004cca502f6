//! Domain classifier g(I) → p(d | I) and the learnable domain prototypes e_d (paper Eq. 12–13).
//!
//! g reads the image through the shared patch embedding: the mean and standard deviation over
//! tokens of the (position-free) patch embeddings summarise the scan's intensity, noise and
//! texture statistics, which is what distinguishes scanners and sites. An MLP maps them to an
//! image embedding z of width d_c; the logits are cosine similarities between z and each
//! prototype divided by τ. So the classifier *is* a prototype classifier, and the trainer's
//! InfoNCE loss over z and the prototypes (same τ) trains it directly.
//!
//! The effective embedding is the convex mix e* = Σ_d p(d | I) e_d. A caller may pass its own
//! mix (the paper's "correct / wrong / random / swapped domain code" experiments); it replaces
//! p(d | I) and must itself be convex.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor};

use crate::{Error, Result};

/// Tolerance on a caller's mix: weights ≥ -tol and rows summing to 1 ± tol.
pub const MIX_TOLERANCE: f32 = 1e-4;

/// Numerical floor of the token standard deviation and of the cosine norms.
const EPS: f64 = 1e-6;

/// Output of the domain branch for a batch.
#[derive(Debug, Clone)]
pub struct DomainOutput {
    /// Classifier logits `[B, D]`.
    pub logits: Tensor<2>,
    /// The mix used: softmax of the logits, or the caller's `[B, D]`.
    pub probs: Tensor<2>,
    /// Image embedding z `[B, d_c]` (the InfoNCE anchor).
    pub image_embedding: Tensor<2>,
    /// Effective domain embedding e* `[B, d_c]`.
    pub embedding: Tensor<2>,
}

/// g(·) and the prototypes.
#[derive(Module, Debug)]
pub struct DomainClassifier {
    /// Token statistics (2d) → hidden.
    pub fc1: Linear,
    /// Hidden → image embedding z (d_c).
    pub fc2: Linear,
    /// Domain prototypes e_d, `[D, d_c]`, row d = domain d of the contract's list.
    pub prototypes: Param<Tensor<2>>,
    /// Temperature τ of the cosine logits.
    pub temperature: f64,
}

impl DomainClassifier {
    /// A classifier over `num_domains` domains reading `d`-wide patch embeddings.
    pub fn new(
        d: usize,
        hidden: usize,
        domain_dim: usize,
        num_domains: usize,
        temperature: f64,
        device: &Device,
    ) -> Self {
        Self {
            fc1: LinearConfig::new(2 * d, hidden).init(device),
            fc2: LinearConfig::new(hidden, domain_dim).init(device),
            prototypes: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([num_domains, domain_dim], device),
            temperature,
        }
    }

    /// Number of domains D.
    pub fn num_domains(&self) -> usize {
        self.prototypes.dims()[0]
    }

    /// Image embedding z `[B, d_c]` from patch embeddings `[B, N, d]`.
    pub fn image_embedding(&self, patches: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = patches.dims();
        let mean = patches.clone().mean_dim(1);
        let var = (patches - mean.clone()).powi_scalar(2).mean_dim(1);
        let std = var.add_scalar(EPS).sqrt();
        let stats = Tensor::cat(vec![mean.reshape([b, d]), std.reshape([b, d])], 1);
        self.fc2.forward(gelu(self.fc1.forward(stats)))
    }

    /// Cosine logits `[B, D]` of image embeddings against the prototypes, divided by τ.
    pub fn logits(&self, z: Tensor<2>) -> Tensor<2> {
        let unit = |t: Tensor<2>| {
            let norm = t.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(EPS);
            t / norm
        };
        unit(z)
            .matmul(unit(self.prototypes.val()).transpose())
            .div_scalar(self.temperature)
    }

    /// e* = mix · prototypes, `[B, D]` → `[B, d_c]`. A one-hot row returns its prototype
    /// exactly (each output is 1·e plus exact zeros).
    pub fn mix_prototypes(&self, mix: Tensor<2>) -> Tensor<2> {
        mix.matmul(self.prototypes.val())
    }

    /// Runs the branch on patch embeddings `[B, N, d]`, with an optional caller mix `[B, D]`.
    ///
    /// # Errors
    /// [`Error::Input`] if the mix has the wrong shape, a negative or non-finite weight, or a
    /// row that does not sum to 1 (within [`MIX_TOLERANCE`]).
    pub fn forward(&self, patches: Tensor<3>, mix: Option<Tensor<2>>) -> Result<DomainOutput> {
        let z = self.image_embedding(patches);
        let logits = self.logits(z.clone());
        let probs = match mix {
            Some(mix) => {
                self.check_mix(&mix, z.dims()[0])?;
                mix
            }
            None => softmax(logits.clone(), 1),
        };
        Ok(DomainOutput {
            embedding: self.mix_prototypes(probs.clone()),
            logits,
            probs,
            image_embedding: z,
        })
    }

    fn check_mix(&self, mix: &Tensor<2>, batch: usize) -> Result<()> {
        let d = self.num_domains();
        if mix.dims() != [batch, d] {
            return Err(Error::Input(format!(
                "domain mix has shape {:?}, expected [{batch}, {d}]",
                mix.dims()
            )));
        }
        let values = mix
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Input(format!("domain mix unreadable: {e:?}")))?;
        for (row, w) in values.chunks(d).enumerate() {
            let sum: f32 = w.iter().sum();
            if w.iter().any(|v| !v.is_finite() || *v < -MIX_TOLERANCE)
                || (sum - 1.0).abs() > MIX_TOLERANCE
            {
                return Err(Error::Input(format!(
                    "domain mix row {row} {w:?} is not convex (weights >= 0 summing to 1)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    fn classifier() -> (DomainClassifier, Device) {
        let dev = device();
        (DomainClassifier::new(8, 16, 12, 3, 0.1, &dev), dev)
    }

    #[test]
    fn shapes_and_convex_mix() {
        let (g, dev) = classifier();
        let out = g.forward(random([2, 10, 8], &dev), None).unwrap();
        assert_eq!(out.logits.dims(), [2, 3]);
        assert_eq!(out.image_embedding.dims(), [2, 12]);
        assert_eq!(out.embedding.dims(), [2, 12]);
        let p = out.probs.clone().into_data().try_to_vec::<f32>().unwrap();
        for row in p.chunks(3) {
            assert!(row.iter().all(|v| *v > 0.0));
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // e* is the probability-weighted sum of the prototypes.
        let protos = g.prototypes.val().into_data().try_to_vec::<f32>().unwrap();
        let e = out.embedding.into_data().try_to_vec::<f32>().unwrap();
        for b in 0..2 {
            for j in 0..12 {
                let want: f32 = (0..3).map(|k| p[b * 3 + k] * protos[k * 12 + j]).sum();
                assert!((e[b * 12 + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn one_hot_override_is_the_prototype_exactly() {
        let (g, dev) = classifier();
        let mix = Tensor::<2>::from_floats([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], &dev);
        let out = g
            .forward(random([2, 10, 8], &dev), Some(mix.clone()))
            .unwrap();
        let protos = g.prototypes.val().into_data().try_to_vec::<f32>().unwrap();
        let e = out.embedding.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&e[..12], &protos[12..24]);
        assert_eq!(&e[12..], &protos[24..36]);
        let used = out.probs.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(used, mix.into_data().try_to_vec::<f32>().unwrap());
    }

    #[test]
    fn rejects_non_convex_or_misshapen_mix() {
        let (g, dev) = classifier();
        let patches = random([1, 10, 8], &dev);
        for bad in [
            Tensor::<2>::from_floats([[0.5, 0.6, 0.0]], &dev),
            Tensor::<2>::from_floats([[1.5, -0.5, 0.0]], &dev),
            Tensor::<2>::from_floats([[0.5, 0.5]], &dev),
            Tensor::<2>::from_floats([[f32::NAN, 1.0, 0.0]], &dev),
        ] {
            assert!(g.forward(patches.clone(), Some(bad)).is_err());
        }
    }
}
