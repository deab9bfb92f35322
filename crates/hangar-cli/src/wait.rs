//! Follows an operation to its end, showing progress on stderr (a spinner
//! or bar on a terminal, phase lines otherwise).

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
    loop {
        let p = &op.progress;
        if let Some(b) = &bar {
            match (p.current, p.total) {
                (Some(cur), Some(total)) if total > 0 => {
                    b.set_length(total);
                    b.set_position(cur);
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {percent}%")
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
        op = client
            .get(&format!("/v1/operations/{}?wait_ms=250", op.id))
            .await?;
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
