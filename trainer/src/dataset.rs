//! Cases in memory and phantom datasets generated from [`vertebra_core::phantom`].
//!
//! A [`Case`] holds the image and whichever annotations exist; [`Case::annotations`] says which
//! losses it contributes to. Phantom datasets use the seeding rule of `vertebra-phantom
//! dataset`: case `i` of the `d`-th listed domain gets seed `base_seed + d·N + i` (every case
//! a different patient) or, with `paired`, `base_seed + i` in every domain (the same patients
//! on each scanner). Case ids are `<domain>-<i:04>` and patient ids `PHANTOM-<seed>`, as in
//! the CLI's manifest, so an in-memory dataset and a written one name cases identically.

use vertebra_core::Volume;
use vertebra_core::anatomy::Vertebra;
use vertebra_core::phantom::domain::{self, Modality};
use vertebra_core::phantom::{self, LesionPlan, LesionTruth, PhantomSpec};

use crate::manifest::Annotations;
use crate::{Error, Result};

/// One case in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Case id.
    pub id: String,
    /// Patient id (splits are per patient).
    pub patient_id: String,
    /// Domain name.
    pub domain: String,
    /// Modality.
    pub modality: Modality,
    /// The image: HU for CT.
    pub image: Volume<f32>,
    /// Vertebra labels 0..=25 on the image grid, if annotated.
    pub labels: Option<Volume<u8>>,
    /// Whether the labels carry vertebra identities (VerSe-style); CTSpine1K-style masks
    /// without verified identities set this false.
    pub ids_annotated: bool,
    /// Lesions, if annotated (`Some(vec![])` = annotated and lesion-free).
    pub lesions: Option<Vec<LesionTruth>>,
}

impl Case {
    /// Which losses this case contributes to.
    pub fn annotations(&self) -> Annotations {
        Annotations {
            masks: self.labels.is_some(),
            ids: self.labels.is_some() && self.ids_annotated,
            lesions: self.lesions.is_some(),
        }
    }

    /// A case from a generated phantom (every annotation present).
    pub fn from_phantom(id: String, p: phantom::Phantom) -> Self {
        Case {
            id,
            patient_id: format!("PHANTOM-{}", p.seed),
            domain: p.domain,
            modality: p.modality,
            image: p.ct,
            labels: Some(p.labels),
            ids_annotated: true,
            lesions: Some(p.lesions),
        }
    }
}

/// What phantom dataset to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomDatasetSpec {
    /// Domain preset names (see `vertebra-phantom domains`).
    pub domains: Vec<String>,
    /// Cases per domain.
    pub cases_per_domain: usize,
    /// Base seed.
    pub base_seed: u64,
    /// Same patients in every domain.
    pub paired: bool,
    /// Most cranial vertebra of the imaged range.
    pub first: Vertebra,
    /// Most caudal vertebra of the imaged range.
    pub last: Vertebra,
    /// In-plane matrix.
    pub in_plane: usize,
    /// Lesions per case.
    pub lesions: LesionPlan,
}

impl PhantomDatasetSpec {
    /// The seed of case `i` of the `d`-th domain (the CLI's rule).
    pub fn seed(&self, d: usize, i: usize) -> u64 {
        if self.paired {
            self.base_seed + i as u64
        } else {
            self.base_seed + (d * self.cases_per_domain + i) as u64
        }
    }

    /// The phantom spec of case `i` of the `d`-th domain.
    ///
    /// # Errors
    /// An unknown domain name or an invalid spec (core's message).
    pub fn case_spec(&self, d: usize, i: usize) -> Result<PhantomSpec> {
        let name = self.domains.get(d).ok_or_else(|| {
            Error::InvalidArgument(format!("domain index {d} out of {}", self.domains.len()))
        })?;
        let mut spec = PhantomSpec::new(
            self.seed(d, i),
            self.first,
            self.last,
            domain::preset(name)?,
        );
        spec.in_plane = self.in_plane;
        spec.lesions = self.lesions.clone();
        spec.validate()?;
        Ok(spec)
    }

    /// Generates every case (domains in list order, cases in index order).
    ///
    /// # Errors
    /// An empty domain list or zero cases; any generator error, with the case id.
    pub fn generate(&self) -> Result<Vec<Case>> {
        if self.domains.is_empty() || self.cases_per_domain == 0 {
            return Err(Error::InvalidArgument(
                "a phantom dataset needs at least one domain and one case per domain".into(),
            ));
        }
        let mut out = Vec::with_capacity(self.domains.len() * self.cases_per_domain);
        for (d, name) in self.domains.iter().enumerate() {
            for i in 0..self.cases_per_domain {
                let id = format!("{name}-{i:04}");
                let p = self
                    .case_spec(d, i)
                    .and_then(|s| phantom::generate(&s).map_err(Error::from))
                    .map_err(|e| Error::Case {
                        case: id.clone(),
                        message: e.to_string(),
                    })?;
                out.push(Case::from_phantom(id, p));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PhantomDatasetSpec {
        PhantomDatasetSpec {
            domains: vec!["ct-standard".into(), "ct-bone-sharp".into()],
            cases_per_domain: 2,
            base_seed: 10,
            paired: false,
            first: Vertebra::L3,
            last: Vertebra::L3,
            in_plane: 48,
            lesions: LesionPlan::None,
        }
    }

    #[test]
    fn seeds_follow_the_cli_rule() {
        let s = spec();
        assert_eq!(
            [s.seed(0, 0), s.seed(0, 1), s.seed(1, 0), s.seed(1, 1)],
            [10, 11, 12, 13]
        );
        let p = PhantomDatasetSpec { paired: true, ..s };
        assert_eq!([p.seed(0, 1), p.seed(1, 1)], [11, 11]);
    }

    #[test]
    fn generates_cases_with_ids_and_annotations() {
        let s = PhantomDatasetSpec {
            cases_per_domain: 1,
            ..spec()
        };
        let cases = s.generate().unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].id, "ct-standard-0000");
        assert_eq!(cases[1].patient_id, "PHANTOM-11");
        assert_eq!(cases[1].domain, "ct-bone-sharp");
        let a = cases[0].annotations();
        assert!(a.masks && a.ids && a.lesions);
        let labels = cases[0].labels.as_ref().unwrap();
        assert_eq!(labels.dims(), cases[0].image.dims());
        assert!(labels.data().iter().any(|&l| l == Vertebra::L3.label()));
    }

    #[test]
    fn unknown_domains_fail_with_the_case() {
        let s = PhantomDatasetSpec {
            domains: vec!["nope".into()],
            ..spec()
        };
        let e = s.generate().unwrap_err().to_string();
        assert!(e.starts_with("case nope-0000:"), "{e}");
    }
}
