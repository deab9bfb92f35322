//! Where the daemon's socket is: `--socket`, `HANGAR_SOCKET`, the runtime
//! dir of `--config FILE`, else the default config's.

use std::path::PathBuf;

use hangar_config::{Config, DEFAULT_CONFIG_PATH};

use crate::args::Cli;

pub fn resolve(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    Ok(load_config(cli)?.socket_path())
}

pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(match &cli.config {
        Some(p) => Config::load(p, true)?,
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false)?,
    })
}
