//! `hangar doctor`: host checks (local, no daemon needed) plus whether the
//! daemon answers and whether the default image is available. Exit 0 when
//! nothing fails, 1 otherwise; `--json` prints the checks as an array.

use std::time::Duration;

use hangar_api::image::CatalogEntry;
use hangar_api::ImageInfo;
use hangar_doctor::{check_daemon, check_default_image, run_checks, CatalogFacts, Check, Level};

use crate::args::Cli;
use crate::client::Client;
use crate::output;

pub async fn run(cli: &Cli, client: &Client) -> u8 {
    let config = match crate::socket::load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    // The host probe runs binaries and statvfs: keep it off the runtime.
    let host = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || run_checks(&config)).await
    };
    let mut checks = match host {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the host checks crashed: {e}");
            return 1;
        }
    };

    let config_path = cli
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| hangar_config::DEFAULT_CONFIG_PATH.to_string());
    let info = client
        .get::<hangar_api::DaemonInfo>("/v1/info")
        .await
        .map(|info| format!("driver: {}", info.driver_reason))
        .map_err(|e| e.message);
    let reachable = info.is_ok();
    checks.push(check_daemon(client.socket(), info, &config_path));

    // Local presence is only known from the daemon; without it the catalog
    // decides (the store is the daemon's, and opening it would migrate it).
    let local = if reachable {
        client
            .get::<Vec<ImageInfo>>("/v1/images")
            .await
            .ok()
            .map(|imgs| {
                let image = &config.defaults.image;
                imgs.iter()
                    .any(|i| i.name == *image || i.names.contains(image))
            })
    } else {
        None
    };
    let catalog = catalog_facts(client, reachable, &config).await;
    checks.push(check_default_image(&config.defaults.image, local, &catalog));

    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if cli.json {
        output::json(&checks);
    } else {
        print!("{}", render(&checks));
    }
    u8::from(failed)
}

/// How long doctor waits for one configured catalog (daemon down).
const CATALOG_TIMEOUT: Duration = Duration::from_secs(20);

/// The catalog `vm create` would use: the daemon's (built-in merged with
/// the `[images] catalogs` of its config, read by the daemon) when it
/// answers; otherwise the same merge done here, as the user, from the
/// config doctor was given, noting each catalog that cannot be read.
async fn catalog_facts(
    client: &Client,
    reachable: bool,
    config: &hangar_config::Config,
) -> CatalogFacts {
    if reachable {
        if let Ok(entries) = client.get::<Vec<CatalogEntry>>("/v1/images/catalog").await {
            return CatalogFacts {
                names: entries.into_iter().map(|e| e.name).collect(),
                unreadable: Vec::new(),
            };
        }
    }
    let mut lists = vec![hangar_image::catalog::builtin()];
    let mut unreadable = Vec::new();
    // Read as the user; an unreadable CA file is named and the system's
    // roots still apply.
    let trust = hangar_image::sources::Trust::load(&config.images.ca_certs).unwrap_or_else(|e| {
        unreadable.push(format!("[images] ca_certs: {}", error_chain(&e)));
        hangar_image::sources::Trust::default()
    });
    for url in &config.images.catalogs {
        match tokio::time::timeout(CATALOG_TIMEOUT, hangar_image::catalog::load(url, &trust)).await
        {
            Ok(Ok(entries)) => lists.push(entries),
            Ok(Err(e)) => unreadable.push(format!("{url}: {}", error_chain(&e))),
            Err(_) => unreadable.push(format!(
                "{url}: no answer within {} s",
                CATALOG_TIMEOUT.as_secs()
            )),
        }
    }
    CatalogFacts {
        names: hangar_image::catalog::merge(lists)
            .into_iter()
            .map(|e| e.name)
            .collect(),
        unreadable,
    }
}

/// `error: cause: cause…` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Human output: failures first, then warnings, then what is fine; each
/// with a mark, the name, the result and a `fix:` line.
fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for (level, mark, title) in [
        (Level::Fail, "✗", "Failed"),
        (Level::Warn, "!", "Warnings"),
        (Level::Ok, "✓", "OK"),
    ] {
        let group: Vec<&Check> = checks.iter().filter(|c| c.level == level).collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("{title} ({}):\n", group.len()));
        for c in group {
            out.push_str(&format!("  {mark} {:<22} {}\n", c.name, c.result));
            if let Some(fix) = c.fix.as_ref().filter(|_| level != Level::Ok) {
                out.push_str(&format!("    {:<22} fix: {fix}\n", ""));
            }
        }
        out.push('\n');
    }
    let count = |l| checks.iter().filter(|c| c.level == l).count();
    out.push_str(&format!(
        "{} ok, {} warnings, {} failed\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(name: &str, level: Level, fix: Option<&str>) -> Check {
        Check {
            name: name.into(),
            what: "w".into(),
            level,
            result: format!("{name} result"),
            fix: fix.map(str::to_string),
        }
    }

    #[test]
    fn render_groups_failures_first_with_fix_lines() {
        let checks = vec![
            check("a", Level::Ok, None),
            check("b", Level::Warn, Some("do b")),
            check("c", Level::Fail, Some("do c")),
        ];

        let s = render(&checks);

        let (fail, warn, ok) = (
            s.find("✗ c").unwrap(),
            s.find("! b").unwrap(),
            s.find("✓ a").unwrap(),
        );
        assert!(fail < warn && warn < ok, "{s}");
        assert!(s.contains("fix: do c") && s.contains("fix: do b"), "{s}");
        assert!(s.ends_with("1 ok, 1 warnings, 1 failed\n"), "{s}");
    }
}
