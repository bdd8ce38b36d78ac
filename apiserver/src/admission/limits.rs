//! LimitRanger, as Kubernetes' admission plugin: a namespace's LimitRanges give a new
//! pod's containers the default requests and limits they leave out (and say so in the
//! `kubernetes.io/limit-ranger` annotation), then bound containers, pods and claims by
//! their `min`, `max` and `maxLimitRequestRatio`. The refusals are Kubernetes' texts.

use api::quantity::Quantity;
use serde_json::{json, Map, Value};
use std::borrow::Borrow;

/// Milli-units of a quantity text (None when absent or malformed).
fn milli(q: Option<&Value>) -> Option<i64> {
    Quantity::parse(q?.as_str()?).ok()?.to_milli().ok()
}

/// A quantity as Kubernetes prints it back (its canonical form).
fn shown(q: &Value) -> String {
    q.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or_else(|| q.to_string(), |q| q.to_string())
}

/// The items of `ranges` of one type (`Container`, `Pod`, `PersistentVolumeClaim`).
fn items<'a, R: Borrow<Value>>(ranges: &'a [R], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    ranges
        .iter()
        .flat_map(|r| {
            r.borrow()["spec"]["limits"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(move |i| i["type"] == kind)
}

/// Fills each container's missing requests and limits from the `Container` items'
/// `defaultRequest` and `default`, recording what it set in the pod's annotation.
pub fn default_pod<R: Borrow<Value>>(ranges: &[R], pod: &mut Value) {
    let mut notes = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(cs) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in cs {
            let name = c["name"].as_str().unwrap_or("").to_string();
            for (field, from, word) in [
                ("requests", "defaultRequest", "request"),
                ("limits", "default", "limit"),
            ] {
                let mut set = Vec::new();
                for item in items(ranges, "Container") {
                    for (res, q) in item[from].as_object().into_iter().flatten() {
                        let resources = &mut c["resources"];
                        if resources[field].get(res).is_none() {
                            if !resources[field].is_object() {
                                resources[field] = json!({});
                            }
                            resources[field][res] = q.clone();
                            set.push(res.clone());
                        }
                    }
                }
                if !set.is_empty() {
                    notes.push(format!("{} {word} for {what} {name}", set.join(", ")));
                }
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    let meta = &mut pod["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"]["kubernetes.io/limit-ranger"] =
        json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
}

/// One container's (or the pod's summed) requests and limits against one item.
fn check(
    kind: &str,
    item: &Value,
    req: &Map<String, Value>,
    lim: &Map<String, Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (res, min) in item["min"].as_object().into_iter().flatten() {
        let m = milli(Some(min)).unwrap_or(0);
        match req.get(res) {
            None => out.push(format!(
                "minimum {res} usage per {kind} is {}.  No request is specified",
                shown(min)
            )),
            Some(r) if milli(Some(r)).unwrap_or(0) < m => out.push(format!(
                "minimum {res} usage per {kind} is {}, but request is {}",
                shown(min),
                shown(r)
            )),
            _ => match lim.get(res) {
                Some(l) if milli(Some(l)).unwrap_or(0) < m => out.push(format!(
                    "minimum {res} usage per {kind} is {}, but limit is {}",
                    shown(min),
                    shown(l)
                )),
                _ => {}
            },
        }
    }
    for (res, max) in item["max"].as_object().into_iter().flatten() {
        let m = milli(Some(max)).unwrap_or(0);
        match lim.get(res) {
            None => out.push(format!(
                "maximum {res} usage per {kind} is {}.  No limit is specified",
                shown(max)
            )),
            Some(l) if milli(Some(l)).unwrap_or(0) > m => out.push(format!(
                "maximum {res} usage per {kind} is {}, but limit is {}",
                shown(max),
                shown(l)
            )),
            _ => match req.get(res) {
                Some(r) if milli(Some(r)).unwrap_or(0) > m => out.push(format!(
                    "maximum {res} usage per {kind} is {}, but request is {}",
                    shown(max),
                    shown(r)
                )),
                _ => {}
            },
        }
    }
    for (res, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let r = milli(req.get(res)).unwrap_or(0);
        let l = milli(lim.get(res)).unwrap_or(0);
        let head = format!(
            "{res} max limit to request ratio per {kind} is {}",
            shown(ratio)
        );
        if r == 0 {
            out.push(format!(
                "{head}, but no request is specified or request is 0"
            ));
        } else if l == 0 {
            out.push(format!("{head}, but no limit is specified or limit is 0"));
        } else if l as f64 / r as f64 * 1000.0 > milli(Some(ratio)).unwrap_or(0) as f64 {
            out.push(format!(
                "{head}, but provided ratio is {:.6}",
                l as f64 / r as f64
            ));
        }
    }
    out
}

fn resources(c: &Value, field: &str) -> Map<String, Value> {
    c["resources"][field]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Sums the pod's containers (at least its largest init container); a resource counts
/// only if every container states it.
fn pod_total(spec: &Value, field: &str) -> Map<String, Value> {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = Map::new();
    let Some(first) = containers.first() else {
        return out;
    };
    for res in resources(first, field).keys() {
        let amounts: Option<Vec<i64>> = containers
            .iter()
            .map(|c| milli(c["resources"][field].get(res)))
            .collect();
        let Some(amounts) = amounts else {
            continue;
        };
        let inits = spec["initContainers"].as_array().into_iter().flatten();
        let init_max = inits
            .filter_map(|c| milli(c["resources"][field].get(res)))
            .max()
            .unwrap_or(0);
        let total = amounts.iter().sum::<i64>().max(init_max);
        out.insert(res.clone(), json!(format!("{total}m")));
    }
    out
}

/// What the `Container` and `Pod` items refuse of a pod (empty: it is admitted).
pub fn validate_pod<R: Borrow<Value>>(ranges: &[R], pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    for item in items(ranges, "Container") {
        let all = ["initContainers", "containers"]
            .into_iter()
            .flat_map(|l| spec[l].as_array().into_iter().flatten());
        for c in all {
            out.extend(check(
                "Container",
                item,
                &resources(c, "requests"),
                &resources(c, "limits"),
            ));
        }
    }
    for item in items(ranges, "Pod") {
        out.extend(check(
            "Pod",
            item,
            &pod_total(spec, "requests"),
            &pod_total(spec, "limits"),
        ));
    }
    out
}

/// What the `PersistentVolumeClaim` items refuse of a claim's storage request (a claim
/// states no limit: its request is what `max` bounds).
pub fn validate_claim<R: Borrow<Value>>(ranges: &[R], claim: &Value) -> Vec<String> {
    let kind = "PersistentVolumeClaim";
    let req = resources(&claim["spec"], "requests");
    let mut out = Vec::new();
    for item in items(ranges, kind) {
        out.extend(check(kind, &json!({"min": item["min"]}), &req, &Map::new()));
        for (res, max) in item["max"].as_object().into_iter().flatten() {
            match req.get(res) {
                None => out.push(format!(
                    "maximum {res} usage per {kind} is {}.  No request is specified",
                    shown(max)
                )),
                Some(r) if milli(Some(r)) > milli(Some(max)) => out.push(format!(
                    "maximum {res} usage per {kind} is {}, but request is {}",
                    shown(max),
                    shown(r)
                )),
                _ => {}
            }
        }
    }
    out
}

/// Kubernetes joins several refusals as a list.
pub fn joined(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(items: Value) -> Vec<Value> {
        let mut r = json!({"spec": {"limits": items}});
        crate::admission::defaults::apply("", "LimitRange", &mut r);
        vec![r]
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_say_so() {
        let ranges = range(
            json!([{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"}}]),
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "resources": {"limits": {"memory": "128Mi"}}}]}});
        default_pod(&ranges, &mut pod);
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        // The request for memory comes from defaultRequest, which the range's defaulting
        // filled from its default.
        assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container web; cpu limit for container web"
        );
    }

    #[test]
    fn bounds_refuse_as_kubernetes_words_it() {
        let ranges = range(json!([
            {"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let pod = json!({"spec": {"containers": [{"name": "web", "resources": {
            "requests": {"cpu": "50m", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}]}});
        assert_eq!(
            validate_pod(&ranges, &pod),
            vec![
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000",
            ]
        );
        let fine = json!({"spec": {"containers": [{"name": "web", "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert!(validate_pod(&ranges, &fine).is_empty());
        let claim = json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}});
        assert_eq!(
            joined(&validate_claim(&ranges, &claim)),
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        );
    }
}
