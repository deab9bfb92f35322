//! Builds (or reuses) the default `debian-12` image into the daemon's cache
//! and copies it to OUT_DIR: `cargo run -p hangar-image --example
//! build-default -- OUT_DIR`. Needs root and the Debian mirror.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hangar_image::{build_or_reuse_cached, Recipe, DEFAULT_CACHE_DIR};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: build-default OUT_DIR")?;
    let recipe = Recipe::default_debian12();
    let started = Instant::now();
    let progress = move |p: hangar_api::Progress| {
        eprintln!(
            "[{:6.1}s] {}: {}",
            started.elapsed().as_secs_f64(),
            p.phase,
            p.detail.unwrap_or_default()
        );
    };
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c2.cancel();
        }
    });
    let m = build_or_reuse_cached(
        &recipe,
        Path::new(DEFAULT_CACHE_DIR),
        &out,
        &progress,
        &cancel,
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    eprintln!(
        "total {:.1}s, key {}",
        started.elapsed().as_secs_f64(),
        recipe.cache_key()
    );
    Ok(())
}
