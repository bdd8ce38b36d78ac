//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: a
//! candidate takes the Lease when it is free or its holder has not renewed it for a lease
//! duration (measured on the candidate's own clock from when it last saw the record
//! change, so clock skew between hosts does not matter); the leader renews every retry
//! period and gives up leadership when it has not managed to renew within the renew
//! deadline — which is shorter than the lease duration, so it stops acting before anyone
//! else may start. On graceful shutdown the leader releases the Lease so a standby takes
//! over at once.

use crate::conn::Client;
use crate::error::{Error, Result};
use crate::typed::Api;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are (unique per process: host name and a random suffix).
    pub identity: String,
    /// How long a non-renewed lease keeps others out (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up (10 s).
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews (2 s).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Kubernetes' defaults for the Lease `namespace/name`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::Config(
                "leader election: the lease duration must be longer than the renew deadline".into(),
            ));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(Error::Config(
                "leader election: the renew deadline must be longer than the retry period".into(),
            ));
        }
        if self.identity.is_empty() {
            return Err(Error::Config("leader election: identity is empty".into()));
        }
        Ok(())
    }
}

/// A unique identity for this process: `hostname_random`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    /// The last record seen (resourceVersion) and when we saw it change.
    observed: Option<(String, Instant)>,
}

fn now() -> MicroTime {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl Elector {
    /// One attempt; Ok(true) when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let me = self.cfg.identity.clone();
        let secs = self.cfg.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&lease).await {
                Ok(l) => {
                    self.observe(&l);
                    Ok(true)
                }
                Err(e) if e.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_for =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(0) as u64);
        let seen_at = self
            .observed
            .as_ref()
            .map_or_else(Instant::now, |(_, t)| *t);
        if !holder.is_empty() && holder != me && seen_at.elapsed() < held_for {
            return Ok(false);
        }
        if holder != me {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now());
        match self.api.replace(&lease).await {
            Ok(l) => {
                self.observe(&l);
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(r, _)| r) != Some(&rv) {
            self.observed = Some((rv, Instant::now()));
        }
    }

    /// Gives the lease up if we hold it (holder cleared, duration 1 s).
    async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        self.api.replace(&lease).await.map(|_| ())
    }
}

/// Leadership held: renewed in the background until lost or released.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves when leadership is lost (the lease could not be renewed in time). The
    /// holder must stop acting at once; Kubernetes' components exit.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops renewing and releases the lease (graceful shutdown).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Waits until this process holds the lease, then keeps renewing it in the background.
pub async fn acquire(client: Client, cfg: LeaderElectionConfig) -> Result<Leadership> {
    cfg.validate()?;
    let mut el = Elector {
        api: Api::namespaced(client, &cfg.namespace),
        cfg: cfg.clone(),
        observed: None,
    };
    loop {
        match tokio::time::timeout(cfg.retry_period, el.try_acquire_or_renew()).await {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(lease = %cfg.name, error = %e, "acquiring the lease"),
            Err(_) => tracing::warn!(lease = %cfg.name, "acquiring the lease timed out"),
        }
        tokio::time::sleep(jittered(cfg.retry_period)).await;
    }
    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
    let (lost_tx, lost) = watch::channel(false);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = &mut stopped => {
                    if let Err(e) = tokio::time::timeout(cfg.retry_period, el.release()).await.unwrap_or(Ok(())) {
                        tracing::warn!(error = %e, "releasing the lease");
                    }
                    return;
                }
            }
            let deadline = renewed + cfg.renew_deadline;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.min(cfg.retry_period), el.try_acquire_or_renew()).await
            {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::error!(lease = %cfg.name, "the lease was taken by another holder");
                    lost_tx.send_replace(true);
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease"),
                Err(_) => tracing::warn!("renewing the lease timed out"),
            }
            if renewed + cfg.renew_deadline <= Instant::now() {
                tracing::error!(lease = %cfg.name, "could not renew the lease within the renew deadline; leadership lost");
                lost_tx.send_replace(true);
                return;
            }
        }
    });
    Ok(Leadership {
        lost,
        stop: Some(stop),
        task,
    })
}

/// `d` plus up to 20% (client-go's jitter), so candidates do not move in lockstep.
fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.2)
}
