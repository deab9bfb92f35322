//! `hangar doctor`: host checks (local, no daemon needed) plus whether the
//! daemon answers. Exit 0 when nothing fails.

use hangar_daemon::doctor::{run_checks, Check, Level};

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
    let mut checks = run_checks(&config);
    checks.push(match client.get::<serde_json::Value>("/v1/info").await {
        Ok(info) => Check {
            name: "daemon".into(),
            level: Level::Ok,
            result: format!(
                "answering on {} (driver: {})",
                client.socket().display(),
                info.get("driver_reason")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            ),
            fix: None,
        },
        Err(e) => Check {
            name: "daemon".into(),
            level: Level::Warn,
            result: e.message,
            fix: Some("sudo hangar daemon --config /etc/hangar/config.toml".into()),
        },
    });
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if cli.json {
        output::json(&checks);
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("[{mark}] {:<14} {}", c.name, c.result);
            if let Some(fix) = &c.fix {
                if c.level != Level::Ok {
                    println!("       {:<14} fix: {fix}", "");
                }
            }
        }
    }
    u8::from(failed)
}
