//! `hangar image ...`.

use hangar_api::image::CatalogEntry;
use hangar_api::{ApiError, ImageInfo, Operation, PullImageRequest, RegisterImageRequest};

use super::seg;
use crate::args::{Cli, ImageCommand};
use crate::client::Client;
use crate::output;
use crate::wait::wait_op;

pub async fn run(cli: &Cli, client: &Client, cmd: &ImageCommand) -> Result<(), ApiError> {
    match cmd {
        ImageCommand::Ls => {
            let images: Vec<ImageInfo> = client.get("/v1/images").await?;
            if cli.json {
                output::json(&images);
                return Ok(());
            }
            output::table(
                &["name", "digest", "source", "size", "used by"],
                images
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.digest.chars().take(19).collect(),
                            i.source.clone(),
                            output::human_bytes(i.rootfs_bytes),
                            i.used_by.join(","),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        ImageCommand::Catalog => {
            let entries: Vec<CatalogEntry> = client.get("/v1/images/catalog").await?;
            if cli.json {
                output::json(&entries);
                return Ok(());
            }
            output::table(
                &["name", "local", "description"],
                entries
                    .iter()
                    .map(|e| vec![e.name.clone(), e.local.to_string(), e.description.clone()])
                    .collect(),
            );
            Ok(())
        }
        ImageCommand::Pull { name, no_wait } => {
            let op: Operation = client
                .post("/v1/images/pull", &PullImageRequest { name: name.clone() })
                .await?;
            if *no_wait {
                println!("{}", op.id);
                return Ok(());
            }
            let done = wait_op(client, op).await?;
            if cli.json {
                output::json(&done.result);
            } else if let Some(info) = done
                .result
                .and_then(|r| serde_json::from_value::<ImageInfo>(r).ok())
            {
                println!("{} {}", info.name, info.digest);
            }
            Ok(())
        }
        ImageCommand::Register {
            name,
            kernel,
            initrd,
            rootfs,
        } => {
            let abs = |p: &std::path::Path| -> Result<String, ApiError> {
                std::path::absolute(p)
                    .map(|p| p.display().to_string())
                    .map_err(|e| ApiError::invalid(format!("bad path {}: {e}", p.display())))
            };
            let req = RegisterImageRequest {
                name: name.clone(),
                kernel: abs(kernel)?,
                initrd: initrd.as_deref().map(abs).transpose()?,
                rootfs: abs(rootfs)?,
            };
            let info: ImageInfo = client.post("/v1/images/register", &req).await?;
            if cli.json {
                output::json(&info);
            } else {
                println!("{} {}", info.name, info.digest);
            }
            Ok(())
        }
        ImageCommand::Rm { name } => {
            client.delete(&format!("/v1/images/{}", seg(name))).await?;
            if !cli.json {
                println!("removed {name}");
            }
            Ok(())
        }
    }
}
