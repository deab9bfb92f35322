//! The API as a contract: real responses of a running daemon, validated
//! against the checked-in `docs/openapi.json`. The document is read from the
//! repository, not from the daemon, so a wire type that changes without the
//! document being regenerated fails here (as well as in hangar-daemon's
//! `openapi_document_in_docs_is_the_generated_one`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::TestDaemon;
use serde_json::{json, Value};
use sha2::Digest;

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// One HTTP exchange on the daemon's socket.
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn call(d: &TestDaemon, method: &str, target: &str, extra: &str, body: Option<&str>) -> Reply {
    let body = body.unwrap_or("");
    let typed = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_string()
    };
    call_bytes(
        d,
        method,
        target,
        &format!("{extra}{typed}"),
        body.as_bytes(),
    )
}

/// [`call`] with any body; `extra` carries its headers.
fn call_bytes(d: &TestDaemon, method: &str, target: &str, extra: &str, body: &[u8]) -> Reply {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: hangar\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut content_type = None;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        let name = name.trim().to_ascii_lowercase();
        assert_ne!(
            name, "transfer-encoding",
            "chunked answers are not parsed here"
        );
        if name == "content-type" {
            content_type = Some(value.trim().to_string());
        }
    }
    Reply {
        status,
        content_type,
        body: raw[split + 4..].to_vec(),
    }
}

/// The checked-in document, with a validator per documented response.
struct Contract {
    doc: Value,
    /// `components.schemas` made strict: an object may carry only the
    /// properties the document names, so an added or renamed field fails.
    schemas: Value,
    /// (method, path template) pairs a real response was checked against.
    covered: BTreeSet<(String, String)>,
}

impl Contract {
    fn load() -> Contract {
        let text = std::fs::read_to_string(DOCUMENT)
            .unwrap_or_else(|e| panic!("cannot read {DOCUMENT}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let mut schemas = doc["components"]["schemas"].clone();
        for schema in schemas.as_object_mut().unwrap().values_mut() {
            let obj = schema.as_object_mut().unwrap();
            if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
                obj.insert("additionalProperties".into(), json!(false));
            }
        }
        Contract {
            doc,
            schemas,
            covered: BTreeSet::new(),
        }
    }

    /// The documented path template that `path` (no query) matches.
    fn template(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('/').collect();
        let mut matches: Vec<&String> = self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|t| {
                let tp: Vec<&str> = t.split('/').collect();
                tp.len() == parts.len()
                    && tp
                        .iter()
                        .zip(&parts)
                        .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
            })
            .collect();
        // A literal segment beats a parameter (`/v1/images/catalog` is not
        // `/v1/images/{name}`).
        matches.sort_by_key(|t| t.matches('{').count());
        matches
            .first()
            .map(|t| t.to_string())
            .unwrap_or_else(|| panic!("{path} is not in the document"))
    }

    /// A validator for `schema`, with the document's schemas reachable at
    /// `#/components/schemas/...`.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "allOf": [schema],
            "components": { "schemas": self.schemas },
        });
        jsonschema::draft202012::new(&root).unwrap()
    }

    fn assert_valid(&self, schema: &Value, instance: &Value, what: &str) {
        let errors: Vec<String> = self
            .validator(schema)
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {instance} violates docs/openapi.json: {errors:#?}"
        );
    }

    /// Checks `reply` to `method target` against the document: its status
    /// must be one the operation documents, its content type the
    /// documented one, and its body valid against the documented schema.
    fn check(&mut self, method: &str, target: &str, reply: &Reply) {
        let path = target.split('?').next().unwrap();
        let template = self.template(path);
        let what = format!("{method} {target} → {}", reply.status);
        let op = &self.doc["paths"][&template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let mut response = &op["responses"][reply.status.to_string()];
        assert!(
            response.is_object(),
            "{what}: status not documented (body {})",
            String::from_utf8_lossy(&reply.body)
        );
        if let Some(r) = response["$ref"].as_str() {
            let name = r.strip_prefix("#/components/responses/").unwrap();
            response = &self.doc["components"]["responses"][name];
        }
        match response["content"].as_object() {
            None => assert!(reply.body.is_empty(), "{what}: undocumented body"),
            Some(content) => {
                let (media, spec) = content.iter().next().unwrap();
                let got = reply.content_type.clone().unwrap_or_default();
                assert_eq!(
                    got.split(';').next().unwrap().trim(),
                    media.split(';').next().unwrap().trim(),
                    "{what}: content type"
                );
                let schema = &spec["schema"];
                if media.starts_with("application/json") {
                    self.assert_valid(schema, &reply.json(), &what);
                } else if schema.is_object() {
                    let text = String::from_utf8(reply.body.clone()).unwrap();
                    self.assert_valid(schema, &Value::String(text), &what);
                }
            }
        }
        self.covered.insert((method.to_lowercase(), template));
    }

    fn schema_ref(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert((method.clone(), template.clone()));
            }
        }
        all
    }
}

/// Calls `method target`, asserts the status, checks the answer against
/// the document and returns it.
fn expect(
    c: &mut Contract,
    d: &TestDaemon,
    (method, target): (&str, &str),
    extra: &str,
    body: Option<&str>,
    status: u16,
) -> Reply {
    let reply = call(d, method, target, extra, body);
    assert_eq!(
        reply.status,
        status,
        "{method} {target}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    c.check(method, target, &reply);
    reply
}

/// Follows operation `id` to its end through `GET /v1/operations/{id}`,
/// checking each answer.
fn wait_op(c: &mut Contract, d: &TestDaemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    let target = format!("/v1/operations/{id}?wait_ms=30000");
    loop {
        let op = expect(c, d, ("GET", &target), "", None, 200).json();
        if op["state"] != "running" {
            return op;
        }
        assert!(
            Instant::now() < deadline,
            "operation {id} never ended: {op}"
        );
    }
}

#[test]
#[ignore = "needs root: starts a real daemon with its network in a namespace"]
fn real_responses_of_a_daemon_match_the_checked_in_document() {
    let d = TestDaemon::start("openapi");
    let mut c = Contract::load();
    let upgrade = "Upgrade: hangar-exec\r\nConnection: Upgrade\r\n";

    let info = expect(&mut c, &d, ("GET", "/v1/info"), "", None, 200).json();
    assert_eq!(info["driver"], "qemu", "{info}");
    expect(&mut c, &d, ("GET", "/v1/vms"), "", None, 200);
    expect(&mut c, &d, ("GET", "/v1/images"), "", None, 200);
    let catalog = expect(&mut c, &d, ("GET", "/v1/images/catalog"), "", None, 200).json();
    assert!(!catalog.as_array().unwrap().is_empty(), "{catalog}");

    // Errors of each kind a daemon without VMs can give.
    for (method, target) in [
        ("GET", "/v1/vms/nope"),
        ("DELETE", "/v1/vms/nope"),
        ("DELETE", "/v1/vms/nope?force=true"),
        ("POST", "/v1/vms/nope/start"),
        ("POST", "/v1/vms/nope/stop"),
        ("POST", "/v1/vms/nope/restart"),
        ("GET", "/v1/vms/nope/console?tail_bytes=10"),
        ("GET", "/v1/images/nope"),
        ("DELETE", "/v1/images/nope"),
        ("GET", "/v1/operations/nope"),
        ("POST", "/v1/operations/nope/cancel"),
        ("GET", "/v1/vms/nope/files?path=/etc/hosts"),
        ("PUT", "/v1/vms/nope/files?path=/tmp/x"),
        ("GET", "/v1/vms/nope/tree?path=/etc"),
        ("PUT", "/v1/vms/nope/tree?path=/tmp/&name=x"),
    ] {
        let err = expect(&mut c, &d, (method, target), "", None, 404).json();
        assert_eq!(err["kind"], "not_found", "{method} {target}: {err}");
    }
    expect(
        &mut c,
        &d,
        ("POST", "/v1/vms/nope/exec"),
        upgrade,
        Some("{}"),
        404,
    );
    // Without the upgrade headers, exec is refused as invalid.
    expect(&mut c, &d, ("POST", "/v1/vms/nope/exec"), "", None, 400);
    // The TCP stream: an unknown VM with the upgrade headers, and the
    // headers missing.
    expect(
        &mut c,
        &d,
        ("POST", "/v1/vms/nope/tcp/22"),
        "Connection: Upgrade\r\nUpgrade: hangar-tcp\r\n",
        None,
        404,
    );
    expect(&mut c, &d, ("POST", "/v1/vms/nope/tcp/22"), "", None, 400);

    // Sessions: none yet; each endpoint with an unknown VM; bad input.
    let all = expect(&mut c, &d, ("GET", "/v1/sessions"), "", None, 200).json();
    assert_eq!(all, serde_json::json!([]));
    for (method, target, body) in [
        ("GET", "/v1/vms/nope/sessions", None),
        (
            "POST",
            "/v1/vms/nope/sessions",
            Some(r#"{"name":"s","command":["top"]}"#),
        ),
        ("GET", "/v1/vms/nope/sessions/s", None),
        ("DELETE", "/v1/vms/nope/sessions/s", None),
        (
            "POST",
            "/v1/vms/nope/sessions/s/send",
            Some(r#"{"data":"ls\r"}"#),
        ),
        (
            "POST",
            "/v1/vms/nope/sessions/s/stop",
            Some(r#"{"timeout_secs":1}"#),
        ),
        (
            "GET",
            "/v1/vms/nope/sessions/s/logs?tail=5&follow=true",
            None,
        ),
    ] {
        let err = expect(&mut c, &d, (method, target), "", body, 404).json();
        assert_eq!(err["kind"], "not_found", "{method} {target}: {err}");
    }
    expect(
        &mut c,
        &d,
        ("POST", "/v1/vms/nope/sessions/s/attach?cols=80&rows=24"),
        "Upgrade: hangar-attach\r\nConnection: Upgrade\r\n",
        None,
        404,
    );
    expect(
        &mut c,
        &d,
        ("POST", "/v1/vms/nope/sessions/s/attach"),
        "",
        None,
        400,
    );
    for body in [
        r#"{"name":"../etc","command":["top"]}"#,
        r#"{"name":"s","command":[]}"#,
        r#"{"name":"s","command":["top"],"env":[["1BAD","x"]]}"#,
        r#"{"name":"s","command":["top"],"colour":"red"}"#,
    ] {
        expect(
            &mut c,
            &d,
            ("POST", "/v1/vms/nope/sessions"),
            "",
            Some(body),
            400,
        );
    }
    expect(
        &mut c,
        &d,
        ("POST", "/v1/vms/nope/sessions/s/stop"),
        "",
        Some(r#"{"timeout_secs":9999}"#),
        400,
    );

    // Bad input to create: a bad name, a body that does not parse, an
    // unknown field, an unknown image.
    let bad_bodies = [
        (r#"{"name":"Bad_Name"}"#, 400),
        (r#"{"name":"ok","cpus":"two"}"#, 400),
        (r#"{"name":"ok","colour":"red"}"#, 400),
        (r#"{"name":"ok","image":"no-such-image"}"#, 404),
    ];
    for (body, status) in bad_bodies {
        expect(&mut c, &d, ("POST", "/v1/vms"), "", Some(body), status);
    }
    expect(
        &mut c,
        &d,
        ("POST", "/v1/images/pull"),
        "",
        Some(r#"{"name":"no-such-image"}"#),
        404,
    );
    let register = r#"{"name":"reg","kernel":"/no/such/vmlinux","rootfs":"/no/such/rootfs.ext4"}"#;
    expect(
        &mut c,
        &d,
        ("POST", "/v1/images/register"),
        "",
        Some(register),
        400,
    );

    // A real pull (from the shared image cache): the operation while it
    // runs and when it ends, its result, the image, and the errors of a
    // finished operation.
    let pull = r#"{"name":"debian-12"}"#;
    let op = expect(&mut c, &d, ("POST", "/v1/images/pull"), "", Some(pull), 202).json();
    let id = op["id"].as_str().unwrap().to_string();
    expect(&mut c, &d, ("GET", "/v1/operations"), "", None, 200);
    let done = wait_op(&mut c, &d, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    c.assert_valid(
        &Contract::schema_ref("ImageInfo"),
        &done["result"],
        "pull result",
    );
    let cancel = format!("/v1/operations/{id}/cancel");
    let err = expect(&mut c, &d, ("POST", &cancel), "", None, 409).json();
    assert_eq!(err["kind"], "conflict", "{err}");
    let images = expect(&mut c, &d, ("GET", "/v1/images"), "", None, 200).json();
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    expect(&mut c, &d, ("GET", "/v1/images/debian-12"), "", None, 200);
    let ops = expect(&mut c, &d, ("GET", "/v1/operations"), "", None, 200).json();
    assert_eq!(ops[0]["id"], id.as_str(), "{ops}");
    // A second name: shown with both, removed alone.
    let tagged = expect(
        &mut c,
        &d,
        ("POST", "/v1/images/debian-12/tag"),
        "",
        Some(r#"{"name":"deb"}"#),
        200,
    )
    .json();
    assert_eq!(tagged["names"], json!(["deb", "debian-12"]), "{tagged}");
    for (target, body, status) in [
        ("/v1/images/debian-12/tag", r#"{"name":"Bad Name"}"#, 400),
        ("/v1/images/nope/tag", r#"{"name":"other"}"#, 404),
    ] {
        expect(&mut c, &d, ("POST", target), "", Some(body), status);
    }
    expect(&mut c, &d, ("DELETE", "/v1/images/deb"), "", None, 204);
    let shown = expect(&mut c, &d, ("GET", "/v1/images/debian-12"), "", None, 200).json();
    assert_eq!(shown["names"], json!(["debian-12"]), "{shown}");
    expect(
        &mut c,
        &d,
        ("DELETE", "/v1/images/debian-12"),
        "",
        None,
        204,
    );

    // An upload: refused before a byte is read (bad name), then a small
    // image that registers.
    let upload = |c: &mut Contract, target: &str, body: &[u8], status: u16| {
        let reply = call_bytes(
            &d,
            "POST",
            target,
            "Content-Type: application/octet-stream\r\n",
            body,
        );
        assert_eq!(
            reply.status,
            status,
            "{target}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        c.check("POST", target, &reply);
        reply
    };
    let bad = upload(
        &mut c,
        "/v1/images/upload?name=Bad_Name&kernel_bytes=1&rootfs_bytes=1",
        b"",
        400,
    );
    assert_eq!(bad.json()["kind"], "invalid");
    let kernel = b"\x7fELF\x02 a kernel".to_vec();
    let rootfs_path = d.dir.path().join("up.ext4");
    std::fs::File::create(&rootfs_path)
        .and_then(|f| f.set_len(4 << 20))
        .unwrap();
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&rootfs_path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    let rootfs = std::fs::read(&rootfs_path).unwrap();
    let mut body = kernel.clone();
    body.extend_from_slice(&sha2::Sha256::digest(&kernel));
    body.extend_from_slice(&rootfs);
    body.extend_from_slice(&sha2::Sha256::digest(&rootfs));
    let target = format!(
        "/v1/images/upload?name=up&kernel_bytes={}&rootfs_bytes={}",
        kernel.len(),
        rootfs.len()
    );
    let info = upload(&mut c, &target, &body, 201).json();
    assert_eq!(info["name"], "up", "{info}");
    expect(&mut c, &d, ("DELETE", "/v1/images/up"), "", None, 204);

    // An archive import: something that is not an image is refused with
    // the upload; a one-layer docker-archive becomes an import operation.
    let tar_of = |members: &[(&str, &[u8])]| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    };
    let import = |c: &mut Contract, target: &str, body: &[u8], status: u16| {
        let reply = call_bytes(
            &d,
            "POST",
            target,
            "Content-Type: application/x-tar\r\n",
            body,
        );
        assert_eq!(
            reply.status,
            status,
            "{target}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        c.check("POST", target, &reply);
        reply
    };
    let bad = import(
        &mut c,
        "/v1/images/import?name=notimage",
        &tar_of(&[("hello.txt", b"hi")]),
        400,
    );
    assert_eq!(bad.json()["kind"], "invalid");
    let layer = tar_of(&[("hello", b"#!/bin/sh\necho hi\n")]);
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)));
    let config = format!(
        r#"{{"os":"linux","architecture":"amd64","config":{{"Cmd":["/hello"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let archive = tar_of(&[
        ("l/layer.tar", &layer),
        ("c.json", config.as_bytes()),
        (
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]"#,
        ),
    ]);
    let op = import(&mut c, "/v1/images/import?name=imported", &archive, 202).json();
    let done = wait_op(&mut c, &d, op["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["run"]["cmd"][0], "/hello", "{done}");
    expect(&mut c, &d, ("DELETE", "/v1/images/imported"), "", None, 204);
    // Bundles: an unknown image cannot be exported; garbage is no bundle.
    expect(&mut c, &d, ("GET", "/v1/images/nope/bundle"), "", None, 404);
    let bad = call_bytes(
        &d,
        "POST",
        "/v1/images/bundle?name=nobundle",
        "Content-Type: application/zstd\r\n",
        b"not a bundle",
    );
    assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
    c.check("POST", "/v1/images/bundle?name=nobundle", &bad);
    // Promote: an unknown VM, and a bad image name.
    expect(
        &mut c,
        &d,
        ("POST", "/v1/images/promote"),
        "",
        Some(r#"{"vm":"nope","name":"snap"}"#),
        404,
    );
    expect(
        &mut c,
        &d,
        ("POST", "/v1/images/promote"),
        "",
        Some(r#"{"vm":"nope","name":"Bad Name"}"#),
        400,
    );

    // A query string that does not parse: the documented plain-text 400.
    expect(
        &mut c,
        &d,
        ("DELETE", "/v1/vms/nope?force=maybe"),
        "",
        None,
        400,
    );

    // The daemon serves exactly the checked-in document. Checked last, so
    // that a type changed without the document fails above on the body
    // that shows it.
    let served = expect(&mut c, &d, ("GET", "/v1/openapi.json"), "", None, 200);
    assert!(
        served.json() == c.doc,
        "the daemon serves a different document than docs/openapi.json; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p hangar-daemon openapi`"
    );

    // The endpoint fallback answers in the error shape too.
    let unknown = call(&d, "GET", "/v2/vms", "", None);
    assert_eq!(unknown.status, 404);
    c.assert_valid(
        &Contract::schema_ref("ApiError"),
        &unknown.json(),
        "fallback",
    );

    // Every documented operation met at least one real response, so a new
    // endpoint cannot enter the document unchecked.
    let missed: Vec<_> = c.operations().difference(&c.covered).cloned().collect();
    assert!(
        missed.is_empty(),
        "operations no real response was checked for: {missed:?}"
    );
}

/// The checker itself: a body with a renamed or extra field, or a missing
/// one, is refused (so the daemon test above cannot pass vacuously).
#[test]
fn the_checker_refuses_bodies_that_differ_from_the_document() {
    let c = Contract::load();
    let entry = Contract::schema_ref("CatalogEntry");
    let good = json!({"name": "debian-12", "description": "Debian", "local": false});
    assert!(c.validator(&entry).is_valid(&good));
    let renamed = json!({"name": "debian-12", "description": "Debian", "present": false});
    assert!(!c.validator(&entry).is_valid(&renamed));
    let extra = json!({"name": "debian-12", "description": "Debian", "local": false, "x": 1});
    assert!(!c.validator(&entry).is_valid(&extra));
    let not_found =
        &c.doc["components"]["responses"]["NotFound"]["content"]["application/json"]["schema"];
    assert!(c
        .validator(not_found)
        .is_valid(&json!({"kind": "not_found", "message": "no VM named \"x\""})));
    assert!(!c
        .validator(not_found)
        .is_valid(&json!({"kind": "conflict", "message": "busy"})));
}
