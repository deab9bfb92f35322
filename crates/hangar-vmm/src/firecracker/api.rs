//! Firecracker API request bodies as typed serde structs, and the exact
//! sequence of requests that configures and boots a VM. Pure: no I/O, so
//! the contract test can validate every body against Firecracker's
//! swagger file.

use std::path::Path;

use serde::Serialize;

use crate::VmSpec;

/// Drive id used for the root disk.
pub const ROOT_DRIVE_ID: &str = "root";
/// The only network interface id we configure.
pub const IFACE_ID: &str = "eth0";
/// Firecracker's human-readable log inside `vm_dir`.
pub const LOG_FILE: &str = crate::VMM_LOG;
/// Firecracker's metrics file inside `vm_dir`.
pub const METRICS_FILE: &str = "metrics.json";

/// PUT /machine-config
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

/// PUT /boot-source
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    pub boot_args: String,
}

/// PUT /drives/{drive_id}
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriveBody {
    pub drive_id: String,
    pub path_on_host: String,
    /// Always false: our initramfs finds the root disk itself, so
    /// Firecracker must not append `root=` to the command line.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// PUT /network-interfaces/{iface_id}
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// PUT /logger
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Logger {
    pub log_path: String,
    pub level: String,
    pub show_level: bool,
    pub show_log_origin: bool,
}

/// PUT /metrics
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Metrics {
    pub metrics_path: String,
}

/// What PUT /actions can ask for.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    /// Makes Firecracker append one line to its metrics file now.
    FlushMetrics,
}

/// PUT /actions
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceAction {
    pub action_type: ActionType,
}

/// One API call: method, path and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: &'static str,
    pub path: String,
    pub body: serde_json::Value,
}

impl ApiCall {
    fn put<T: Serialize>(path: impl Into<String>, body: &T) -> Self {
        ApiCall {
            method: "PUT",
            path: path.into(),
            // Serialising these plain structs cannot fail.
            body: serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
        }
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The requests that configure and boot `spec`, in order; the last one is
/// InstanceStart.
pub fn boot_calls(spec: &VmSpec) -> Vec<ApiCall> {
    let mut calls = vec![
        ApiCall::put(
            "/logger",
            &Logger {
                log_path: s(&spec.vm_dir.join(LOG_FILE)),
                level: "Info".into(),
                show_level: true,
                show_log_origin: false,
            },
        ),
        ApiCall::put(
            "/metrics",
            &Metrics {
                metrics_path: s(&spec.vm_dir.join(METRICS_FILE)),
            },
        ),
        ApiCall::put(
            "/machine-config",
            &MachineConfig {
                vcpu_count: spec.cpus,
                mem_size_mib: spec.memory_mib,
                smt: false,
            },
        ),
        ApiCall::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: s(&spec.kernel),
                initrd_path: spec.initrd.as_deref().map(s),
                boot_args: spec.cmdline.clone(),
            },
        ),
        ApiCall::put(
            format!("/drives/{ROOT_DRIVE_ID}"),
            &DriveBody {
                drive_id: ROOT_DRIVE_ID.into(),
                path_on_host: s(&spec.root_disk),
                is_root_device: false,
                is_read_only: false,
            },
        ),
    ];
    for d in &spec.extra_drives {
        calls.push(ApiCall::put(
            format!("/drives/{}", d.id),
            &DriveBody {
                drive_id: d.id.clone(),
                path_on_host: s(&d.path),
                is_root_device: false,
                is_read_only: d.read_only,
            },
        ));
    }
    calls.push(ApiCall::put(
        format!("/network-interfaces/{IFACE_ID}"),
        &NetworkInterface {
            iface_id: IFACE_ID.into(),
            host_dev_name: spec.tap.clone(),
            guest_mac: spec.mac.clone(),
        },
    ));
    calls.push(action(ActionType::InstanceStart));
    calls
}

/// PUT /actions with `action_type`.
pub fn action(action_type: ActionType) -> ApiCall {
    ApiCall::put("/actions", &InstanceAction { action_type })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Drive;

    fn spec() -> VmSpec {
        VmSpec {
            id: "vm1".into(),
            name: "dev".into(),
            cpus: 2,
            memory_mib: 1024,
            kernel: "/img/vmlinux".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            root_disk: "/vms/vm1/root.ext4".into(),
            extra_drives: vec![Drive {
                id: "config".into(),
                path: "/vms/vm1/config.img".into(),
                read_only: true,
            }],
            tap: "tap0".into(),
            mac: "06:00:00:00:00:01".into(),
            vm_dir: "/vms/vm1".into(),
            serial_log: "/vms/vm1/serial.log".into(),
            netns: None,
            restore_from: None,
            run_as: None,
        }
    }

    #[test]
    fn boot_calls_end_with_instance_start() {
        let calls = boot_calls(&spec());
        let last = calls.last().unwrap();
        assert_eq!(last.path, "/actions");
        assert_eq!(
            last.body,
            serde_json::json!({"action_type": "InstanceStart"})
        );
    }

    #[test]
    fn boot_calls_configure_machine_before_start() {
        let calls = boot_calls(&spec());
        let mc = calls.iter().find(|c| c.path == "/machine-config").unwrap();
        assert_eq!(
            mc.body,
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false})
        );
    }

    #[test]
    fn boot_calls_without_initrd_omit_initrd_path() {
        let calls = boot_calls(&spec());
        let bs = calls.iter().find(|c| c.path == "/boot-source").unwrap();
        assert!(bs.body.get("initrd_path").is_none());
    }

    #[test]
    fn boot_calls_mark_extra_drive_read_only_and_root_read_write() {
        let calls = boot_calls(&spec());
        let root = calls.iter().find(|c| c.path == "/drives/root").unwrap();
        let cfg = calls.iter().find(|c| c.path == "/drives/config").unwrap();
        assert_eq!(root.body["is_read_only"], false);
        assert_eq!(root.body["is_root_device"], false);
        assert_eq!(cfg.body["is_read_only"], true);
    }

    #[test]
    fn flush_metrics_body_names_the_action() {
        assert_eq!(
            action(ActionType::FlushMetrics).body,
            serde_json::json!({"action_type": "FlushMetrics"})
        );
    }

    #[test]
    fn send_ctrl_alt_del_body_names_the_action() {
        assert_eq!(
            action(ActionType::SendCtrlAltDel).body,
            serde_json::json!({"action_type": "SendCtrlAltDel"})
        );
    }
}
