//! Contract test: every request body the Firecracker driver can send is
//! validated against Firecracker's own API description (swagger 2.0,
//! v1.16.1) from the shared folder. Objects are checked strictly (unknown
//! fields rejected), as Firecracker deserialises with `deny_unknown_fields`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hangar_vmm::firecracker::api::{self, ActionType, ApiCall};
use hangar_vmm::{Drive, VmSpec};
use serde_json::{json, Value};

fn load_spec() -> Value {
    let spec = hangar_testsupport::shared_path("firecracker/firecracker-api-v1.16.1.yaml");
    let text = std::fs::read_to_string(&spec)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", spec.display()));
    serde_yaml::from_str(&text).unwrap()
}

/// Adds `additionalProperties: false` to every object schema that lists
/// properties and says nothing about extra ones.
fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in m.iter_mut() {
                strict(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

/// The spec's path template matching a concrete path ("/drives/root" →
/// "/drives/{drive_id}").
fn template_for<'a>(spec: &'a Value, path: &str) -> &'a str {
    let concrete: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == concrete.len()
                && parts
                    .iter()
                    .zip(&concrete)
                    .all(|(p, c)| p == c || (p.starts_with('{') && p.ends_with('}')))
        })
        .unwrap_or_else(|| panic!("path {path} is not in the Firecracker API"))
}

/// A draft-4 validator for the body of `method path`, with the spec's
/// definitions reachable as `#/definitions/...`.
fn validator_for(spec: &Value, method: &str, path: &str) -> jsonschema::Validator {
    let template = template_for(spec, path);
    let op = &spec["paths"][template][method.to_lowercase()];
    assert!(
        op.is_object(),
        "{method} {template} is not in the Firecracker API"
    );
    let body = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in"] == "body")
        .unwrap_or_else(|| panic!("{method} {template} takes no body"));
    let mut schema = json!({
        "allOf": [body["schema"].clone()],
        "definitions": spec["definitions"].clone(),
    });
    strict(&mut schema);
    jsonschema::draft4::new(&schema).unwrap()
}

fn assert_valid(spec: &Value, call: &ApiCall) {
    let v = validator_for(spec, call.method, &call.path);
    let errors: Vec<String> = v.iter_errors(&call.body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{} {} body {} violates the Firecracker API: {errors:?}",
        call.method,
        call.path,
        call.body
    );
}

fn full_spec() -> VmSpec {
    VmSpec {
        id: "vm-0123".into(),
        name: "dev".into(),
        cpus: 2,
        memory_mib: 2048,
        kernel: "/var/lib/hangar/images/abc/kernel".into(),
        initrd: Some("/var/lib/hangar/images/abc/initrd".into()),
        cmdline: "console=ttyS0 reboot=k panic=1".into(),
        root_disk: "/var/lib/hangar/vms/vm-0123/root.ext4".into(),
        extra_drives: vec![
            Drive {
                id: "config".into(),
                path: "/var/lib/hangar/vms/vm-0123/config.img".into(),
                read_only: true,
            },
            Drive {
                id: "scratch".into(),
                path: "/var/lib/hangar/vms/vm-0123/scratch.img".into(),
                read_only: false,
            },
        ],
        tap: "hgtap0".into(),
        mac: "06:00:0a:00:00:02".into(),
        vm_dir: PathBuf::from("/var/lib/hangar/vms/vm-0123"),
        serial_log: "/var/lib/hangar/vms/vm-0123/serial.log".into(),
        netns: None,
        restore_from: None,
        run_as: None,
    }
}

#[test]
fn every_boot_request_body_matches_the_firecracker_api() {
    let spec = load_spec();
    let calls = api::boot_calls(&full_spec());
    assert_eq!(
        calls.len(),
        9,
        "expected logger, metrics, machine, boot, 3 drives, net, start"
    );
    for call in &calls {
        assert_valid(&spec, call);
    }
}

#[test]
fn boot_request_without_initrd_matches_the_firecracker_api() {
    let spec = load_spec();
    let mut vm = full_spec();
    vm.initrd = None;
    vm.extra_drives.clear();
    for call in &api::boot_calls(&vm) {
        assert_valid(&spec, call);
    }
}

#[test]
fn shutdown_request_body_matches_the_firecracker_api() {
    let spec = load_spec();
    assert_valid(&spec, &api::action(ActionType::SendCtrlAltDel));
}

#[test]
fn flush_metrics_request_body_matches_the_firecracker_api() {
    let spec = load_spec();
    assert_valid(&spec, &api::action(ActionType::FlushMetrics));
}

#[test]
fn jailed_boot_request_bodies_match_the_firecracker_api() {
    let spec = load_spec();
    let (jailed, _) = hangar_vmm::firecracker::jailer::jailed_spec(&full_spec()).unwrap();
    for call in &api::boot_calls(&jailed) {
        assert_valid(&spec, call);
    }
}

#[test]
fn path_ids_equal_body_ids() {
    // Firecracker rejects a body whose id differs from the path's id.
    for call in api::boot_calls(&full_spec()) {
        if let Some(id) = call.path.strip_prefix("/drives/") {
            assert_eq!(call.body["drive_id"], id);
        }
        if let Some(id) = call.path.strip_prefix("/network-interfaces/") {
            assert_eq!(call.body["iface_id"], id);
        }
    }
}

#[test]
fn validator_rejects_drive_without_required_is_root_device() {
    let spec = load_spec();
    let v = validator_for(&spec, "PUT", "/drives/root");
    let bad = json!({"drive_id": "root", "path_on_host": "/x", "is_read_only": false});
    assert!(!v.is_valid(&bad));
}

#[test]
fn validator_rejects_unknown_field() {
    let spec = load_spec();
    let v = validator_for(&spec, "PUT", "/machine-config");
    let bad = json!({"vcpu_count": 1, "mem_size_mib": 128, "ht_enabled": false});
    assert!(!v.is_valid(&bad));
}

#[test]
fn validator_rejects_unknown_action() {
    let spec = load_spec();
    let v = validator_for(&spec, "PUT", "/actions");
    assert!(!v.is_valid(&json!({"action_type": "Reboot"})));
}
