//! Statistics for the evaluation protocol of the paper (paper-notes, "Evaluation"):
//!
//! - [`bootstrap`]: 95 % BCa (and percentile) bootstrap confidence intervals with
//!   *patient-level* resampling, 10,000 replicates by default, deterministic from a seed;
//! - [`wilcoxon`]: the two-sided Wilcoxon signed-rank test on paired per-patient scores
//!   (model versus best baseline);
//! - [`multiple_testing`]: Holm–Bonferroni adjusted p-values and reject decisions across the
//!   family of comparisons;
//! - [`normal`]: the standard normal CDF and quantile these need.
//!
//! Every definition follows SciPy 1.17.1 (`scipy.stats.bootstrap`, `scipy.stats.wilcoxon`)
//! and statsmodels' `multipletests(method="holm")` exactly, so that numbers produced here can
//! be checked against those references; the committed fixtures under
//! `core/tests/fixtures/stats/` (written by `make_stats_fixtures.py`) hold that evidence.
//! Where the references return `NaN` and warn, these functions return an
//! [`Error`](crate::Error) or a documented, flagged result instead, never a silent `NaN`.

pub mod bootstrap;
pub mod multiple_testing;
pub mod normal;
pub mod wilcoxon;

pub use bootstrap::{
    BootstrapCi, BootstrapConfig, CiMethod, PatientSamples, bootstrap_ci,
    bootstrap_ci_from_resamples, bootstrap_mean_ci,
};
pub use multiple_testing::{HolmResult, holm_bonferroni};
pub use normal::{normal_cdf, normal_quantile};
pub use wilcoxon::{
    WilcoxonMethod, WilcoxonResult, wilcoxon_signed_rank, wilcoxon_signed_rank_differences,
};
