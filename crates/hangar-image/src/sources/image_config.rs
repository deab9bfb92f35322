//! The parts of an OCI / docker image config (`application/vnd.oci.image.
//! config.v1+json`) Hangar keeps: how to run the image, and the sha256 of
//! each uncompressed layer (`rootfs.diff_ids`) to verify them by.

use serde::{Deserialize, Serialize};

use crate::ImageError;

/// The largest image config or manifest read into memory. Real ones are a
/// few KiB; this bounds what a hostile registry or archive can make us hold.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// How to run the image, from its config: kept in the image manifest and
/// used by `exec` (environment, user, working directory) and by
/// `vm create --run-entrypoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `NAME=value` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

impl RunConfig {
    /// The user name or uid part of `user` (before any `:group`), if set.
    pub fn user_name(&self) -> Option<&str> {
        let u = self.user.as_deref()?.split(':').next()?;
        (!u.is_empty()).then_some(u)
    }

    /// The user a command runs as unless one is named: the image's USER,
    /// when it is not root.
    pub fn default_user(&self) -> Option<String> {
        self.user_name()
            .filter(|u| *u != "root" && *u != "0")
            .map(str::to_string)
    }

    /// The image's Env as pairs, without the names `overrides` sets,
    /// followed by `overrides`: a command's own variables win.
    pub fn env_with(&self, overrides: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !overrides.iter().any(|(ok, _)| ok == k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(overrides);
        env
    }

    /// Entrypoint followed by cmd: what `--run-entrypoint` starts.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The value of `PATH` in `env`, if set.
    pub fn path_var(&self) -> Option<&str> {
        self.env.iter().find_map(|e| e.strip_prefix("PATH="))
    }
}

/// A parsed image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub run: RunConfig,
    /// `sha256:<hex>` of each layer's uncompressed tar, bottom first.
    pub diff_ids: Vec<String>,
    pub os: Option<String>,
    pub architecture: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    config: Option<RawRun>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses a config blob; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, ImageError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ImageError::BadOci {
            what: what.to_string(),
            reason: format!("the image config is not valid JSON: {e}"),
        })?;
        let run = raw.config.map_or_else(RunConfig::default, |c| RunConfig {
            env: c.env.unwrap_or_default(),
            user: c.user.filter(|u| !u.is_empty()),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
        });
        let diff_ids = raw.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        for d in &diff_ids {
            crate::sources::check_digest(d, what)?;
        }
        Ok(ImageConfig {
            run,
            diff_ids,
            os: raw.os,
            architecture: raw.architecture,
        })
    }

    /// Refuses an image for another OS or CPU (the guests are x86_64 Linux).
    pub fn check_platform(&self, what: &str) -> Result<(), ImageError> {
        let os = self.os.as_deref().unwrap_or("linux");
        let arch = self.architecture.as_deref().unwrap_or("amd64");
        if os != "linux" || arch != "amd64" {
            return Err(ImageError::BadOci {
                what: what.to_string(),
                reason: format!("the image is for {os}/{arch}; Hangar guests run linux/amd64"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_gives_run_settings_and_diff_ids() {
        let json = br#"{"architecture":"amd64","os":"linux",
            "config":{"Env":["PATH=/usr/bin:/bin","A=b"],"User":"app:app","WorkingDir":"/srv",
                      "Entrypoint":["/bin/app"],"Cmd":["--serve"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;

        let c = ImageConfig::parse(json, "test").expect("parse");

        assert_eq!(c.run.user_name(), Some("app"));
        assert_eq!(c.run.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.run.command(), vec!["/bin/app", "--serve"]);
        assert_eq!(c.run.path_var(), Some("/usr/bin:/bin"));
        assert_eq!(c.diff_ids.len(), 1);
        c.check_platform("test").expect("linux/amd64");
    }

    #[test]
    fn another_platform_or_a_bad_diff_id_is_refused() {
        let arm = br#"{"architecture":"arm64","os":"linux"}"#;
        let err = ImageConfig::parse(arm, "t")
            .expect("parse")
            .check_platform("t")
            .expect_err("arm64");
        assert!(err.to_string().contains("linux/arm64"), "{err}");

        let bad = br#"{"rootfs":{"diff_ids":["sha256:../../etc"]}}"#;
        assert!(ImageConfig::parse(bad, "t").is_err());
    }

    #[test]
    fn empty_user_and_workdir_mean_unset() {
        let c =
            ImageConfig::parse(br#"{"config":{"User":"","WorkingDir":""}}"#, "t").expect("parse");
        assert_eq!(c.run, RunConfig::default());
    }
}
