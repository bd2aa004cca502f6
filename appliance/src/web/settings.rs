//! Settings an admin edits in the console. They are stored in the database (`settings`) and
//! overlaid on the configuration file when `vertebrad serve` starts ([`apply_stored`]), so all
//! of them take effect at the next restart; the console says so next to each value. The
//! configuration file stays the source for everything else, and for these when unset.

use crate::config::Config;
use crate::store::Store;

/// The kind and range of a setting's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A decimal number in `min..=max`.
    Float {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// Yes or no (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`).
    Bool,
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

/// One editable setting.
#[derive(Clone, Copy)]
pub struct SettingDef {
    /// Its key, the configuration path it overrides.
    pub key: &'static str,
    /// What it is, for the page.
    pub label: &'static str,
    /// Unit or explanation.
    pub help: &'static str,
    /// Kind and range.
    pub kind: Kind,
    /// The value the configuration gives now.
    pub current: fn(&Config) -> String,
    /// Sets it on a configuration (the value is validated first).
    pub apply: fn(&mut Config, f64),
}

/// Every editable setting.
pub const SETTINGS: [SettingDef; 10] = [
    SettingDef {
        key: "dicom.completion.stable_after_s",
        label: "Series-stable timeout",
        help: "seconds without a new instance before a series is analysed",
        kind: Kind::Float {
            min: 1.0,
            max: 3600.0,
        },
        current: |c| c.dicom.completion.stable_after_s.to_string(),
        apply: |c, v| c.dicom.completion.stable_after_s = v,
    },
    SettingDef {
        key: "dicom.completion.job_max_attempts",
        label: "Analysis attempts",
        help: "attempts per series before its job is dead",
        kind: Kind::Integer { min: 1, max: 100 },
        current: |c| c.dicom.completion.job_max_attempts.to_string(),
        apply: |c, v| c.dicom.completion.job_max_attempts = v as u32,
    },
    SettingDef {
        key: "dicom.limits.max_associations",
        label: "Concurrent DICOM associations",
        help: "associations served at once; more are refused as busy",
        kind: Kind::Integer { min: 1, max: 1000 },
        current: |c| c.dicom.limits.max_associations.to_string(),
        apply: |c, v| c.dicom.limits.max_associations = v as usize,
    },
    SettingDef {
        key: "dicom.limits.max_object_bytes",
        label: "Largest DICOM object",
        help: "bytes; larger objects are refused",
        kind: Kind::Integer {
            min: 1 << 20,
            max: 64 << 30,
        },
        current: |c| c.dicom.limits.max_object_bytes.to_string(),
        apply: |c, v| c.dicom.limits.max_object_bytes = v as u64,
    },
    SettingDef {
        key: "dicom.limits.spool_high_water_percent",
        label: "Spool high-water mark",
        help: "percent of the spool file system; above it new images are refused",
        kind: Kind::Float {
            min: 50.0,
            max: 99.5,
        },
        current: |c| c.dicom.limits.spool_high_water_percent.to_string(),
        apply: |c, v| c.dicom.limits.spool_high_water_percent = v,
    },
    SettingDef {
        key: "forward.max_attempts",
        label: "Delivery attempts",
        help: "attempts per result object and destination before it is a dead letter",
        kind: Kind::Integer {
            min: 1,
            max: 10_000,
        },
        current: |c| c.forward.max_attempts.to_string(),
        apply: |c, v| c.forward.max_attempts = v as u32,
    },
    SettingDef {
        key: "retention.delete_after_delivery",
        label: "Delete images after delivery",
        help: "yes: a series' received images are deleted once all its results reached the PACS",
        kind: Kind::Bool,
        current: |c| c.retention.delete_after_delivery.to_string(),
        apply: |c, v| c.retention.delete_after_delivery = v != 0.0,
    },
    SettingDef {
        key: "retention.max_age_days",
        label: "Image retention",
        help: "days; delivered images received longer ago are deleted (0: no age limit)",
        kind: Kind::Float {
            min: 0.0,
            max: 36_500.0,
        },
        current: |c| c.retention.max_age_days.to_string(),
        apply: |c, v| c.retention.max_age_days = v,
    },
    SettingDef {
        key: "retention.high_water_percent",
        label: "Retention high-water mark",
        help: "percent of the spool file system; above it delivered images are deleted, \
               earliest delivery first (0: never for disk pressure)",
        kind: Kind::Float {
            min: 0.0,
            max: 99.5,
        },
        current: |c| c.retention.high_water_percent.to_string(),
        apply: |c, v| c.retention.high_water_percent = v,
    },
    SettingDef {
        key: "retention.low_water_percent",
        label: "Retention low-water mark",
        help: "percent; disk-pressure deletion stops here (at most the high-water mark)",
        kind: Kind::Float {
            min: 0.0,
            max: 99.5,
        },
        current: |c| c.retention.low_water_percent.to_string(),
        apply: |c, v| c.retention.low_water_percent = v,
    },
];

/// The definition of `key`.
pub fn definition(key: &str) -> Option<&'static SettingDef> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Parses and range-checks `value` for `def`; returns the number and its canonical text.
///
/// # Errors
/// The reason, naming the setting.
pub fn parse(def: &SettingDef, value: &str) -> Result<(f64, String), String> {
    let v = value.trim();
    match def.kind {
        Kind::Float { min, max } => {
            let x: f64 = v
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| format!("{}: {v:?} is not a number", def.label))?;
            if !(min..=max).contains(&x) {
                return Err(format!("{}: {x} must lie in {min}..={max}", def.label));
            }
            Ok((x, x.to_string()))
        }
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok((1.0, "true".into())),
            "false" | "no" | "off" | "0" => Ok((0.0, "false".into())),
            _ => Err(format!("{}: {v:?} is not yes or no", def.label)),
        },
        Kind::Integer { min, max } => {
            let x: u64 = v
                .parse()
                .map_err(|_| format!("{}: {v:?} is not a whole number", def.label))?;
            if !(min..=max).contains(&x) {
                return Err(format!("{}: {x} must lie in {min}..={max}", def.label));
            }
            Ok((x as f64, x.to_string()))
        }
    }
}

/// Overlays the stored settings on `cfg` and re-validates it; returns the keys applied.
/// A stored value that no longer parses (a newer binary changed a range) is skipped with a
/// warning rather than stopping the daemon.
///
/// # Errors
/// The store's error, or the configuration check's message.
pub async fn apply_stored(store: &Store, cfg: &mut Config) -> Result<Vec<String>, String> {
    let stored = store.settings().await.map_err(|e| e.to_string())?;
    let mut applied = Vec::new();
    for s in stored {
        let Some(def) = definition(&s.key) else {
            tracing::warn!(key = %s.key, "unknown stored console setting ignored");
            continue;
        };
        match parse(def, &s.value) {
            Ok((v, _)) => {
                (def.apply)(cfg, v);
                applied.push(s.key);
            }
            Err(e) => tracing::warn!(key = %s.key, "stored console setting ignored: {e}"),
        }
    }
    cfg.validate()
        .map_err(|e| format!("the configuration with the console's settings is invalid: {e}"))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_range_checked_and_applied() {
        let def = definition("dicom.completion.stable_after_s").unwrap();
        assert!(parse(def, "0.5").is_err());
        assert!(parse(def, "abc").is_err());
        assert!(parse(def, "NaN").is_err());
        let (v, text) = parse(def, " 12.5 ").unwrap();
        assert_eq!(text, "12.5");
        let mut cfg = Config::default();
        (def.apply)(&mut cfg, v);
        assert_eq!(cfg.dicom.completion.stable_after_s, 12.5);
        let def = definition("forward.max_attempts").unwrap();
        assert!(parse(def, "1.5").is_err());
        assert!(parse(def, "0").is_err());
        assert_eq!(parse(def, "7").unwrap().1, "7");
        let def = definition("retention.delete_after_delivery").unwrap();
        assert!(parse(def, "maybe").is_err());
        let (v, text) = parse(def, "Yes").unwrap();
        assert_eq!(text, "true");
        (def.apply)(&mut cfg, v);
        assert!(cfg.retention.delete_after_delivery);
        (def.apply)(&mut cfg, parse(def, "off").unwrap().0);
        assert!(!cfg.retention.delete_after_delivery);
    }

    #[test]
    fn a_low_water_mark_above_the_high_one_is_refused_by_validation() {
        let mut cfg = Config::default();
        let low = definition("retention.low_water_percent").unwrap();
        (low.apply)(&mut cfg, parse(low, "85").unwrap().0);
        assert!(cfg.validate().unwrap_err().contains("low_water_percent"));
    }
}
