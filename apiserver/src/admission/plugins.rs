//! Which admission plugins run, and their configuration: kube-apiserver's names, all of
//! this apiserver's on by default (as they are in Kubernetes), turned off by
//! `--disable-admission-plugins`; `--admission-control-config-file` (an
//! AdmissionConfiguration) configures PodSecurity.

use super::podsecurity;
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::Path;

/// The admission plugins this apiserver has that may be turned off, by Kubernetes' name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plugin {
    LimitRanger,
    ServiceAccount,
    Priority,
    DefaultStorageClass,
    ResourceQuota,
    PodSecurity,
}

impl Plugin {
    pub const ALL: [Plugin; 6] = [
        Plugin::LimitRanger,
        Plugin::ServiceAccount,
        Plugin::Priority,
        Plugin::DefaultStorageClass,
        Plugin::ResourceQuota,
        Plugin::PodSecurity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Plugin::LimitRanger => "LimitRanger",
            Plugin::ServiceAccount => "ServiceAccount",
            Plugin::Priority => "Priority",
            Plugin::DefaultStorageClass => "DefaultStorageClass",
            Plugin::ResourceQuota => "ResourceQuota",
            Plugin::PodSecurity => "PodSecurity",
        }
    }
}

/// The plugins that run (by default, every one), and their configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plugins {
    off: Vec<Plugin>,
    pub pod_security: podsecurity::Config,
}

impl Plugins {
    /// From `--enable-admission-plugins` and `--disable-admission-plugins`: a name must
    /// be one of this apiserver's plugins, and not in both lists.
    pub fn from_flags(enable: &[String], disable: &[String]) -> anyhow::Result<Self> {
        let lookup = |flag: &str, name: &str| -> anyhow::Result<Plugin> {
            match Plugin::ALL.into_iter().find(|p| p.name() == name) {
                Some(p) => Ok(p),
                None => bail!(
                    "--{flag}: unknown admission plugin {name:?} (this apiserver has {})",
                    Plugin::ALL.map(Plugin::name).join(", ")
                ),
            }
        };
        let mut off = Vec::new();
        for name in disable.iter().filter(|n| !n.is_empty()) {
            off.push(lookup("disable-admission-plugins", name)?);
        }
        for name in enable.iter().filter(|n| !n.is_empty()) {
            let p = lookup("enable-admission-plugins", name)?;
            if off.contains(&p) {
                bail!(
                    "--enable-admission-plugins and --disable-admission-plugins both name {name:?}"
                );
            }
        }
        Ok(Plugins {
            off,
            pod_security: podsecurity::Config::default(),
        })
    }

    pub fn on(&self, p: Plugin) -> bool {
        !self.off.contains(&p)
    }

    /// Reads `--admission-control-config-file`: an AdmissionConfiguration whose plugins
    /// carry their configuration inline or in a file (`path`, relative to this one).
    /// Only PodSecurity takes one here; configurations of plugins this apiserver does not
    /// have are skipped (they could not be enabled), those of its other plugins refused.
    pub fn configure(&mut self, file: &Path) -> anyhow::Result<()> {
        let flag = "--admission-control-config-file";
        let doc = read_yaml(file).with_context(|| format!("{flag}: {}", file.display()))?;
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        if doc["kind"] != "AdmissionConfiguration"
            || !matches!(
                api_version,
                "apiserver.config.k8s.io/v1" | "apiserver.config.k8s.io/v1alpha1"
            )
        {
            bail!("{flag}: {} is not an AdmissionConfiguration of apiVersion apiserver.config.k8s.io/v1", file.display());
        }
        let plugins = match &doc["plugins"] {
            Value::Null => &Vec::new(),
            Value::Array(list) => list,
            other => bail!("{flag}: plugins: {other} is not a list"),
        };
        for entry in plugins {
            let name = entry["name"].as_str().unwrap_or("");
            let configuration = match (&entry["configuration"], entry["path"].as_str()) {
                (Value::Null, Some(path)) => {
                    let path = file.parent().unwrap_or(Path::new(".")).join(path);
                    read_yaml(&path)
                        .with_context(|| format!("{flag}: plugin {name}: {}", path.display()))?
                }
                (Value::Null, None) => {
                    bail!("{flag}: plugin {name:?} has neither configuration nor path")
                }
                (inline, _) => inline.clone(),
            };
            match Plugin::ALL.into_iter().find(|p| p.name() == name) {
                Some(Plugin::PodSecurity) => {
                    self.pod_security = podsecurity::Config::from_value(&configuration)
                        .map_err(|e| anyhow::anyhow!("{flag}: plugin PodSecurity: {e}"))?;
                }
                Some(_) => bail!("{flag}: plugin {name} takes no configuration here"),
                None => tracing::warn!(
                    plugin = name,
                    "{flag}: skipping the configuration of a plugin this apiserver does not have"
                ),
            }
        }
        Ok(())
    }
}

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_yaml::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_file_configures_pod_security() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        write(
            "psa.yaml",
            "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\ndefaults: {enforce: baseline}\n",
        );
        let by_path = write(
            "admission.yaml",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  path: psa.yaml\n- name: EventRateLimit\n  configuration: {}\n",
        );
        let mut p = Plugins::default();
        p.configure(&by_path).unwrap();
        let ns = serde_json::json!({"metadata": {"name": "n"}});
        assert_eq!(
            podsecurity::level(&ns, "enforce", &p.pod_security),
            Some(("baseline".into(), "latest".into()))
        );
        let quota = write(
            "quota.yaml",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ResourceQuota\n  configuration: {}\n",
        );
        let e = Plugins::default().configure(&quota).unwrap_err();
        assert!(
            e.to_string()
                .contains("plugin ResourceQuota takes no configuration"),
            "{e}"
        );
        let bad = write(
            "bad.yaml",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration: {apiVersion: pod-security.admission.config.k8s.io/v1, kind: PodSecurityConfiguration, defaults: {warn: loud}}\n",
        );
        let e = Plugins::default().configure(&bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--admission-control-config-file: plugin PodSecurity: defaults.warn:"),
            "{e}"
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_turn_plugins_off_and_unknown_names_are_refused() {
        let p = Plugins::from_flags(&[], &names(&["ServiceAccount", "PodSecurity"])).unwrap();
        assert!(!p.on(Plugin::ServiceAccount) && !p.on(Plugin::PodSecurity));
        assert!(p.on(Plugin::ResourceQuota));
        assert!(Plugins::from_flags(&names(&["Priority"]), &[])
            .unwrap()
            .on(Plugin::Priority));
        let e = Plugins::from_flags(&names(&["NodeRestriction"]), &[]).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "--enable-admission-plugins: unknown admission plugin \"NodeRestriction\""
            ),
            "{e}"
        );
        let both = names(&["LimitRanger"]);
        assert!(Plugins::from_flags(&both, &both).is_err());
    }
}
