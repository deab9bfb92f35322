//! `hangar doctor`: host checks (local, no daemon needed) plus whether the
//! daemon answers and whether the default image is available. Exit 0 when
//! nothing fails, 1 otherwise; `--json` prints the checks as an array.

use hangar_api::ImageInfo;
use hangar_doctor::{check_daemon, check_default_image, run_checks, Check, Level};

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
            .map(|imgs| imgs.iter().any(|i| i.name == config.defaults.image))
    } else {
        None
    };
    let catalog = hangar_image::catalog();
    let names: Vec<&str> = catalog.iter().map(|c| c.name).collect();
    checks.push(check_default_image(&config.defaults.image, local, &names));

    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if cli.json {
        output::json(&checks);
    } else {
        print!("{}", render(&checks));
    }
    u8::from(failed)
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
