//! The clusterrole-aggregation controller: a ClusterRole with an `aggregationRule` has as
//! its rules the rules of every other cluster role its selectors pick (each rule once, in
//! the order of the picked roles' names). Any cluster role changing re-aggregates them
//! all, so chains settle (`view` is picked by `edit`, `edit` by `admin`) and a role
//! labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends view, edit and
//! admin.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::{Api, Informer, WorkQueue};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct ClusterRoleAggregationController {
    ctx: Context,
    roles: Informer<ClusterRole>,
    queue: WorkQueue<String>,
}

fn aggregated(role: &ClusterRole) -> bool {
    role.aggregation_rule.is_some()
}

/// The rules `role`'s selectors collect from `all`.
pub fn collect(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Vec<PolicyRule> {
    let selectors: Vec<api::LabelSelector> = role
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| api::LabelSelector::from_label_selector(Some(s)).ok())
        .collect();
    let mut picked: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors
                .iter()
                .any(|s| s.matches_opt(r.metadata.labels.as_ref()))
        })
        .collect();
    picked.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in picked {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    rules
}

impl ClusterRoleAggregationController {
    pub fn new(ctx: &Context) -> Self {
        let c = ClusterRoleAggregationController {
            ctx: ctx.clone(),
            roles: ctx.factory.informer::<ClusterRole>(),
            queue: WorkQueue::default(),
        };
        let (q, roles) = (c.queue.clone(), c.roles.clone());
        c.roles.add_handler(move |_| {
            for r in roles.store().list().iter().filter(|r| aggregated(r)) {
                q.add(r.metadata.name.clone().unwrap_or_default());
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.roles.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers(
            "clusterrole-aggregation",
            self.queue.clone(),
            workers,
            move |name| {
                let me = me.clone();
                async move { me.sync(&name).await }
            },
        );
    }

    async fn sync(&self, name: &str) -> anyhow::Result<Requeue> {
        let Some(role) = self.roles.store().get(name) else {
            return Ok(None);
        };
        if !aggregated(&role) {
            return Ok(None);
        }
        let rules = collect(&role, &self.roles.store().list());
        if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
            return Ok(None);
        }
        let mut updated = (*role).clone();
        updated.rules = Some(rules);
        match Api::<ClusterRole>::all(self.ctx.client.clone())
            .replace(&updated)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if e.is_conflict() => Ok(Some(Duration::from_millis(100))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn an_aggregated_role_has_the_rules_of_the_roles_it_picks_once_each() {
        let pods = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]});
        let widgets =
            json!({"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]});
        let all = vec![
            role(
                json!({"metadata": {"name": "view", "labels": {"agg": "edit"}},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]},
                "rules": [pods]}),
            ),
            role(
                json!({"metadata": {"name": "base-view", "labels": {"agg": "view"}}, "rules": [pods]}),
            ),
            role(
                json!({"metadata": {"name": "widgets-view", "labels": {"agg": "view"}}, "rules": [widgets, pods]}),
            ),
            role(
                json!({"metadata": {"name": "other"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            ),
        ];
        let rules = collect(&all[0], &all);
        let want: Vec<PolicyRule> = serde_json::from_value(json!([pods, widgets])).unwrap();
        assert_eq!(rules, want);
    }
}
