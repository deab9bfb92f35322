//! `hangar op ...`.

use hangar_api::{ApiError, Operation};

use super::seg;
use crate::args::{Cli, OpCommand};
use crate::client::Client;
use crate::output;
use crate::wait::wait_op;

pub async fn run(cli: &Cli, client: &Client, cmd: &OpCommand) -> Result<(), ApiError> {
    match cmd {
        OpCommand::Ls => {
            let ops: Vec<Operation> = client.get("/v1/operations").await?;
            if cli.json {
                output::json(&ops);
                return Ok(());
            }
            output::table(
                &["id", "kind", "target", "state", "phase", "created"],
                ops.iter()
                    .map(|o| {
                        vec![
                            o.id.clone(),
                            o.kind.as_str().to_string(),
                            o.target.clone(),
                            o.state.as_str().to_string(),
                            o.progress.phase.clone(),
                            o.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        OpCommand::Show { id, wait } => {
            let mut op: Operation = client.get(&format!("/v1/operations/{}", seg(id))).await?;
            if *wait {
                op = match wait_op(client, op).await {
                    Ok(op) => op,
                    Err(_) => client.get(&format!("/v1/operations/{}", seg(id))).await?,
                };
            }
            if cli.json {
                output::json(&op);
            } else {
                println!("id       {}", op.id);
                println!("kind     {}", op.kind.as_str());
                println!("target   {}", op.target);
                println!("state    {}", op.state.as_str());
                println!("phase    {}", op.progress.phase);
                if let Some(d) = &op.progress.detail {
                    println!("detail   {d}");
                }
                if let Some(e) = &op.error {
                    println!("error    {}", e.message);
                }
                println!("created  {}", op.created_at);
                println!("updated  {}", op.updated_at);
            }
            Ok(())
        }
        OpCommand::Cancel { id } => {
            let op: Operation = client
                .post(
                    &format!("/v1/operations/{}/cancel", seg(id)),
                    &serde_json::json!({}),
                )
                .await?;
            if cli.json {
                output::json(&op);
            } else {
                println!("cancel requested for {} ({})", op.id, op.target);
            }
            Ok(())
        }
    }
}
