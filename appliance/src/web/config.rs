//! The `[web]` section: where the console listens, its certificate, sessions and lockout.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The admin web console's settings (`[web]`, overrides `VERTEBRA_WEB__…`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the console at all (default true).
    pub enabled: bool,
    /// Address to listen on (default `0.0.0.0`: the console is how the appliance is run).
    pub bind: IpAddr,
    /// HTTPS port (default 8443; 0 picks a free port, for tests).
    pub port: u16,
    /// PEM certificate chain; unset: a self-signed certificate generated into the state
    /// directory on first start (its SHA-256 fingerprint is logged).
    pub certificate: Option<PathBuf>,
    /// PEM private key, with `certificate`.
    pub private_key: Option<PathBuf>,
    /// Extra DNS names / IP addresses for the generated certificate (besides `localhost`,
    /// the host name and the bind address).
    pub certificate_names: Vec<String>,
    /// Optional plain-HTTP port that only redirects to HTTPS (default off).
    pub redirect_http_port: Option<u16>,
    /// Session lifetime in minutes (absolute, from login; default 480 = one shift).
    pub session_minutes: u64,
    /// Consecutive failed logins that lock an account (default 5).
    pub lockout_threshold: u32,
    /// How long a locked account stays locked, minutes (default 15).
    pub lockout_minutes: u64,
    /// Largest model bundle upload, MiB (default 2048).
    pub max_bundle_upload_mib: u64,
    /// Bearer token required by `/metrics` (unset: `/metrics` needs a console session or an
    /// address in `metrics_allow`).
    pub metrics_token: Option<String>,
    /// Networks (CIDR) that may read `/metrics` without a token (default: loopback only).
    pub metrics_allow: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 8443,
            certificate: None,
            private_key: None,
            certificate_names: Vec::new(),
            redirect_http_port: None,
            session_minutes: 480,
            lockout_threshold: 5,
            lockout_minutes: 15,
            max_bundle_upload_mib: 2048,
            metrics_token: None,
            metrics_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

impl WebConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the offending `web.` key.
    pub fn validate(&self) -> Result<(), String> {
        if self.certificate.is_some() != self.private_key.is_some() {
            return Err("web.certificate and web.private_key go together".into());
        }
        if !(5..=7 * 24 * 60).contains(&self.session_minutes) {
            return Err(format!(
                "web.session_minutes {} must be between 5 and 10080 (one week)",
                self.session_minutes
            ));
        }
        if !(1..=100).contains(&self.lockout_threshold) {
            return Err(format!(
                "web.lockout_threshold {} must be between 1 and 100",
                self.lockout_threshold
            ));
        }
        if !(1..=24 * 60).contains(&self.lockout_minutes) {
            return Err(format!(
                "web.lockout_minutes {} must be between 1 and 1440",
                self.lockout_minutes
            ));
        }
        if !(1..=65_536).contains(&self.max_bundle_upload_mib) {
            return Err(format!(
                "web.max_bundle_upload_mib {} must be between 1 and 65536",
                self.max_bundle_upload_mib
            ));
        }
        if let Some(t) = &self.metrics_token
            && t.len() < 16
        {
            return Err("web.metrics_token must be at least 16 characters".into());
        }
        if self
            .redirect_http_port
            .is_some_and(|p| p != 0 && p == self.port)
        {
            return Err("web.redirect_http_port must differ from web.port".into());
        }
        for net in &self.metrics_allow {
            net.parse::<crate::config::Cidr>()
                .map_err(|e| format!("web.metrics_allow {net:?}: {e}"))?;
        }
        Ok(())
    }

    /// The parsed `metrics_allow` networks (validated by [`Self::validate`]).
    pub fn metrics_networks(&self) -> Vec<crate::config::Cidr> {
        self.metrics_allow
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        WebConfig::default().validate().unwrap();
        let bad = WebConfig {
            lockout_threshold: 0,
            ..WebConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("web.lockout_threshold")
        );
        let bad = WebConfig {
            certificate: Some("/x.pem".into()),
            ..WebConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("web.private_key"));
        let bad = WebConfig {
            metrics_allow: vec!["not-a-net".into()],
            ..WebConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("web.metrics_allow"));
    }
}
