//! The dataset manifest: one CSV file that lists every case of a training dataset.
//!
//! ## Format (`manifest.csv`)
//! RFC 4180 CSV, UTF-8, one header line and one line per case, the columns of the
//! `vertebra-phantom dataset` manifest (see `docs/phantom-cli.md`) in any order:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `id` | yes | unique case id (no `/`) |
//! | `patient_id` | yes | patient; splits are made per patient |
//! | `study_uid` | yes | DICOM Study Instance UID; the leakage audit groups by it |
//! | `domain` | yes | dataset / site / scanner domain (for phantoms the preset name) |
//! | `modality` | yes | `Ct`, `MrT1Like` or `MrT2Like` |
//! | `image` | yes | image file (NIfTI) or DICOM series directory |
//! | `labels` | no | vertebra label map (VerSe / CTSpine1K style NIfTI, 0 = background, 1–25) |
//! | `centroids` | no | centroid file (VerSe JSON, or a phantom `truth.json`, key `centroids`) |
//! | `lesions` | no | lesion file (phantom `truth.json`, key `lesions`) |
//! | `split` | no | `train`, `val`, `test`, or empty when not yet assigned |
//!
//! Paths are relative to the manifest's directory (or absolute), `/`-separated. An empty
//! annotation column means the case does not have that annotation type; such a case
//! contributes only to the losses it has annotations for ([`Annotations`]).
//!
//! ## What the loader rejects (each with the line and a fix in the message)
//! a missing, unknown or repeated column; a line with the wrong number of fields; an empty
//! required field; a repeated case id; an unknown modality or split; centroids without a label
//! map (instance boxes for the identification loss come from the label map); a study UID used
//! by two patients; a patient or a study in two splits (leakage); splits assigned to some cases
//! but not others; an empty manifest.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vertebra_core::phantom::domain::Modality;

use crate::{Error, Result};

/// The manifest columns, in the order the writer uses.
pub const MANIFEST_COLUMNS: [&str; 10] = [
    "id",
    "patient_id",
    "study_uid",
    "domain",
    "modality",
    "image",
    "labels",
    "centroids",
    "lesions",
    "split",
];

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training cases.
    Train,
    /// Validation cases (early stopping, model selection).
    Val,
    /// Held-out test cases (reported metrics only).
    Test,
}

impl Split {
    /// The manifest spelling.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses the manifest spelling; `None` for an empty field (not yet assigned).
    fn parse(s: &str) -> std::result::Result<Option<Self>, String> {
        match s {
            "" => Ok(None),
            "train" => Ok(Some(Split::Train)),
            "val" => Ok(Some(Split::Val)),
            "test" => Ok(Some(Split::Test)),
            other => Err(format!(
                "split {other:?} is not one of train, val, test (or empty for unassigned)"
            )),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The manifest spelling of a modality (serde's, as in phantom `truth.json`).
pub fn modality_name(m: Modality) -> &'static str {
    match m {
        Modality::Ct => "Ct",
        Modality::MrT1Like => "MrT1Like",
        Modality::MrT2Like => "MrT2Like",
    }
}

fn parse_modality(s: &str) -> std::result::Result<Modality, String> {
    match s {
        "Ct" => Ok(Modality::Ct),
        "MrT1Like" => Ok(Modality::MrT1Like),
        "MrT2Like" => Ok(Modality::MrT2Like),
        other => Err(format!(
            "modality {other:?} is not one of Ct, MrT1Like, MrT2Like"
        )),
    }
}

/// Which annotation types a case has, i.e. which losses it contributes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    /// A vertebra label map: segmentation losses (binary and 26-class).
    pub masks: bool,
    /// Vertebra identities (label map + centroids): identification loss.
    pub ids: bool,
    /// Lesion annotations: detection loss (a case with the column empty is "not annotated",
    /// not "lesion-free").
    pub lesions: bool,
}

/// One case of the manifest. Paths are resolved against the manifest's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestCase {
    /// Unique case id.
    pub id: String,
    /// Patient id.
    pub patient_id: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Domain name.
    pub domain: String,
    /// Modality.
    pub modality: Modality,
    /// Image file or DICOM directory.
    pub image: PathBuf,
    /// Vertebra label map.
    pub labels: Option<PathBuf>,
    /// Centroid file.
    pub centroids: Option<PathBuf>,
    /// Lesion file.
    pub lesions: Option<PathBuf>,
    /// Split, if assigned.
    pub split: Option<Split>,
    /// 1-based line of the case in the manifest (for messages).
    pub line: usize,
}

impl ManifestCase {
    /// The annotation types of this case.
    pub fn annotations(&self) -> Annotations {
        Annotations {
            masks: self.labels.is_some(),
            ids: self.labels.is_some() && self.centroids.is_some(),
            lesions: self.lesions.is_some(),
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where the manifest came from (file path, or a caller-given name for parsed text).
    pub source: PathBuf,
    /// The cases in file order.
    pub cases: Vec<ManifestCase>,
}

/// Splits one CSV line into fields (RFC 4180 quoting; no line breaks inside fields).
fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("a closing quote must end its field".into());
                    }
                }
            } else {
                cur.push(c);
            }
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_field_start = true;
            continue;
        } else if c == '"' && at_field_start {
            quoted = true;
        } else if c == '"' {
            return Err("a quote inside an unquoted field (quote the whole field)".into());
        } else {
            cur.push(c);
        }
        at_field_start = false;
    }
    if quoted {
        return Err("unterminated quoted field (line breaks inside fields are not allowed)".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Quotes a field where RFC 4180 needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Manifest {
    /// Reads and validates a manifest file; relative paths are resolved against its directory.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Manifest`] for every inconsistency listed
    /// in the module documentation.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base, path)
    }

    /// Parses and validates manifest text; relative paths are joined to `base_dir`; `source`
    /// names the manifest in error messages.
    ///
    /// # Errors
    /// [`Error::Manifest`] for every inconsistency listed in the module documentation.
    pub fn parse(text: &str, base_dir: &Path, source: &Path) -> Result<Self> {
        let err = |line: usize, message: String| Error::Manifest {
            path: source.to_owned(),
            line,
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate()
            .map(|(i, l)| (i + 1, l));
        let (_, header) = lines
            .next()
            .filter(|(_, h)| !h.trim().is_empty())
            .ok_or_else(|| err(1, "empty file: expected a header line".into()))?;
        let header = split_csv_line(header).map_err(|m| err(1, m))?;
        let mut col: HashMap<&str, usize> = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            let name = name.trim();
            if !MANIFEST_COLUMNS.contains(&name) {
                return Err(err(
                    1,
                    format!(
                        "unknown column {name:?}; the columns are {}",
                        MANIFEST_COLUMNS.join(",")
                    ),
                ));
            }
            if col.insert(name, i).is_some() {
                return Err(err(1, format!("column {name:?} appears twice")));
            }
        }
        if let Some(missing) = MANIFEST_COLUMNS.iter().find(|c| !col.contains_key(*c)) {
            return Err(err(
                1,
                format!(
                    "column {missing:?} is missing; the header must name {}",
                    MANIFEST_COLUMNS.join(",")
                ),
            ));
        }
        let resolve = |s: &str| -> PathBuf {
            let p = Path::new(s);
            if p.is_absolute() {
                p.to_owned()
            } else {
                base_dir.join(p)
            }
        };
        let mut cases: Vec<ManifestCase> = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (line, raw) in lines {
            if raw.trim().is_empty() {
                continue;
            }
            let fields = split_csv_line(raw).map_err(|m| err(line, m))?;
            if fields.len() != header.len() {
                return Err(err(
                    line,
                    format!(
                        "{} fields, but the header has {} columns",
                        fields.len(),
                        header.len()
                    ),
                ));
            }
            let get = |name: &str| fields[col[name]].trim();
            for required in [
                "id",
                "patient_id",
                "study_uid",
                "domain",
                "modality",
                "image",
            ] {
                if get(required).is_empty() {
                    return Err(err(line, format!("required field {required:?} is empty")));
                }
            }
            let id = get("id").to_owned();
            if id.contains('/') || id.contains('\\') {
                return Err(err(
                    line,
                    format!("case id {id:?} must not contain a path separator"),
                ));
            }
            if let Some(first) = ids.insert(id.clone(), line) {
                return Err(err(
                    line,
                    format!("case id {id:?} already used on line {first}"),
                ));
            }
            let opt = |name: &str| (!get(name).is_empty()).then(|| resolve(get(name)));
            let case = ManifestCase {
                id,
                patient_id: get("patient_id").to_owned(),
                study_uid: get("study_uid").to_owned(),
                domain: get("domain").to_owned(),
                modality: parse_modality(get("modality")).map_err(|m| err(line, m))?,
                image: resolve(get("image")),
                labels: opt("labels"),
                centroids: opt("centroids"),
                lesions: opt("lesions"),
                split: Split::parse(get("split")).map_err(|m| err(line, m))?,
                line,
            };
            if case.centroids.is_some() && case.labels.is_none() {
                return Err(err(
                    line,
                    "centroids without a label map: the identification loss needs instance \
                     boxes from the labels (add the labels path or clear the centroids)"
                        .into(),
                ));
            }
            cases.push(case);
        }
        if cases.is_empty() {
            return Err(err(0, "no cases: the manifest has a header only".into()));
        }
        let m = Manifest {
            source: source.to_owned(),
            cases,
        };
        m.check_consistency()?;
        Ok(m)
    }

    /// Cross-case checks: study ownership, split leakage, partial split assignment.
    fn check_consistency(&self) -> Result<()> {
        let err = |line: usize, message: String| Error::Manifest {
            path: self.source.clone(),
            line,
            message,
        };
        let mut study_patient: HashMap<&str, (&str, usize)> = HashMap::new();
        for c in &self.cases {
            if let Some(&(p, l)) = study_patient.get(c.study_uid.as_str()) {
                if p != c.patient_id {
                    return Err(err(
                        c.line,
                        format!(
                            "study {} belongs to patient {p:?} on line {l}, here to {:?}: one \
                             study has one patient",
                            c.study_uid, c.patient_id
                        ),
                    ));
                }
            } else {
                study_patient.insert(&c.study_uid, (&c.patient_id, c.line));
            }
        }
        let assigned = self.cases.iter().filter(|c| c.split.is_some()).count();
        if assigned != 0 && assigned != self.cases.len() {
            let c = self
                .cases
                .iter()
                .find(|c| c.split.is_none())
                .map_or(0, |c| c.line);
            return Err(err(
                c,
                format!(
                    "{assigned} of {} cases have a split and this one has none: assign every \
                     case or none",
                    self.cases.len()
                ),
            ));
        }
        for (what, key) in [
            (
                "patient",
                (|c: &ManifestCase| c.patient_id.clone()) as fn(&ManifestCase) -> String,
            ),
            ("study", |c: &ManifestCase| c.study_uid.clone()),
        ] {
            let mut first: HashMap<String, (Split, usize)> = HashMap::new();
            for c in &self.cases {
                let Some(s) = c.split else { continue };
                let k = key(c);
                match first.get(&k) {
                    Some(&(s0, l0)) if s0 != s => {
                        return Err(err(
                            c.line,
                            format!(
                                "{what} {k:?} is in split {s} here and in {s0} on line {l0}: \
                                 data leakage (splits are made per patient)"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        first.insert(k, (s, c.line));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that every file the manifest names exists.
    ///
    /// # Errors
    /// [`Error::Manifest`] naming the case, column and path of the first missing file.
    pub fn check_files(&self) -> Result<()> {
        for c in &self.cases {
            let cols = [
                ("image", Some(&c.image)),
                ("labels", c.labels.as_ref()),
                ("centroids", c.centroids.as_ref()),
                ("lesions", c.lesions.as_ref()),
            ];
            for (name, p) in cols {
                if let Some(p) = p
                    && !p.exists()
                {
                    return Err(Error::Manifest {
                        path: self.source.clone(),
                        line: c.line,
                        message: format!("case {}: {name} {} does not exist", c.id, p.display()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Cases per split (`None` = unassigned).
    pub fn split_counts(&self) -> BTreeMap<Option<Split>, usize> {
        let mut m = BTreeMap::new();
        for c in &self.cases {
            *m.entry(c.split).or_insert(0) += 1;
        }
        m
    }

    /// Writes the manifest as CSV with paths relative to `base_dir` where they lie under it.
    pub fn to_csv(&self, base_dir: &Path) -> String {
        let rel = |p: &Path| -> String {
            let p = p.strip_prefix(base_dir).unwrap_or(p);
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        let opt = |p: &Option<PathBuf>| p.as_deref().map(&rel).unwrap_or_default();
        let mut out = MANIFEST_COLUMNS.join(",");
        out.push('\n');
        for c in &self.cases {
            let fields = [
                c.id.clone(),
                c.patient_id.clone(),
                c.study_uid.clone(),
                c.domain.clone(),
                modality_name(c.modality).to_owned(),
                rel(&c.image),
                opt(&c.labels),
                opt(&c.centroids),
                opt(&c.lesions),
                c.split.map(|s| s.name().to_owned()).unwrap_or_default(),
            ];
            out.push_str(
                &fields
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "id,patient_id,study_uid,domain,modality,image,labels,centroids,lesions,split";

    fn parse(rows: &[&str]) -> Result<Manifest> {
        let text = std::iter::once(HEADER)
            .chain(rows.iter().copied())
            .collect::<Vec<_>>()
            .join("\n");
        Manifest::parse(&text, Path::new("/data"), Path::new("m.csv"))
    }

    fn row(id: &str, patient: &str, study: &str, split: &str) -> String {
        format!(
            "{id},{patient},{study},ct-standard,Ct,cases/{id}/ct.nii.gz,cases/{id}/labels.nii.gz,\
             cases/{id}/truth.json,cases/{id}/truth.json,{split}"
        )
    }

    fn message(r: Result<Manifest>) -> String {
        match r {
            Err(Error::Manifest { line, message, .. }) => format!("{line}: {message}"),
            other => panic!("expected a manifest error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_phantom_cli_format_and_resolves_paths() {
        let a = row("a", "P1", "1.2.3", "");
        let b = "b,P2,1.2.4,mr-t1-like,MrT1Like,\"cases/b,x/mr.nii.gz\",cases/b/labels.nii.gz,,,";
        let m = parse(&[&a, b]).unwrap();
        assert_eq!(m.cases.len(), 2);
        assert_eq!(m.cases[0].image, Path::new("/data/cases/a/ct.nii.gz"));
        assert_eq!(m.cases[1].image, Path::new("/data/cases/b,x/mr.nii.gz"));
        assert_eq!(m.cases[1].modality, Modality::MrT1Like);
        assert_eq!(
            m.cases[0].annotations(),
            Annotations {
                masks: true,
                ids: true,
                lesions: true
            }
        );
        assert_eq!(
            m.cases[1].annotations(),
            Annotations {
                masks: true,
                ids: false,
                lesions: false
            }
        );
        assert_eq!(m.cases[1].line, 3);
        // Round trip through the writer.
        let again = Manifest::parse(
            &m.to_csv(Path::new("/data")),
            Path::new("/data"),
            Path::new("m2.csv"),
        )
        .unwrap();
        assert_eq!(again.cases, m.cases);
    }

    #[test]
    fn columns_may_come_in_any_order() {
        let text = "split,id,patient_id,study_uid,domain,modality,image,labels,centroids,lesions\n\
                    train,a,P1,1.2,ct-standard,Ct,a.nii,,,";
        let m = Manifest::parse(text, Path::new("."), Path::new("m.csv")).unwrap();
        assert_eq!(m.cases[0].split, Some(Split::Train));
        assert_eq!(
            m.cases[0].annotations(),
            Annotations {
                masks: false,
                ids: false,
                lesions: false
            }
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let t = "id,patient_id,study_uid,domain,modality,image,labels,centroids,lesions\na,P,1,d,Ct,x,,,";
        let e = message(Manifest::parse(t, Path::new("."), Path::new("m.csv")));
        assert!(e.starts_with("1: column \"split\" is missing"), "{e}");
        let t = format!("{HEADER},extra\n");
        let e = message(Manifest::parse(&t, Path::new("."), Path::new("m.csv")));
        assert!(e.contains("unknown column \"extra\""), "{e}");
        let t = format!("{HEADER},id\n");
        let e = message(Manifest::parse(&t, Path::new("."), Path::new("m.csv")));
        assert!(e.contains("appears twice"), "{e}");
        let e = message(Manifest::parse("", Path::new("."), Path::new("m.csv")));
        assert!(e.contains("empty file"), "{e}");
        let e = message(parse(&[]));
        assert!(e.contains("no cases"), "{e}");
    }

    #[test]
    fn rejects_bad_rows() {
        let e = message(parse(&["a,P1,1.2,ct-standard,Ct,x.nii,,,"]));
        assert!(e.starts_with("2: 9 fields, but the header has 10"), "{e}");
        let e = message(parse(&["a,,1.2,ct-standard,Ct,x.nii,,,,"]));
        assert!(e.contains("\"patient_id\" is empty"), "{e}");
        let e = message(parse(&["a,P1,1.2,ct-standard,CT,x.nii,,,,"]));
        assert!(e.contains("modality \"CT\""), "{e}");
        let e = message(parse(&["a,P1,1.2,ct-standard,Ct,x.nii,,,,training"]));
        assert!(e.contains("split \"training\""), "{e}");
        let e = message(parse(&["a,P1,1.2,ct-standard,Ct,x.nii,,c.json,,"]));
        assert!(e.contains("centroids without a label map"), "{e}");
        let e = message(parse(&["a,P1,1.2,ct-standard,Ct,\"x.nii,,,,,"]));
        assert!(e.contains("unterminated"), "{e}");
        let e = message(parse(&[
            &row("a", "P1", "1.1", ""),
            &row("a", "P2", "1.2", ""),
        ]));
        assert!(
            e.starts_with("3: case id \"a\" already used on line 2"),
            "{e}"
        );
    }

    #[test]
    fn rejects_leakage_and_inconsistent_studies() {
        let e = message(parse(&[
            &row("a", "P1", "1.1", "train"),
            &row("b", "P1", "1.2", "test"),
        ]));
        assert!(
            e.contains("patient \"P1\" is in split test here and in train on line 2"),
            "{e}"
        );
        let e = message(parse(&[
            &row("a", "P1", "1.1", ""),
            &row("b", "P2", "1.1", ""),
        ]));
        assert!(e.contains("study 1.1 belongs to patient \"P1\""), "{e}");
        let e = message(parse(&[
            &row("a", "P1", "1.1", "train"),
            &row("b", "P2", "1.2", ""),
        ]));
        assert!(e.contains("assign every case or none"), "{e}");
        // Same patient, two studies, same split: fine.
        let m = parse(&[&row("a", "P1", "1.1", "val"), &row("b", "P1", "1.2", "val")]).unwrap();
        assert_eq!(m.split_counts()[&Some(Split::Val)], 2);
    }

    #[test]
    fn check_files_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.nii"), b"x").unwrap();
        let text = format!("{HEADER}\na,P1,1.1,d,Ct,a.nii,labels.nii,,,\n");
        std::fs::write(dir.path().join("manifest.csv"), text).unwrap();
        let m = Manifest::load(&dir.path().join("manifest.csv")).unwrap();
        let e = m.check_files().unwrap_err().to_string();
        assert!(
            e.contains("case a: labels") && e.contains("does not exist"),
            "{e}"
        );
    }
}
