//! The cronjob controller: creates a Job for each scheduled time (read on the clock of
//! `timeZone`, UTC by default; an unknown zone is an `UnknownTimeZone` event), honouring
//! `concurrencyPolicy` (Allow, Forbid, Replace), `startingDeadlineSeconds`, `suspend`
//! and the successful/failed history limits. Jobs are named `<cronjob>-<minutes since
//! the epoch>`, so a time is never run twice.

use crate::controller::{self, controller_of, controller_ref, run_workers, Requeue};
use crate::cron::{Schedule, Zone};
use crate::Context;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct CronJobController {
    ctx: Context,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    queue: WorkQueue<String>,
}

fn minute_now() -> i64 {
    controller::unix_now().div_euclid(60)
}

fn time_of(minute: i64) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(minute * 60)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn finished(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

impl CronJobController {
    pub fn new(ctx: &Context) -> Self {
        let c = CronJobController {
            ctx: ctx.clone(),
            cronjobs: ctx.factory.informer::<CronJob>(),
            jobs: ctx.factory.informer::<Job>(),
            queue: WorkQueue::default(),
        };
        c.cronjobs
            .add_handler(controller::enqueue_own::<CronJob>(&c.queue));
        let q = c.queue.clone();
        c.jobs.add_handler(move |ev| {
            let j = match ev {
                Event::Add(j) | Event::Update(_, j) | Event::Delete(j) => j,
            };
            if let Some(r) = controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                q.add(format!(
                    "{}/{}",
                    j.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                ));
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.cronjobs.clone()), Box::new(self.jobs.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("cronjob", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    async fn delete_job(&self, api: &Api<Job>, j: &Job) -> anyhow::Result<()> {
        let dp = DeleteParams {
            propagation_policy: "Background".into(),
            precondition_uid: j.metadata.uid.clone(),
            ..Default::default()
        };
        api.delete_if_current(j.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await?;
        Ok(())
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(cj) = self.cronjobs.store().get(key) else {
            return Ok(None);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (ns, name) = controller::split(key);
        let spec = cj.spec.clone().unwrap_or_default();
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.recorder.record(
                    cj.as_ref(),
                    "Warning",
                    "UnparseableSchedule",
                    &format!("unparseable schedule {:?}: {e}", spec.schedule),
                );
                return Ok(None);
            }
        };
        let zone = match Zone::named(spec.time_zone.as_deref()) {
            Ok(z) => z,
            Err(e) => {
                self.ctx
                    .recorder
                    .record(cj.as_ref(), "Warning", "UnknownTimeZone", &e);
                return Ok(None);
            }
        };
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
        let mut owned: Vec<Arc<Job>> = self
            .jobs
            .store()
            .in_namespace(ns)
            .into_iter()
            .filter(|j| {
                controller_of(&j.metadata).is_some_and(|r| r.uid == uid)
                    && j.metadata.deletion_timestamp.is_none()
            })
            .collect();
        owned.sort_by_key(|j| {
            j.metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        });
        // History limits.
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Arc<Job>> = owned.iter().filter(|j| finished(j) == Some(kind)).collect();
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            for j in &done[..excess] {
                self.delete_job(&jobs_api, j).await?;
            }
        }
        let mut active: Vec<Arc<Job>> = owned
            .iter()
            .filter(|j| finished(j).is_none())
            .cloned()
            .collect();
        let now = minute_now();
        let last = cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0.as_second().div_euclid(60));
        let mut last_scheduled = cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.clone());
        if !spec.suspend.unwrap_or(false) {
            if let Some(t) = schedule.latest(last, now, &zone) {
                let late = (now - t) * 60;
                let too_late = spec.starting_deadline_seconds.is_some_and(|d| late > d);
                let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                if too_late {
                    self.ctx.recorder.record(
                        cj.as_ref(),
                        "Warning",
                        "MissSchedule",
                        "Missed scheduled time to start a job: past the starting deadline",
                    );
                    last_scheduled = Some(time_of(t));
                } else if policy == "Forbid" && !active.is_empty() {
                    // Skipped; tried again at the next time.
                } else {
                    if policy == "Replace" {
                        for j in active.drain(..) {
                            self.delete_job(&jobs_api, &j).await?;
                        }
                    }
                    let template = spec.job_template.clone();
                    let meta = template.metadata.clone().unwrap_or_default();
                    let mut annotations = meta.annotations.unwrap_or_default();
                    annotations.insert(
                        "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
                        time_of(t).0.to_string(),
                    );
                    let job = Job {
                        metadata: ObjectMeta {
                            name: Some(format!("{name}-{t}")),
                            namespace: Some(ns.into()),
                            labels: meta.labels,
                            annotations: Some(annotations),
                            owner_references: Some(vec![controller_ref(
                                "batch/v1",
                                "CronJob",
                                &cj.metadata,
                            )]),
                            ..Default::default()
                        },
                        spec: template.spec,
                        status: None,
                    };
                    match jobs_api.create(&job).await {
                        Ok(j) => {
                            self.ctx.recorder.record(
                                cj.as_ref(),
                                "Normal",
                                "SuccessfulCreate",
                                &format!(
                                    "Created job {}",
                                    j.metadata.name.as_deref().unwrap_or_default()
                                ),
                            );
                            active.push(Arc::new(j));
                        }
                        Err(e) if e.is_already_exists() => {}
                        Err(e) => return Err(e.into()),
                    }
                    last_scheduled = Some(time_of(t));
                }
            }
        }
        let last_successful = owned
            .iter()
            .filter(|j| finished(j) == Some("Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0.as_second())
            .or_else(|| {
                cj.status
                    .as_ref()
                    .and_then(|s| s.last_successful_time.clone())
            });
        let status = CronJobStatus {
            active: (!active.is_empty()).then(|| {
                active
                    .iter()
                    .map(|j| ObjectReference {
                        api_version: Some("batch/v1".into()),
                        kind: Some("Job".into()),
                        name: j.metadata.name.clone(),
                        namespace: j.metadata.namespace.clone(),
                        uid: j.metadata.uid.clone(),
                        resource_version: j.metadata.resource_version.clone(),
                        field_path: None,
                    })
                    .collect()
            }),
            last_schedule_time: last_scheduled,
            last_successful_time: last_successful,
        };
        if cj.status.as_ref() != Some(&status) {
            let mut updated = cj.as_ref().clone();
            updated.status = Some(status);
            let api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), ns);
            match api.replace_status(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Some(Duration::from_millis(100)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Look again at the next scheduled minute.
        Ok(schedule
            .next(now, &zone)
            .map(|t| Duration::from_secs((t * 60 - controller::unix_now()).max(1) as u64)))
    }
}
