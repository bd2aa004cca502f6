//! The daemon's configuration: one typed struct read from a TOML file with the `config` crate,
//! every key overridable by a `VERTEBRA_…` environment variable.
//!
//! Sections are added by the parts that need them: [`DicomConfig`] (the `[dicom]` table),
//! [`ForwardConfig`] (the `[forward]` table, the outbox worker) and [`WorkerSettings`] (the
//! `[worker]` table, the analysis worker). Every default is the safe
//! choice for a hospital network: an SCP that answers only to peers it was told about, with
//! bounded resources.
//!
//! Environment overrides use `__` as the path separator below the `VERTEBRA_` prefix, e.g.
//! `VERTEBRA_DICOM__PORT=11112` or `VERTEBRA_DICOM__AE_TITLE=SPINE`. Lists (peers) come from
//! the file only.
//!
//! Any value written `credential:NAME` is the file `NAME` in `$CREDENTIALS_DIRECTORY` (systemd
//! `LoadCredential=`; see [`crate::credentials`]), e.g. `private_key = "credential:dicom-tls.key"`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything `vertebrad` reads from its configuration file.
///
/// Unknown top-level keys are ignored (other `VERTEBRA_…` variables such as
/// `VERTEBRA_STATE_DIR` belong to the command line); unknown keys inside a section are errors.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// The DICOM node (SCP): `[dicom]`.
    pub dicom: DicomConfig,
    /// The inference engine: `[inference]` (bundle, trusted keys, ONNX Runtime, providers).
    pub inference: crate::engine::EngineConfig,
    /// The forwarder (SCU sending results from the outbox): `[forward]`.
    pub forward: ForwardConfig,
    /// The admin web console: `[web]`.
    pub web: crate::web::WebConfig,
    /// The analysis worker (job leases, polling): `[worker]`.
    pub worker: WorkerSettings,
    /// Spool retention (when received images are deleted): `[retention]`.
    pub retention: RetentionConfig,
}

impl Config {
    /// Reads `path` (TOML; a missing file is an error) layered under `VERTEBRA_…`
    /// environment variables, and checks the result.
    ///
    /// # Errors
    /// A message naming the file, key or value that is wrong.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        Self::load_with_env(path, None)
    }

    /// As [`Config::load`], reading overrides (and `CREDENTIALS_DIRECTORY`) from `env`
    /// instead of the process environment when given (tests).
    ///
    /// # Errors
    /// A message naming the file, key or value that is wrong.
    pub fn load_with_env(
        path: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, String> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let credentials = match &env {
            Some(env) => env
                .get("CREDENTIALS_DIRECTORY")
                .map(std::path::PathBuf::from),
            None => std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from),
        };
        let builder = builder.add_source(
            config::Environment::with_prefix("VERTEBRA")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        let raw = builder
            .build()
            .map_err(|e| format!("reading the configuration: {e}"))?;
        let raw = crate::credentials::resolve(raw, credentials.as_deref())?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a configuration from TOML text (tests, embedded defaults) and checks it.
    ///
    /// # Errors
    /// A message naming the key or value that is wrong.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| format!("reading the configuration: {e}"))?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        self.dicom.validate()?;
        self.forward.validate()?;
        self.web.validate()?;
        self.worker.validate()?;
        self.retention.validate()?;
        self.inference.validate().map_err(|e| e.to_string())
    }
}

/// The DICOM node: listening address, identity, who may connect, and resource limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DicomConfig {
    /// Address to listen on. Default `0.0.0.0` (all interfaces; the peer allow-list decides).
    pub bind: IpAddr,
    /// TCP port of the SCP. Default 11112 (the registered DICOM port that needs no root).
    pub port: u16,
    /// Our AE title; an association whose called AE title differs is rejected (unless
    /// `check_called_ae_title` is false). 1–16 characters. Default `VERTEBRA`.
    pub ae_title: String,
    /// Reject associations whose called AE title is not `ae_title`. Default true.
    pub check_called_ae_title: bool,
    /// Peers allowed to associate. An association whose calling AE title and source address
    /// match no entry is rejected. Default: none (nobody may send until configured).
    pub peers: Vec<PeerConfig>,
    /// Accept any calling AE title from any address (demo and lab use only). Default false.
    pub allow_any_peer: bool,
    /// Storage SOP classes other than CT, Enhanced CT and MR Image Storage (localizers, dose
    /// reports, secondary captures…): accepted and stored without processing when true (the
    /// default: a modality pushing a whole study must not see failures), refused in
    /// association negotiation (abstract syntax not supported) when false.
    pub accept_other_storage: bool,
    /// Resource limits.
    pub limits: DicomLimits,
    /// Series completion: when a series counts as complete and becomes a job.
    pub completion: CompletionConfig,
    /// Spool directory; default `<state dir>/spool`.
    pub spool_dir: Option<std::path::PathBuf>,
    /// DICOM TLS on a second port (`[dicom.tls]`); absent: no TLS listener.
    pub tls: Option<TlsConfig>,
}

/// DICOM TLS (PS3.15 BCP 195 profile): TLS 1.2 or 1.3 only, on its own port. The plain port
/// keeps running; close it with a firewall where only TLS may be used.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TCP port of the TLS listener (2762 is the registered DICOM-TLS port).
    pub port: u16,
    /// Server certificate chain, PEM (leaf first). E.g. a systemd credential path.
    pub certificate: std::path::PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. When set, every TLS
    /// peer must present a valid client certificate; absent: no client authentication.
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 11112,
            ae_title: "VERTEBRA".into(),
            check_called_ae_title: true,
            peers: Vec::new(),
            allow_any_peer: false,
            accept_other_storage: true,
            limits: DicomLimits::default(),
            completion: CompletionConfig::default(),
            spool_dir: None,
            tls: None,
        }
    }
}

impl DicomConfig {
    fn validate(&self) -> Result<(), String> {
        check_ae_title("dicom.ae_title", &self.ae_title)?;
        for (i, peer) in self.peers.iter().enumerate() {
            peer.validate(&format!("dicom.peers[{i}]"))?;
        }
        let l = &self.limits;
        if l.max_associations == 0 {
            return Err("dicom.limits.max_associations must be at least 1".into());
        }
        if !(MIN_PDU..=MAX_PDU).contains(&l.max_pdu_bytes) {
            return Err(format!(
                "dicom.limits.max_pdu_bytes must lie in {MIN_PDU}..={MAX_PDU}, not {}",
                l.max_pdu_bytes
            ));
        }
        if l.idle_timeout_s == 0 {
            return Err("dicom.limits.idle_timeout_s must be at least 1".into());
        }
        if !(0.0..=100.0).contains(&l.spool_high_water_percent) {
            return Err("dicom.limits.spool_high_water_percent must lie in 0..=100".into());
        }
        Ok(())
    }

    /// The peer entry that admits `calling_ae` from `addr`, if any.
    pub fn peer(&self, calling_ae: &str, addr: IpAddr) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.admits(calling_ae, addr))
    }

    /// How long a series from `calling_ae` must stay without new instances to be complete.
    pub fn stable_after(&self, calling_ae: &str) -> Duration {
        let s = self
            .peers
            .iter()
            .find(|p| p.ae_title == calling_ae)
            .and_then(|p| p.stable_after_s)
            .unwrap_or(self.completion.stable_after_s);
        Duration::from_secs_f64(s.max(0.0))
    }
}

/// Smallest maximum PDU length we negotiate (the standard's floor is lower; this one keeps
/// per-PDU overhead sane).
pub const MIN_PDU: u32 = 4_096;
/// Largest maximum PDU length we accept to configure: memory per association is about this.
pub const MAX_PDU: u32 = 4 * 1024 * 1024;

pub(crate) fn check_ae_title(key: &str, ae: &str) -> Result<(), String> {
    let ok = !ae.trim().is_empty()
        && ae.len() <= 16
        && ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} must be 1-16 printable ASCII characters without backslash"
        ))
    }
}

/// One peer allowed to send to us.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its calling AE title (exact match).
    pub ae_title: String,
    /// Source addresses it may connect from: single addresses (`10.1.2.3`) or CIDR blocks
    /// (`10.1.0.0/16`, `fd00::/8`). Empty: any address.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Seconds without new instances after which a series from this peer is complete;
    /// default: `dicom.completion.stable_after_s`.
    #[serde(default)]
    pub stable_after_s: Option<f64>,
}

impl PeerConfig {
    /// Whether this entry admits `calling_ae` connecting from `addr`.
    pub fn admits(&self, calling_ae: &str, addr: IpAddr) -> bool {
        self.ae_title == calling_ae
            && (self.addresses.is_empty()
                || self
                    .addresses
                    .iter()
                    .filter_map(|c| c.parse::<Cidr>().ok())
                    .any(|c| c.contains(addr)))
    }

    /// Checks the AE title and every address; `key` names the entry in the message.
    ///
    /// # Errors
    /// What is wrong, naming `key`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        check_ae_title(&format!("{key}.ae_title"), &self.ae_title)?;
        for a in &self.addresses {
            a.parse::<Cidr>()
                .map_err(|e| format!("{key}.addresses: {e}"))?;
        }
        match self.stable_after_s {
            Some(s) if !(s.is_finite() && s > 0.0 && s <= 86_400.0) => Err(format!(
                "{key}.stable_after_s must be a number of seconds in (0, 86400], not {s}"
            )),
            _ => Ok(()),
        }
    }
}

/// Resource limits of the SCP. Each protects the box from one kind of overload.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DicomLimits {
    /// Associations served at once; one more is rejected (A-ASSOCIATE-RJ, transient, local
    /// limit exceeded). Default 16.
    pub max_associations: usize,
    /// Largest PDU we accept (and announce as our maximum length). Default 262,144 bytes.
    pub max_pdu_bytes: u32,
    /// Seconds a peer may stay silent (no complete PDU) before the association is aborted;
    /// also bounds the wait for the A-ASSOCIATE-RQ (ARTIM). Default 30.
    pub idle_timeout_s: u64,
    /// Largest object accepted by C-STORE, in bytes; larger ones are answered 0xA700 (Out of
    /// Resources). Default 4 GiB.
    pub max_object_bytes: u64,
    /// Used share of the spool's file system (percent) above which C-STORE is answered
    /// 0xA700 (Out of Resources) instead of storing. Default 90.
    pub spool_high_water_percent: f64,
}

impl Default for DicomLimits {
    fn default() -> Self {
        Self {
            max_associations: 16,
            max_pdu_bytes: 262_144,
            idle_timeout_s: 30,
            max_object_bytes: 4 * 1024 * 1024 * 1024,
            spool_high_water_percent: 90.0,
        }
    }
}

/// When a series counts as complete.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompletionConfig {
    /// Seconds without a new instance after which a series is complete and queued as a job.
    /// Default 30.
    pub stable_after_s: f64,
    /// Attempts a queued analysis job gets before it is dead. Default 3.
    pub job_max_attempts: u32,
}

impl Default for CompletionConfig {
    fn default() -> Self {
        Self {
            stable_after_s: 30.0,
            job_max_attempts: 3,
        }
    }
}

/// The forwarder: how results leave the box. Destinations themselves live in the store (the
/// web console edits them); this section says how we talk to them.
///
/// Retries: a failed delivery is retried after `backoff_base_s · 2^(attempt−1)` seconds,
/// capped at `backoff_max_s`, each delay lengthened by up to `jitter` of itself so that many
/// deliveries failing together do not retry together; after `max_attempts` failed attempts
/// the delivery is dead-lettered (kept with its last error, shown in the console, retried
/// only on an operator's request). The defaults keep retrying for about a day (30 s doubling
/// to 1 h, 30 attempts), so nothing is dropped while a PACS is down for hours.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Our calling AE title towards destinations. 1–16 characters. Default `VERTEBRA`.
    pub calling_ae_title: String,
    /// Failed attempts after which a delivery is dead-lettered. Default 30.
    pub max_attempts: u32,
    /// Delay after the first failed attempt, seconds. Default 30.
    pub backoff_base_s: f64,
    /// Longest delay between attempts, seconds. Default 3600.
    pub backoff_max_s: f64,
    /// Extra random share (0..=1) added to each delay. Default 0.1.
    pub jitter: f64,
    /// Associations open at once to one destination. Default 2.
    pub concurrency_per_destination: usize,
    /// Associations open at once over all destinations. Default 8.
    pub max_associations: usize,
    /// Deliveries (objects) sent over one association at most. Default 64.
    pub batch_size: usize,
    /// Seconds a claimed batch stays leased to this worker; after that another worker may
    /// take it over (and send it again: a PACS stores a resent instance once). Must exceed
    /// the time one batch takes. Default 900.
    pub lease_s: u64,
    /// Seconds between looks at the outbox when nothing is due. Default 2.
    pub poll_interval_s: f64,
    /// Seconds to wait for the TCP connection. Default 10.
    pub connect_timeout_s: u64,
    /// Seconds to wait for the A-ASSOCIATE answer, and for the A-RELEASE answer (ARTIM);
    /// connection, TLS handshake and A-ASSOCIATE together get `connect_timeout_s` plus this.
    /// Default 30.
    pub association_timeout_s: u64,
    /// Seconds to wait for each DIMSE response (and for each write to progress). Default 120.
    pub dimse_timeout_s: u64,
    /// Largest PDU we announce we can receive. Default 262,144 bytes.
    pub max_pdu_bytes: u32,
    /// TLS towards destinations flagged `tls` (`[forward.tls]`); absent: such destinations
    /// fail with an error saying so.
    pub tls: Option<ForwardTlsConfig>,
}

/// DICOM TLS as a client (PS3.15 BCP 195 profile): TLS 1.2 or 1.3 only; the destination's
/// certificate must chain to `ca_certificates` and name the destination's host.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardTlsConfig {
    /// CA certificates (PEM) destination certificates must chain to.
    pub ca_certificates: std::path::PathBuf,
    /// Our client certificate chain (PEM, leaf first), for destinations that require one.
    #[serde(default)]
    pub certificate: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM); required with `certificate`.
    #[serde(default)]
    pub private_key: Option<std::path::PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            calling_ae_title: "VERTEBRA".into(),
            max_attempts: 30,
            backoff_base_s: 30.0,
            backoff_max_s: 3600.0,
            jitter: 0.1,
            concurrency_per_destination: 2,
            max_associations: 8,
            batch_size: 64,
            lease_s: 900,
            poll_interval_s: 2.0,
            connect_timeout_s: 10,
            association_timeout_s: 30,
            dimse_timeout_s: 120,
            max_pdu_bytes: 262_144,
            tls: None,
        }
    }
}

impl ForwardConfig {
    fn validate(&self) -> Result<(), String> {
        check_ae_title("forward.calling_ae_title", &self.calling_ae_title)?;
        let at_least_one = [
            ("max_attempts", u64::from(self.max_attempts)),
            (
                "concurrency_per_destination",
                self.concurrency_per_destination as u64,
            ),
            ("max_associations", self.max_associations as u64),
            ("batch_size", self.batch_size as u64),
            ("lease_s", self.lease_s),
            ("connect_timeout_s", self.connect_timeout_s),
            ("association_timeout_s", self.association_timeout_s),
            ("dimse_timeout_s", self.dimse_timeout_s),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(format!("forward.{key} must be at least 1"));
            }
        }
        if !(self.backoff_base_s.is_finite() && self.backoff_base_s > 0.0) {
            return Err("forward.backoff_base_s must be a positive number of seconds".into());
        }
        if !(self.backoff_max_s.is_finite() && self.backoff_max_s >= self.backoff_base_s) {
            return Err("forward.backoff_max_s must be at least forward.backoff_base_s".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("forward.jitter must lie in 0..=1".into());
        }
        if !(self.poll_interval_s.is_finite() && self.poll_interval_s > 0.0) {
            return Err("forward.poll_interval_s must be a positive number of seconds".into());
        }
        if !(MIN_PDU..=MAX_PDU).contains(&self.max_pdu_bytes) {
            return Err(format!(
                "forward.max_pdu_bytes must lie in {MIN_PDU}..={MAX_PDU}, not {}",
                self.max_pdu_bytes
            ));
        }
        let half_pair = self
            .tls
            .as_ref()
            .is_some_and(|t| t.certificate.is_some() != t.private_key.is_some());
        if half_pair {
            return Err("forward.tls.certificate and forward.tls.private_key go together".into());
        }
        Ok(())
    }

    /// The back-off between attempts.
    pub fn backoff(&self) -> crate::store::queue::Backoff {
        crate::store::queue::Backoff {
            base: Duration::from_secs_f64(self.backoff_base_s),
            max: Duration::from_secs_f64(self.backoff_max_s),
        }
    }
}

/// The analysis worker: how it holds the jobs it runs.
///
/// A claimed job is leased to the worker for `lease_s` seconds and the lease is extended by a
/// heartbeat every third of that while the analysis runs. When a daemon dies mid-job, its
/// heartbeats stop and the job is taken over (as another attempt, counted against
/// `[dicom.completion] job_max_attempts`) once the lease has run out: a shorter lease resumes
/// crashed work sooner, a longer one tolerates longer stalls (a database fail-over, a paused
/// VM) without a second worker starting the same job.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Seconds a claimed job stays leased without a heartbeat. At least 3 (heartbeats every
    /// third of it). Default 300.
    pub lease_s: u64,
    /// Seconds between looks at the queue when no job is runnable, and between retries
    /// while the store is unreachable. Default 1.
    pub poll_interval_s: f64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease_s: 300,
            poll_interval_s: 1.0,
        }
    }
}

impl WorkerSettings {
    fn validate(&self) -> Result<(), String> {
        if self.lease_s < 3 {
            return Err(format!(
                "worker.lease_s must be at least 3 (heartbeats come every third of it), not {}",
                self.lease_s
            ));
        }
        if !(self.poll_interval_s.is_finite() && self.poll_interval_s > 0.0) {
            return Err("worker.poll_interval_s must be a positive number of seconds".into());
        }
        Ok(())
    }
}

/// Spool retention: when received images (never results, outputs or the audit log) are
/// deleted. Only images of a series whose results were all delivered are ever deleted
/// ([`crate::store::retention`]); the PACS holds the findings, and the modality or PACS the
/// originals. Default: images stay until the spool's file system passes 80 % use, then the
/// earliest-delivered go until it is back at 70 % — below the 90 % mark at which new images are
/// refused, so a full spool does not turn studies away while delivered images could go.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete a series' images as soon as all its results are delivered. Default false.
    pub delete_after_delivery: bool,
    /// Delete delivered images received more than this many days ago; 0: no age limit.
    /// Default 0.
    pub max_age_days: f64,
    /// Used share (percent) of the spool's file system above which delivered images are
    /// deleted, earliest delivery first; 0: never for disk pressure. Default 80.
    pub high_water_percent: f64,
    /// Disk-pressure deletion stops at this use (percent, at most `high_water_percent`).
    /// Default 70.
    pub low_water_percent: f64,
    /// Seconds between retention sweeps (the first runs one interval after start). Default 300.
    pub interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            delete_after_delivery: false,
            max_age_days: 0.0,
            high_water_percent: 80.0,
            low_water_percent: 70.0,
            interval_s: 300,
        }
    }
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.max_age_days.is_finite() && self.max_age_days >= 0.0) {
            return Err("retention.max_age_days must be 0 (no limit) or a positive number".into());
        }
        for (key, v) in [
            ("retention.high_water_percent", self.high_water_percent),
            ("retention.low_water_percent", self.low_water_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{key} must lie in 0..=100, not {v}"));
            }
        }
        if self.high_water_percent > 0.0 && self.low_water_percent > self.high_water_percent {
            return Err(format!(
                "retention.low_water_percent ({}) must not exceed retention.high_water_percent ({})",
                self.low_water_percent, self.high_water_percent
            ));
        }
        if self.interval_s == 0 {
            return Err("retention.interval_s must be at least 1".into());
        }
        Ok(())
    }

    /// The store's policy for a file system of `total_bytes`.
    pub fn policy(&self, total_bytes: u64) -> crate::store::retention::RetentionPolicy {
        let bytes = |percent: f64| (total_bytes as f64 * percent / 100.0) as u64;
        let disk = self.high_water_percent > 0.0;
        crate::store::retention::RetentionPolicy {
            delete_after_delivery: self.delete_after_delivery,
            max_age: (self.max_age_days > 0.0)
                .then(|| Duration::from_secs_f64(self.max_age_days * 86_400.0)),
            high_water_bytes: disk.then(|| bytes(self.high_water_percent)),
            low_water_bytes: disk.then(|| bytes(self.low_water_percent)),
        }
    }
}

/// An IPv4 or IPv6 address block (`addr/prefix`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 peer matches IPv4 blocks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xff_u8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_by_prefix() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let odd: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.1.127".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("host.example".parse::<Cidr>().is_err());
    }

    #[test]
    fn defaults_are_closed_and_bounded() {
        let cfg = Config::from_toml("").unwrap();
        assert!(cfg.dicom.peers.is_empty());
        assert!(!cfg.dicom.allow_any_peer);
        assert_eq!(cfg.dicom.port, 11112);
        assert_eq!(cfg.dicom.limits.max_associations, 16);
        assert_eq!(cfg.worker.lease_s, 300);
        let cfg = Config::from_toml("[worker]\nlease_s = 5\npoll_interval_s = 0.25").unwrap();
        assert_eq!((cfg.worker.lease_s, cfg.worker.poll_interval_s), (5, 0.25));
    }

    #[test]
    fn peers_and_per_peer_completion_parse() {
        let cfg = Config::from_toml(
            r#"
            [dicom]
            ae_title = "SPINE"
            [[dicom.peers]]
            ae_title = "CT1"
            addresses = ["10.0.0.0/8"]
            stable_after_s = 5
            "#,
        )
        .unwrap();
        let ip = "10.9.9.9".parse().unwrap();
        assert!(cfg.dicom.peer("CT1", ip).is_some());
        assert!(cfg.dicom.peer("CT2", ip).is_none());
        assert!(cfg.dicom.peer("CT1", "11.0.0.1".parse().unwrap()).is_none());
        assert_eq!(cfg.dicom.stable_after("CT1"), Duration::from_secs(5));
        assert_eq!(cfg.dicom.stable_after("CT2"), Duration::from_secs(30));
    }

    #[test]
    fn environment_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.toml");
        std::fs::write(&file, "[dicom]\nport = 104\nae_title = \"FILE\"\n").unwrap();
        let env: std::collections::HashMap<String, String> = [
            ("VERTEBRA_DICOM__PORT", "4242"),
            ("VERTEBRA_DICOM__LIMITS__MAX_ASSOCIATIONS", "3"),
            ("VERTEBRA_STATE_DIR", "/somewhere"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cfg = Config::load_with_env(Some(&file), Some(env)).unwrap();
        assert_eq!(cfg.dicom.port, 4242);
        assert_eq!(cfg.dicom.ae_title, "FILE");
        assert_eq!(cfg.dicom.limits.max_associations, 3);
        assert!(Config::load_with_env(Some(&dir.path().join("missing.toml")), None).is_err());
    }

    #[test]
    fn the_shipped_appliance_config_is_closed_and_takes_tls_from_credentials() {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/vertebrad.toml");
        let creds = tempfile::tempdir().unwrap();
        for name in [
            "dicom-tls.crt",
            "dicom-tls.key",
            "web-tls.crt",
            "web-tls.key",
        ] {
            std::fs::write(creds.path().join(name), "pem").unwrap();
        }
        let env: std::collections::HashMap<String, String> = [(
            "CREDENTIALS_DIRECTORY".to_owned(),
            creds.path().to_string_lossy().into_owned(),
        )]
        .into_iter()
        .collect();
        let cfg = Config::load_with_env(Some(&file), Some(env)).unwrap();
        assert_eq!(cfg.dicom.port, 104);
        assert!(cfg.dicom.peers.is_empty() && !cfg.dicom.allow_any_peer);
        assert!(cfg.dicom.check_called_ae_title);
        let tls = cfg.dicom.tls.unwrap();
        assert_eq!(tls.private_key, creds.path().join("dicom-tls.key"));
        assert_eq!(tls.certificate, creds.path().join("dicom-tls.crt"));
        let e =
            Config::load_with_env(Some(&file), Some(std::collections::HashMap::new())).unwrap_err();
        assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = Config::from_toml("[dicom]\nae_title = \"THIS-TITLE-IS-TOO-LONG\"").unwrap_err();
        assert!(e.contains("dicom.ae_title"), "{e}");
        let e = Config::from_toml("[dicom.limits]\nmax_associations = 0").unwrap_err();
        assert!(e.contains("max_associations"), "{e}");
        let e = Config::from_toml("[dicom]\nbogus = 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn forward_defaults_retry_for_about_a_day_and_bad_values_name_their_key() {
        let cfg = Config::from_toml("").unwrap();
        let f = &cfg.forward;
        assert_eq!(f.calling_ae_title, "VERTEBRA");
        let b = f.backoff();
        let total: Duration = (1..f.max_attempts).map(|a| b.delay(a)).sum();
        assert!(
            total > Duration::from_secs(20 * 3600),
            "defaults give up after {total:?}"
        );
        let cfg = Config::from_toml(
            "[forward]\ncalling_ae_title = \"SPINE-OUT\"\nmax_attempts = 3\n\
             [forward.tls]\nca_certificates = \"/etc/ca.pem\"",
        )
        .unwrap();
        assert_eq!(cfg.forward.max_attempts, 3);
        assert!(cfg.forward.tls.is_some());
        for (toml, key) in [
            ("[forward]\nmax_attempts = 0", "max_attempts"),
            ("[forward]\nbackoff_max_s = 1", "backoff_max_s"),
            ("[forward]\njitter = 2", "jitter"),
            ("[forward]\nmax_pdu_bytes = 10", "max_pdu_bytes"),
            ("[forward]\ncalling_ae_title = \"\"", "calling_ae_title"),
            ("[forward]\ndimse_timeout_s = 0", "dimse_timeout_s"),
            (
                "[forward.tls]\nca_certificates = \"/a\"\ncertificate = \"/b\"",
                "private_key",
            ),
            ("[forward]\nretries = 3", "retries"),
            ("[worker]\nlease_s = 2", "worker.lease_s"),
            ("[worker]\npoll_interval_s = 0", "worker.poll_interval_s"),
            ("[worker]\nlease = 2", "lease"),
        ] {
            let e = Config::from_toml(toml).unwrap_err();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
