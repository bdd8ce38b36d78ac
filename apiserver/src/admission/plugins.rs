//! Which admission plugins run: kube-apiserver's names, all of this apiserver's on by
//! default (as they are in Kubernetes), turned off by `--disable-admission-plugins`.

use anyhow::bail;

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

/// The plugins that run (by default, every one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plugins {
    off: Vec<Plugin>,
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
        Ok(Plugins { off })
    }

    pub fn on(&self, p: Plugin) -> bool {
        !self.off.contains(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
