//! `hangar image ...`.

use hangar_api::image::CatalogEntry;
use hangar_api::{ApiError, ImageInfo, Operation, PullImageRequest, TagImageRequest};

use super::seg;
use crate::args::{Cli, ImageCommand};
use crate::client::Client;
use crate::local_file::open_regular;
use crate::output;
use crate::upload::upload_image;
use crate::wait::wait_op;

pub async fn run(cli: &Cli, client: &Client, cmd: &ImageCommand) -> Result<(), ApiError> {
    match cmd {
        ImageCommand::Ls => {
            let images: Vec<ImageInfo> = client.get("/v1/images").await?;
            if cli.json {
                output::json(&images);
                return Ok(());
            }
            // One row per name (an image with several names shows on each
            // of them; a dangling one on one row without a name).
            let rows: Vec<(&str, &ImageInfo)> = images
                .iter()
                .flat_map(|i| {
                    let names: Vec<&str> = if i.names.is_empty() {
                        vec![i.name.as_str()]
                    } else {
                        i.names.iter().map(String::as_str).collect()
                    };
                    names.into_iter().map(move |n| (n, i))
                })
                .collect();
            output::table(
                &["name", "digest", "source", "size", "parent", "used by"],
                rows.iter()
                    .map(|(name, i)| {
                        vec![
                            name.to_string(),
                            i.digest.chars().take(19).collect(),
                            i.source.clone(),
                            output::human_bytes(i.rootfs_bytes),
                            i.parent
                                .as_ref()
                                .map(|p| format!("{} ({})", p.image_name, p.vm))
                                .unwrap_or_default(),
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
                &["name", "local", "source", "disk", "description"],
                entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            e.local.to_string(),
                            e.source.clone(),
                            e.disk_bytes.map(output::human_bytes).unwrap_or_default(),
                            e.description.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        ImageCommand::Pull {
            name,
            as_name,
            insecure,
            sha256,
            no_wait,
        } => {
            if let Some(path) = name.strip_prefix("file://") {
                // Read here, as the user, and streamed: the daemon never
                // opens a host path for a client.
                let image = match as_name {
                    Some(n) => n.clone(),
                    None => bundle_stem(path).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "cannot tell an image name from {name:?}; give one with --name"
                        ))
                    })?,
                };
                hangar_api::name::validate_name("image", &image).map_err(ApiError::invalid)?;
                let file = crate::local_file::open_regular("bundle", std::path::Path::new(path))
                    .map_err(|e| ApiError::invalid(e.to_string()))?;
                let mut target = format!("/v1/images/bundle?name={}", seg(&image));
                if let Some(s) = sha256 {
                    target.push_str(&format!("&sha256={}", seg(s)));
                }
                let info: ImageInfo = crate::import::send_archive(
                    client,
                    &target,
                    "application/zstd",
                    &image,
                    crate::import::ArchiveSource::File(file),
                )
                .await?;
                if cli.json {
                    output::json(&info);
                } else {
                    println!("{} {}", info.name, info.digest);
                }
                return Ok(());
            }
            let mut req = PullImageRequest {
                name: name.clone(),
                as_name: as_name.clone(),
                insecure: *insecure,
                credentials: None,
                sha256: sha256.clone(),
            };
            // The registry to log in to: the reference's, or that of a
            // catalog entry that comes from a registry (`oci:REF`).
            let reference = if hangar_api::image::is_oci_reference(name) {
                Some(name.clone())
            } else {
                let entries: Vec<CatalogEntry> = client.get("/v1/images/catalog").await?;
                entries
                    .into_iter()
                    .find(|e| e.name == *name)
                    .and_then(|e| e.source.strip_prefix("oci:").map(str::to_string))
            };
            if let Some(reference) = reference {
                // Read here, as the user; the daemon never reads a
                // user's (or root's) docker config.
                let registry = crate::registry_auth::registry_of(&reference);
                req.credentials =
                    crate::registry_auth::credentials_for(registry).map_err(ApiError::invalid)?;
            }
            let op: Operation = client.post("/v1/images/pull", &req).await?;
            finish_image_op(cli, client, op, *no_wait).await
        }
        ImageCommand::Import {
            source,
            name,
            no_wait,
        } => {
            hangar_api::name::validate_name("image", name).map_err(ApiError::invalid)?;
            let source = crate::import::ArchiveSource::open(source)?;
            let op = crate::import::import_archive(client, name, source).await?;
            finish_image_op(cli, client, op, *no_wait).await
        }
        ImageCommand::Register {
            name,
            kernel,
            initrd,
            rootfs,
        } => {
            // A bad name is refused before any byte is sent: the daemon
            // refuses it too, but while the body is still streaming the
            // refusal can reach the CLI only as a broken connection.
            hangar_api::name::validate_name("image", name).map_err(ApiError::invalid)?;
            // Opened here, as the user: the daemon never opens a path for
            // a client (docs/security.md#image-registration-the-daemon-never-opens-a-host-path-for-a-client).
            let open = |what: &str, p: &std::path::Path| {
                open_regular(what, p).map_err(|e| ApiError::invalid(e.to_string()))
            };
            let kernel = open("kernel", kernel)?;
            let initrd = initrd.as_deref().map(|p| open("initrd", p)).transpose()?;
            let rootfs = open("rootfs", rootfs)?;
            let info = upload_image(client, name, kernel, initrd, rootfs).await?;
            if cli.json {
                output::json(&info);
            } else {
                println!("{} {}", info.name, info.digest);
            }
            Ok(())
        }
        ImageCommand::Export { name, file } => {
            let resp = client
                .get_stream(&format!("/v1/images/{}/bundle", seg(name)))
                .await?;
            let sum = crate::download::body_to_file(resp, file).await?;
            if cli.json {
                output::json(&serde_json::json!({"image": name, "file": file, "sha256": sum}));
            } else {
                eprintln!("exported {name} to {}", file.display());
                eprintln!("sha256 {sum}");
            }
            Ok(())
        }
        ImageCommand::Promote {
            vm,
            name,
            stop,
            no_wait,
        } => {
            let req = hangar_api::PromoteImageRequest {
                vm: vm.clone(),
                name: name.clone(),
                stop: *stop,
            };
            let op: Operation = client.post("/v1/images/promote", &req).await?;
            finish_image_op(cli, client, op, *no_wait).await
        }
        ImageCommand::Show { name } => {
            let info: ImageInfo = client.get(&format!("/v1/images/{}", seg(name))).await?;
            if cli.json {
                output::json(&info);
                return Ok(());
            }
            show_image(&info);
            Ok(())
        }
        ImageCommand::Tag { image, name } => {
            hangar_api::name::validate_name("image", name).map_err(ApiError::invalid)?;
            let req = TagImageRequest { name: name.clone() };
            let info: ImageInfo = client
                .post(&format!("/v1/images/{}/tag", seg(image)), &req)
                .await?;
            if cli.json {
                output::json(&info);
            } else {
                println!("{} {} ({})", info.name, info.digest, info.names.join(", "));
            }
            Ok(())
        }
        ImageCommand::Rm { name } => {
            // Only to say what stays: the daemon decides, in one step.
            let before: Option<ImageInfo> =
                client.get(&format!("/v1/images/{}", seg(name))).await.ok();
            client.delete(&format!("/v1/images/{}", seg(name))).await?;
            if !cli.json {
                // By digest, or by its last name, the image went.
                let others: Vec<&String> = before
                    .as_ref()
                    .filter(|i| i.names.contains(name))
                    .map(|i| i.names.iter().filter(|n| *n != name).collect())
                    .unwrap_or_default();
                if others.is_empty() {
                    println!("removed {name}");
                } else {
                    let others: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
                    println!(
                        "removed the name {name}; the image stays as {}",
                        others.join(", ")
                    );
                }
            }
            Ok(())
        }
    }
}

/// `/path/golden.hangar.tar.zst` → `golden`.
fn bundle_stem(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split('.').next()?;
    (!stem.is_empty()).then(|| stem.to_string())
}

/// Waits for an image operation (unless `no_wait`) and prints the image.
async fn finish_image_op(
    cli: &Cli,
    client: &Client,
    op: Operation,
    no_wait: bool,
) -> Result<(), ApiError> {
    if no_wait {
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

fn show_image(info: &ImageInfo) {
    let mut rows = vec![
        ("name", info.name.clone()),
        ("names", info.names.join(", ")),
        ("digest", info.digest.clone()),
        ("source", info.source.clone()),
        ("size", output::human_bytes(info.rootfs_bytes)),
        ("created", info.created_at.clone()),
        ("used by", info.used_by.join(",")),
    ];
    if let Some(f) = &info.files {
        rows.push(("kernel sha256", f.kernel_sha256.clone()));
        if let Some(i) = &f.initrd_sha256 {
            rows.push(("initrd sha256", i.clone()));
        }
        rows.push(("rootfs sha256", f.rootfs_sha256.clone()));
    }
    if let Some(p) = &info.parent {
        rows.push(("parent", format!("{} {}", p.image_name, p.image)));
        rows.push(("promoted from", format!("VM {} at {}", p.vm, p.promoted_at)));
    }
    if let Some(r) = &info.run {
        let words = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        if let Some(u) = &r.user {
            rows.push(("user", u.clone()));
        }
        if let Some(w) = &r.working_dir {
            rows.push(("working dir", w.clone()));
        }
        if !r.entrypoint.is_empty() {
            rows.push(("entrypoint", words(&r.entrypoint)));
        }
        if !r.cmd.is_empty() {
            rows.push(("cmd", words(&r.cmd)));
        }
        for e in &r.env {
            rows.push(("env", e.clone()));
        }
    }
    // Run settings come from an image config a registry or archive wrote:
    // control characters are shown escaped, never sent to the terminal.
    for (k, v) in rows {
        println!(
            "{k:<14} {}",
            hangar_host::sanitize::escape_controls(v.as_bytes())
        );
    }
}
