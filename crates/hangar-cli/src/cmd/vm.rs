//! `hangar vm ...`.

use hangar_api::{ApiError, CreateVmRequest, Operation, VmInfo};

use super::seg;
use crate::args::{Cli, CreateArgs, LifecycleArgs, VmCommand};
use crate::client::Client;
use crate::output;
use crate::wait::wait_op;

pub async fn run(cli: &Cli, client: &Client, cmd: &VmCommand) -> Result<(), ApiError> {
    match cmd {
        VmCommand::Create(a) => create(cli, client, a).await,
        VmCommand::Ls => ls(cli, client).await,
        VmCommand::Show { name } => {
            let vm: VmInfo = client.get(&format!("/v1/vms/{}", seg(name))).await?;
            show(cli, &vm);
            Ok(())
        }
        VmCommand::Start(a) => lifecycle(cli, client, a, "start").await,
        VmCommand::Stop(a) => lifecycle(cli, client, a, "stop").await,
        VmCommand::Restart(a) => lifecycle(cli, client, a, "restart").await,
        VmCommand::Logs {
            name,
            tail_bytes,
            follow,
            raw,
        } => {
            use std::io::IsTerminal;
            // Guest bytes are untrusted: a terminal gets them escaped.
            let escape = !raw && std::io::stdout().is_terminal();
            console(client, name, *tail_bytes, *follow, escape).await
        }
        VmCommand::Rm { name, force } => {
            let q = if *force { "?force=true" } else { "" };
            client.delete(&format!("/v1/vms/{}{q}", seg(name))).await?;
            if !cli.json {
                println!("removed {name}");
            }
            Ok(())
        }
    }
}

/// The invoking user's public keys, so `ssh root@NAME` works for them too.
fn user_public_keys() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let dir = std::path::Path::new(&home).join(".ssh");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pub"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.contains('\n'))
        .collect();
    keys.sort();
    keys
}

fn parse_memory(s: &str) -> Result<u32, ApiError> {
    let bytes = if s.chars().all(|c| c.is_ascii_digit()) {
        s.parse::<u64>()
            .map(|m| m << 20)
            .map_err(|e| ApiError::invalid(format!("--memory {s:?}: {e}")))?
    } else {
        hangar_config::parse_size(s).map_err(|e| ApiError::invalid(format!("--memory: {e}")))?
    };
    u32::try_from(bytes >> 20)
        .map_err(|_| ApiError::invalid(format!("--memory {s:?} is too large")))
}

async fn create(cli: &Cli, client: &Client, a: &CreateArgs) -> Result<(), ApiError> {
    // Bad input is refused before a VM exists.
    let workspace = a
        .workspace
        .as_deref()
        .map(super::workspace::inspect_path)
        .transpose()?;
    let req = CreateVmRequest {
        name: a.name.clone(),
        image: a.image.clone(),
        cpus: a.cpus,
        memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
        disk_bytes: a
            .disk_size
            .as_deref()
            .map(|s| {
                hangar_config::parse_size(s)
                    .map_err(|e| ApiError::invalid(format!("--disk-size: {e}")))
            })
            .transpose()?,
        authorized_keys: user_public_keys(),
        ssh_user: a.ssh_user.clone(),
        run_entrypoint: a.run_entrypoint,
    };
    let op: Operation = client.post("/v1/vms", &req).await?;
    finish(cli, client, op, a.no_wait).await?;
    let Some(source) = workspace else {
        return Ok(());
    };
    let opts = super::workspace::ImportOptions {
        dest: None,
        depth: None,
        force: false,
        user: None,
    };
    super::workspace::import_source(cli, client, &a.name, &source, &opts)
        .await
        .map_err(|e| {
            ApiError::new(
                e.kind,
                format!(
                    "VM {} was created and is running, but the workspace import failed: {}; retry with `hangar workspace import {} PATH`",
                    a.name, e.message, a.name
                ),
            )
        })
}

async fn lifecycle(
    cli: &Cli,
    client: &Client,
    a: &LifecycleArgs,
    verb: &str,
) -> Result<(), ApiError> {
    let op: Operation = client
        .post(
            &format!("/v1/vms/{}/{verb}", seg(&a.name)),
            &serde_json::json!({}),
        )
        .await?;
    finish(cli, client, op, a.no_wait).await
}

async fn finish(cli: &Cli, client: &Client, op: Operation, no_wait: bool) -> Result<(), ApiError> {
    if no_wait {
        if cli.json {
            output::json(&op);
        } else {
            println!("{}", op.id);
        }
        return Ok(());
    }
    let done = wait_op(client, op).await?;
    match done
        .result
        .and_then(|r| serde_json::from_value::<VmInfo>(r).ok())
    {
        Some(vm) if cli.json => output::json(&vm),
        Some(vm) => println!("{} {} ({})", vm.name, vm.state, vm.ip),
        None => {}
    }
    Ok(())
}

async fn ls(cli: &Cli, client: &Client) -> Result<(), ApiError> {
    let vms: Vec<VmInfo> = client.get("/v1/vms").await?;
    if cli.json {
        output::json(&vms);
        return Ok(());
    }
    output::table(
        &["name", "state", "ip", "image", "cpus", "memory", "disk"],
        vms.iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.state.to_string(),
                    v.ip.clone(),
                    v.image.clone(),
                    v.cpus.to_string(),
                    format!("{} MiB", v.memory_mib),
                    output::human_bytes(v.disk_bytes),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn show(cli: &Cli, vm: &VmInfo) {
    if cli.json {
        output::json(vm);
        return;
    }
    let rows = [
        ("name", vm.name.clone()),
        ("id", vm.id.clone()),
        ("state", vm.state.to_string()),
        ("ip", vm.ip.clone()),
        ("mac", vm.mac.clone()),
        ("image", format!("{} ({})", vm.image, vm.image_digest)),
        ("cpus", vm.cpus.to_string()),
        ("memory", format!("{} MiB", vm.memory_mib)),
        ("disk", output::human_bytes(vm.disk_bytes)),
        ("driver", vm.driver.clone()),
        (
            "pid",
            vm.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        ("tap", vm.tap.clone().unwrap_or_else(|| "-".into())),
        (
            "api socket",
            vm.api_socket.clone().unwrap_or_else(|| "-".into()),
        ),
        ("serial log", vm.serial_log.clone()),
        ("created", vm.created_at.clone()),
    ];
    for (k, v) in rows {
        println!("{k:<11} {v}");
    }
    if let Some(m) = vm.metrics.as_ref().and_then(|m| m.as_object()) {
        let parts: Vec<String> = m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("{:<11} {}", "metrics", parts.join(" "));
    }
    if let Some(e) = &vm.last_error {
        println!("{:<11} {e}", "last error");
    }
}

/// How often `vm logs -f` asks for new console output.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Prints the console log; with `follow`, keeps asking for what comes
/// after the last byte printed (a fresh log after a reboot starts over)
/// until the VM is removed. With `escape`, control characters are shown
/// escaped ([`hangar_host::sanitize`]) instead of sent to the terminal.
async fn console(
    client: &Client,
    name: &str,
    tail_bytes: Option<u64>,
    follow: bool,
    escape: bool,
) -> Result<(), ApiError> {
    use std::io::Write;
    let base = format!("/v1/vms/{}/console", seg(name));
    let mut sanitizer = escape.then(hangar_host::sanitize::Sanitizer::default);
    // (offset, file id) to continue from.
    let mut next: Option<(u64, u64)> = None;
    loop {
        let path = match (next, tail_bytes) {
            (Some((o, file)), _) => format!("{base}?offset={o}&file={file}"),
            (None, Some(t)) => format!("{base}?tail_bytes={t}"),
            (None, None) => base.clone(),
        };
        let (status, headers, body) = client
            .raw_with_headers(hyper::Method::GET, &path, None)
            .await?;
        if !status.is_success() {
            if next.is_some() && status == hyper::StatusCode::NOT_FOUND {
                return Ok(()); // removed while we followed it
            }
            return Err(crate::client::decode_error(status, &body));
        }
        let mut out = std::io::stdout();
        match sanitizer.as_mut() {
            Some(s) => {
                let _ = out.write_all(s.push(&body).as_bytes());
                if !follow {
                    let _ = out.write_all(s.finish().as_bytes());
                }
            }
            None => {
                let _ = out.write_all(&body);
            }
        }
        let _ = out.flush();
        if !follow {
            return Ok(());
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let start = header(hangar_api::vm::CONSOLE_OFFSET_HEADER);
        let file = header(hangar_api::vm::CONSOLE_FILE_HEADER);
        next = Some((start + body.len() as u64, file));
        if body.is_empty() {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_accepts_mib_numbers_and_units() {
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert_eq!(parse_memory("2G").unwrap(), 2048);
        assert!(parse_memory("lots").is_err());
    }
}
