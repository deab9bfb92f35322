//! OCI images made byte by byte for tests: layer tars, `docker save`
//! archives and OCI image layouts, and a busybox userland to fill them.

use std::io::Write;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A layer tar: `(path, kind)` entries, built with numeric owners.
pub enum Entry<'a> {
    File(&'a str, Vec<u8>, u32),
    Dir(&'a str, u32),
    Link(&'a str, &'a str),
    /// A raw name written into the header as is (for hostile names).
    RawFile(&'a [u8], &'a [u8]),
}

pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::File(p, body, mode) => {
                h.set_size(body.len() as u64);
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, body.as_slice()).unwrap();
            }
            Entry::Dir(p, mode) => {
                h.set_size(0);
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::Link(p, target) => {
                h.set_size(0);
                h.set_mode(0o777);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::RawFile(name, body) => {
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *body).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut c = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = c.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = c.wait_with_output().unwrap();
    w.join().unwrap();
    out.stdout
}

pub fn config(diff_ids: &[String], run: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{run},"rootfs":{{"type":"layers","diff_ids":{}}}}}"#,
        serde_json::to_string(diff_ids).unwrap()
    )
    .into_bytes()
}

/// A `docker save` archive: layer dirs first, manifest.json last.
pub fn docker_archive(layers: &[Vec<u8>], run: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let cfg = config(&diff_ids, run);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("layer{i}/layer.tar");
        members.push((p.clone(), l.clone()));
        paths.push(p);
    }
    let cfg_name = format!("{}.json", &sha(&cfg)[7..]);
    members.push((cfg_name.clone(), cfg));
    let manifest =
        serde_json::json!([{"Config": cfg_name, "RepoTags": ["test:latest"], "Layers": paths}]);
    members.push(("manifest.json".into(), manifest.to_string().into_bytes()));
    plain_tar(&members)
}

/// An OCI image layout as a tar; `layers` are (blob, uncompressed tar,
/// media type).
pub fn oci_archive(layers: &[(Vec<u8>, Vec<u8>, &str)], run: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, t, _)| sha(t)).collect();
    let cfg = config(&diff_ids, run);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(b, _, mt)| serde_json::json!({"mediaType": mt, "digest": sha(b), "size": b.len()}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
        "layers": descs,
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    let blob = |b: &[u8]| (format!("blobs/sha256/{}", &sha(b)[7..]), b.to_vec());
    let mut members = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    for (b, _, _) in layers {
        members.push(blob(b));
    }
    members.push(blob(&cfg));
    members.push(blob(&manifest));
    members.push(("index.json".into(), index.to_string().into_bytes()));
    plain_tar(&members)
}

pub fn plain_tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Debian's static busybox, which the images here are made of.
pub fn busybox() -> Vec<u8> {
    std::fs::read(super::static_busybox()).unwrap()
}

/// A busybox userland: the binary, applet links, passwd with an `app` user.
pub fn busybox_layer() -> Vec<u8> {
    let mut entries = vec![
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox", busybox(), 0o755),
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_vec(),
            0o644,
        ),
        Entry::File("etc/group", b"root:x:0:\napp:x:1000:\n".to_vec(), 0o644),
        Entry::Dir("home", 0o755),
    ];
    for applet in [
        "sh", "cat", "id", "ls", "echo", "pwd", "env", "hostname", "grep",
    ] {
        entries.push(Entry::Link(
            Box::leak(format!("bin/{applet}").into_boxed_str()),
            "busybox",
        ));
    }
    layer(&entries)
}
