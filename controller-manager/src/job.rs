//! The job controller: runs pods until `completions` succeed (`parallelism` at a time),
//! retrying failures with exponential backoff (10 s doubling, at most 6 minutes) up to
//! `backoffLimit`, failing the job past `activeDeadlineSeconds`, and marking it
//! Complete or Failed. Indexed jobs give each pod its completion index (annotation,
//! `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`) and record `completedIndexes`.
//! Finished jobs are deleted `ttlSecondsAfterFinished` later.

use crate::controller::{self, controller_of, controller_ref, run_workers, Expectations, Requeue};
use crate::pods;
use crate::Context;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const BACKOFF_BASE: i64 = 10;
const BACKOFF_MAX: i64 = 360;

#[derive(Clone)]
pub struct JobController {
    ctx: Context,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    expectations: Expectations,
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(INDEX_ANNOTATION)?
        .parse()
        .ok()
}

/// "0-2,4,6-7" from a set of indexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The parsed `completedIndexes` of a status.
fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

fn finished(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

impl JobController {
    pub fn new(ctx: &Context) -> Self {
        let c = JobController {
            ctx: ctx.clone(),
            jobs: ctx.factory.informer::<Job>(),
            pods: ctx.factory.informer::<Pod>(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
        };
        c.jobs.add_handler(controller::enqueue_own::<Job>(&c.queue));
        let (q, exp) = (c.queue.clone(), c.expectations.clone());
        c.pods.add_handler(move |ev| {
            let (p, added) = match ev {
                Event::Add(p) => (p, true),
                Event::Update(_, p) | Event::Delete(p) => (p, false),
            };
            if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "Job") {
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                );
                if added {
                    exp.creation_observed(&key);
                }
                q.add(key);
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.jobs.clone()), Box::new(self.pods.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("job", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    async fn delete_pods(&self, ns: &str, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        for p in pods {
            let dp = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            api.delete_if_current(p.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await?;
        }
        Ok(())
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(job) = self.jobs.store().get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let (ns, name) = controller::split(key);
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = job.spec.clone().unwrap_or_default();
        if let Some(done) = finished(&job) {
            // Garbage: ttlSecondsAfterFinished after it finished.
            let Some(ttl) = spec.ttl_seconds_after_finished else {
                return Ok(None);
            };
            let at = job
                .status
                .as_ref()
                .and_then(|s| s.completion_time.clone())
                .or_else(|| done.last_transition_time.clone());
            let age = at.as_ref().map_or(0, controller::age_secs);
            if age >= i64::from(ttl) {
                let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
                let dp = DeleteParams {
                    propagation_policy: "Background".into(),
                    precondition_uid: job.metadata.uid.clone(),
                    ..Default::default()
                };
                api.delete_if_current(name, &dp).await?;
                return Ok(None);
            }
            return Ok(Some(Duration::from_secs(
                (i64::from(ttl) - age).max(1) as u64
            )));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = self
            .pods
            .store()
            .in_namespace(ns)
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let failed_pods: Vec<&Arc<Pod>> = owned.iter().filter(|p| phase(p) == "Failed").collect();
        let old = job.status.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        // Counts only grow: finished pods may be removed later (podgc, users).
        let mut done_indexes = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
        for p in owned.iter().filter(|p| phase(p) == "Succeeded") {
            if let Some(i) = index_of(p) {
                done_indexes.insert(i);
            }
        }
        let succeeded_now = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
        let succeeded = if indexed {
            done_indexes.len() as i32
        } else {
            succeeded_now.max(old.succeeded.unwrap_or(0))
        };
        let failed = (failed_pods.len() as i32).max(old.failed.unwrap_or(0));
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let completions = spec.completions;
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let start_time = old.start_time.clone().unwrap_or_else(controller::now);
        let suspended = spec.suspend.unwrap_or(false);

        let mut outcome: Option<(&str, &str, String)> = None; // (type, reason, message)
        if failed > backoff_limit {
            outcome = Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let Some(deadline) = spec.active_deadline_seconds.filter(|_| !suspended) {
            if controller::age_secs(&start_time) >= deadline {
                outcome = Some((
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".into(),
                ));
            }
        }
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if outcome.is_none() && complete {
            outcome = Some(("Complete", "", String::new()));
        }
        let mut requeue = None;
        if let Some((_, reason, _)) = &outcome {
            if !reason.is_empty() {
                self.delete_pods(ns, &active).await?;
            }
        } else if suspended {
            self.delete_pods(ns, &active).await?;
        } else if self.expectations.satisfied(key) {
            // Back off after failures: 10 s, doubling, at most 6 minutes.
            let wait = if failed > 0 {
                let delay = (BACKOFF_BASE << (failed - 1).min(10)).min(BACKOFF_MAX);
                let last = failed_pods
                    .iter()
                    .filter_map(|p| {
                        p.status
                            .as_ref()?
                            .conditions
                            .as_ref()?
                            .iter()
                            .filter_map(|c| c.last_transition_time.as_ref())
                            .map(controller::age_secs)
                            .min()
                    })
                    .min()
                    .unwrap_or(delay);
                (delay - last).max(0)
            } else {
                0
            };
            if wait > 0 {
                requeue = Some(Duration::from_secs(wait as u64));
            } else {
                self.create_missing(
                    &job,
                    ns,
                    name,
                    &spec,
                    &active,
                    &done_indexes,
                    succeeded,
                    parallelism,
                )
                .await?;
            }
        }
        let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let mut completion_time = old.completion_time.clone();
        if let Some((type_, reason, message)) = &outcome {
            if !conditions.iter().any(|c| c.type_ == *type_) {
                let now = controller::now();
                if *type_ == "Complete" {
                    conditions.push(JobCondition {
                        type_: "SuccessCriteriaMet".into(),
                        status: "True".into(),
                        reason: Some("CompletionsReached".into()),
                        message: Some("Reached expected number of succeeded pods".into()),
                        last_probe_time: Some(now.clone()),
                        last_transition_time: Some(now.clone()),
                    });
                    completion_time = Some(now.clone());
                    self.ctx
                        .recorder
                        .record(job.as_ref(), "Normal", "Completed", "Job completed");
                } else {
                    conditions.push(JobCondition {
                        type_: "FailureTarget".into(),
                        status: "True".into(),
                        reason: Some((*reason).into()),
                        message: Some(message.clone()),
                        last_probe_time: Some(now.clone()),
                        last_transition_time: Some(now.clone()),
                    });
                    self.ctx
                        .recorder
                        .record(job.as_ref(), "Warning", reason, message);
                }
                conditions.push(JobCondition {
                    type_: (*type_).into(),
                    status: "True".into(),
                    reason: (!reason.is_empty())
                        .then(|| (*reason).into())
                        .or_else(|| Some("CompletionsReached".into())),
                    message: (!message.is_empty())
                        .then(|| message.clone())
                        .or_else(|| Some("Reached expected number of succeeded pods".into())),
                    last_probe_time: Some(now.clone()),
                    last_transition_time: Some(now),
                });
            }
        }
        let status = JobStatus {
            active: Some(if outcome.is_some() {
                0
            } else {
                active.len() as i32
            })
            .filter(|n| *n > 0),
            succeeded: Some(succeeded).filter(|n| *n > 0),
            failed: Some(failed).filter(|n| *n > 0),
            ready: Some(ready),
            start_time: Some(start_time),
            completion_time,
            completed_indexes: (indexed && !done_indexes.is_empty())
                .then(|| format_indexes(&done_indexes)),
            conditions: (!conditions.is_empty()).then_some(conditions),
            ..old.clone()
        };
        if job.status.as_ref() != Some(&status) {
            let mut updated = job.as_ref().clone();
            updated.status = Some(status);
            let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
            match api.replace_status(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Some(Duration::from_millis(100)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if outcome.is_none() {
            if let Some(deadline) = spec.active_deadline_seconds {
                let left = deadline
                    - job
                        .status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map_or(0, controller::age_secs);
                let d = Duration::from_secs(left.max(1) as u64);
                requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
            }
        }
        Ok(requeue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_missing(
        &self,
        job: &Job,
        ns: &str,
        name: &str,
        spec: &k8s_openapi::api::batch::v1::JobSpec,
        active: &[Arc<Pod>],
        done: &BTreeSet<i32>,
        succeeded: i32,
        parallelism: i32,
    ) -> anyhow::Result<()> {
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let mut todo: Vec<Option<i32>> = Vec::new();
        if indexed {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            let completions = spec.completions.unwrap_or(1);
            let room = (parallelism - active.len() as i32).max(0) as usize;
            todo = (0..completions)
                .filter(|i| !done.contains(i) && !running.contains(i))
                .take(room)
                .map(Some)
                .collect();
        } else {
            let remaining = match spec.completions {
                Some(c) => (c - succeeded).max(0),
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let want = parallelism.min(remaining);
            for _ in active.len() as i32..want {
                todo.push(None);
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let key = format!("{ns}/{name}");
        self.expectations.expect(&key, todo.len() as i64, 0);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let owner = controller_ref("batch/v1", "Job", &job.metadata);
        for index in todo {
            let prefix = match index {
                Some(i) => format!("{name}-{i}"),
                None => name.to_string(),
            };
            let mut pod = pods::from_template(&spec.template, ns, &prefix, owner.clone());
            if let Some(i) = index {
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                if let Some(ps) = pod.spec.as_mut() {
                    ps.hostname = Some(format!("{name}-{i}"));
                    for c in ps
                        .containers
                        .iter_mut()
                        .chain(ps.init_containers.iter_mut().flatten())
                    {
                        c.env.get_or_insert_with(Vec::new).push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(i.to_string()),
                            value_from: None,
                        });
                    }
                }
            }
            match api.create(&pod).await {
                Ok(p) => self.ctx.recorder.record(
                    job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                ),
                Err(e) => {
                    self.expectations.forget(&key);
                    self.ctx.recorder.record(
                        job,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    );
                    return Err(anyhow::anyhow!("creating a pod for job {key}: {e}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert!(parse_indexes("").is_empty());
    }
}
