//! The manager's event loop, on the ACME thread's current-thread runtime.
//!
//! State: the managed domains with their next attempt time and failure
//! count, the validity of every known certificate, and the running orders
//! (a `JoinSet`, at most [`MAX_CONCURRENT_ORDERS`]). The loop waits for the
//! first of: a command, an order finishing, or the earliest due time (never
//! sleeping more than an hour, so wall-clock jumps are caught up). Times are
//! wall-clock (`SystemTime`) because they come from certificates.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::Account;
use tokio::sync::{mpsc, Mutex};
use tokio::task::{Id, JoinError, JoinSet};
use tracing::{debug, error, info, warn};

use super::challenges::Challenges;
use super::client;
use super::order;
use super::schedule::{backoff_delay, jitter, renewal_time};
use super::storage::{normalize_domain, Storage};
use super::{AcmeError, AcmeSettings, IssuedCert};

/// Orders running at the same time (a CA rate-limits per account anyway).
pub(crate) const MAX_CONCURRENT_ORDERS: usize = 4;

/// Longest single sleep of the loop.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub(crate) enum Command {
    Manage(Vec<String>),
    RenewNow(String),
    Shutdown,
}

struct DomainState {
    /// Next attempt; `UNIX_EPOCH` means now.
    next_at: SystemTime,
    /// Consecutive failures, for the backoff.
    failures: u32,
}

#[derive(Clone, Copy)]
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

type JobResult = (String, Result<IssuedCert, AcmeError>);

pub(crate) struct Manager {
    settings: Arc<AcmeSettings>,
    storage: Arc<Storage>,
    challenges: Arc<Challenges>,
    on_cert: Box<dyn Fn(IssuedCert) + Send>,
    account: Arc<AccountSlot>,
    managed: HashMap<String, DomainState>,
    certs: HashMap<String, Validity>,
    running: HashMap<Id, String>,
}

impl Manager {
    pub(crate) fn new(
        settings: AcmeSettings,
        storage: Storage,
        challenges: Arc<Challenges>,
        on_cert: Box<dyn Fn(IssuedCert) + Send>,
    ) -> Manager {
        Manager {
            settings: Arc::new(settings),
            storage: Arc::new(storage),
            challenges,
            on_cert,
            account: Arc::new(AccountSlot::default()),
            managed: HashMap::new(),
            certs: HashMap::new(),
            running: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        info!(
            directory = %self.settings.directory_url,
            state_dir = %self.settings.state_dir.display(),
            "ACME manager started"
        );
        self.load_stored();
        let mut jobs: JoinSet<JobResult> = JoinSet::new();
        loop {
            self.start_due(&mut jobs);
            let nap = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Manage(domains)) => self.manage(domains),
                    Some(Command::RenewNow(domain)) => self.renew_now(&domain),
                    Some(Command::Shutdown) | None => break,
                },
                Some(joined) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    self.finish(joined);
                }
                () = tokio::time::sleep(nap) => {}
            }
        }
        // Dropping the order futures withdraws their challenges.
        jobs.shutdown().await;
        info!("ACME manager stopped");
    }

    /// Hands every usable stored certificate to `on_cert`.
    fn load_stored(&mut self) {
        let domains = match self.storage.stored_domains() {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "cannot list stored certificates");
                return;
            }
        };
        let now = SystemTime::now();
        for domain in domains {
            match self.storage.load_cert(&domain) {
                Ok(Some(cert)) if cert.not_after > now => {
                    info!(
                        domain,
                        serial = %cert.serial,
                        not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                        "stored certificate loaded"
                    );
                    self.certs.insert(domain, validity(&cert));
                    self.deliver(cert);
                }
                Ok(Some(cert)) => info!(
                    domain,
                    not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                    "stored certificate has expired; not served"
                ),
                Ok(None) => {}
                Err(e) => warn!(
                    domain,
                    error = %e,
                    "stored certificate unusable; it will be issued again if managed"
                ),
            }
        }
    }

    fn manage(&mut self, domains: Vec<String>) {
        let mut wanted = HashSet::new();
        for name in domains {
            match normalize_domain(&name) {
                Ok(domain) => {
                    wanted.insert(domain);
                }
                Err(e) => error!(domain = %name, error = %e, "not managing domain with ACME"),
            }
        }
        self.managed.retain(|domain, _| {
            let keep = wanted.contains(domain);
            if !keep {
                info!(domain, "domain no longer managed by ACME; renewals stop");
            }
            keep
        });
        for domain in wanted {
            if self.managed.contains_key(&domain) {
                continue;
            }
            let next_at = match self.certs.get(&domain) {
                Some(v) => renewal_time(v.not_before, v.not_after),
                None => UNIX_EPOCH,
            };
            debug!(domain, next = %humantime::format_rfc3339_seconds(next_at), "domain managed by ACME");
            self.managed.insert(
                domain,
                DomainState {
                    next_at,
                    failures: 0,
                },
            );
        }
    }

    fn renew_now(&mut self, name: &str) {
        let domain = match normalize_domain(name) {
            Ok(d) => d,
            Err(e) => {
                warn!(domain = %name, error = %e, "cannot renew");
                return;
            }
        };
        if self.running.values().any(|d| *d == domain) {
            info!(
                domain,
                "renewal requested while an order is already running"
            );
            return;
        }
        match self.managed.get_mut(&domain) {
            Some(state) => {
                info!(domain, "renewal requested");
                state.next_at = UNIX_EPOCH;
            }
            None => warn!(domain, "renewal requested for a domain not managed by ACME"),
        }
    }

    fn start_due(&mut self, jobs: &mut JoinSet<JobResult>) {
        let now = SystemTime::now();
        let busy: HashSet<&String> = self.running.values().collect();
        let mut due: Vec<(SystemTime, String)> = self
            .managed
            .iter()
            .filter(|(domain, state)| state.next_at <= now && !busy.contains(domain))
            .map(|(domain, state)| (state.next_at, domain.clone()))
            .collect();
        drop(busy);
        due.sort();
        for (_, domain) in due {
            if self.running.len() >= MAX_CONCURRENT_ORDERS {
                break;
            }
            let settings = Arc::clone(&self.settings);
            let storage = Arc::clone(&self.storage);
            let challenges = Arc::clone(&self.challenges);
            let account = Arc::clone(&self.account);
            let name = domain.clone();
            let handle = jobs.spawn(async move {
                let result = obtain(&settings, &storage, &challenges, &account, &name).await;
                (name, result)
            });
            debug!(domain, "ACME order started");
            self.running.insert(handle.id(), domain);
        }
    }

    fn next_wake(&self) -> Duration {
        if self.running.len() >= MAX_CONCURRENT_ORDERS {
            return MAX_SLEEP; // a finishing order wakes the loop
        }
        let busy: HashSet<&String> = self.running.values().collect();
        let now = SystemTime::now();
        self.managed
            .iter()
            .filter(|(domain, _)| !busy.contains(domain))
            .map(|(_, state)| state.next_at.duration_since(now).unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }

    fn finish(&mut self, joined: Result<(Id, JobResult), JoinError>) {
        let (domain, result) = match joined {
            Ok((id, (domain, result))) => {
                self.running.remove(&id);
                (domain, result)
            }
            Err(e) => {
                let domain = self.running.remove(&e.id()).unwrap_or_default();
                if e.is_cancelled() {
                    return;
                }
                error!(domain, error = %e, "ACME order task panicked");
                let failed = AcmeError::OrderFailed {
                    domain: domain.clone(),
                    detail: "internal error (task panicked)".into(),
                };
                (domain, Err(failed))
            }
        };
        match result {
            Ok(cert) => {
                let renewed = self.certs.contains_key(&domain);
                info!(
                    domain,
                    serial = %cert.serial,
                    not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                    renew_at = %humantime::format_rfc3339_seconds(cert.renewal_time()),
                    "{}",
                    if renewed { "certificate renewed" } else { "certificate issued" }
                );
                let v = validity(&cert);
                self.certs.insert(domain.clone(), v);
                if let Some(state) = self.managed.get_mut(&domain) {
                    state.failures = 0;
                    state.next_at = renewal_time(v.not_before, v.not_after);
                }
                self.deliver(cert);
            }
            Err(e) => {
                let Some(state) = self.managed.get_mut(&domain) else {
                    warn!(domain, error = %e, "ACME order failed (domain no longer managed)");
                    return;
                };
                state.failures = state.failures.saturating_add(1);
                let delay = backoff_delay(self.settings.retry_base, state.failures, jitter());
                state.next_at = SystemTime::now() + delay;
                warn!(
                    domain,
                    attempt = state.failures,
                    retry_in = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
                    error = %e,
                    "ACME order failed"
                );
            }
        }
    }

    fn deliver(&self, cert: IssuedCert) {
        let domain = cert.domain.clone();
        if catch_unwind(AssertUnwindSafe(|| (self.on_cert)(cert))).is_err() {
            error!(domain, "on_cert callback panicked");
        }
    }
}

fn validity(cert: &IssuedCert) -> Validity {
    Validity {
        not_before: cert.not_before,
        not_after: cert.not_after,
    }
}

/// One attempt for one domain: account (lazily, shared), order, persist.
async fn obtain(
    settings: &AcmeSettings,
    storage: &Storage,
    challenges: &Arc<Challenges>,
    account: &AccountSlot,
    domain: &str,
) -> Result<IssuedCert, AcmeError> {
    let acct = account.get(settings, storage).await?;
    let result = order::issue(&acct, challenges, domain).await;
    if let Err(e) = &result {
        if client::is_account_gone(e) {
            warn!(error = %e, "the CA no longer knows the ACME account; registering again");
            account.forget().await;
        }
    }
    let cert = result?;
    storage.store_cert(&cert)?;
    Ok(cert)
}

/// The account, connected on first use and shared by concurrent orders.
#[derive(Default)]
struct AccountSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    account: Option<Account>,
    /// Register a new account instead of loading the stored one.
    fresh: bool,
}

impl AccountSlot {
    async fn get(&self, settings: &AcmeSettings, storage: &Storage) -> Result<Account, AcmeError> {
        let mut state = self.state.lock().await;
        if let Some(account) = &state.account {
            return Ok(account.clone());
        }
        let account = client::connect(settings, storage, state.fresh).await?;
        state.fresh = false;
        state.account = Some(account.clone());
        Ok(account)
    }

    async fn forget(&self) {
        let mut state = self.state.lock().await;
        state.account = None;
        state.fresh = true;
    }
}
