//! Follows an operation to its end, showing progress on stderr (a spinner
//! or bar on a terminal, phase lines otherwise). Ctrl-C cancels the
//! operation and waits for its cleanup; a second Ctrl-C leaves at once (the
//! operation goes on; `hangar op show ID`).

use std::io::IsTerminal;
use std::time::Duration;

use hangar_api::{ApiError, OpState, Operation};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;

pub async fn wait_op(client: &Client, mut op: Operation) -> Result<Operation, ApiError> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(100));
        Some(b)
    } else {
        None
    };
    let mut last_phase = String::new();
    let mut interrupts = 0u32;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let p = &op.progress;
        if let Some(b) = &bar {
            match (p.current, p.total) {
                (Some(cur), Some(total)) if total > 0 => {
                    b.set_length(total);
                    b.set_position(cur);
                    // Bytes (a pull's layers, a download): size, rate and
                    // ETA, which indicatif derives from the positions seen.
                    let template = if p.unit.as_deref() == Some("bytes") {
                        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
                    } else {
                        "{spinner} {msg} [{bar:30}] {percent}%"
                    };
                    b.set_style(
                        ProgressStyle::with_template(template)
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                _ => b.set_style(ProgressStyle::default_spinner()),
            }
            let detail = p
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            b.set_message(format!("{} {}{}", op.target, p.phase, detail));
        } else if p.phase != last_phase && !p.phase.is_empty() {
            eprintln!("{}: {}", op.target, p.phase);
        }
        last_phase = p.phase.clone();
        if op.state.is_terminal() {
            break;
        }
        let path = format!("/v1/operations/{}?wait_ms=250", op.id);
        let poll = client.get::<Operation>(&path);
        tokio::select! {
            next = poll => op = next?,
            _ = &mut ctrl_c => {
                interrupts += 1;
                if interrupts > 1 {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    return Err(ApiError::cancelled(format!(
                        "interrupted; operation {} goes on (`hangar op show {}`)",
                        op.id, op.id
                    )));
                }
                eprintln!("{}: cancelling (Ctrl-C again to leave it running)", op.target);
                let _ = client
                    .post::<Operation>(&format!("/v1/operations/{}/cancel", op.id), &serde_json::json!({}))
                    .await;
                ctrl_c = Box::pin(tokio::signal::ctrl_c());
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match op.state {
        OpState::Succeeded => Ok(op),
        _ => Err(op.error.clone().unwrap_or_else(|| {
            ApiError::internal(format!("operation {} ended {}", op.id, op.state.as_str()))
        })),
    }
}
