//! Attack suite, the API socket: who may talk to the daemon at all
//! (`docs/security.md`, "Who may do what").

#![allow(clippy::unwrap_used)]

mod common;

use common::roles::Role;
use common::{Options, TestDaemon};

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn stranger_cannot_open_the_socket() {
    let d = TestDaemon::with_socket_group("atk-sock", Options::default());
    let out = d.hangar_as(Role::Stranger, &["vm", "ls"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stranger listed VMs: {stderr}");
    assert!(
        stderr.contains("hangar-testers"),
        "the refusal should name the group that grants access: {stderr}"
    );
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_can_use_the_api() {
    let d = TestDaemon::with_socket_group("atk-member", Options::default());
    let out = d.hangar_as(Role::SocketUser, &["--json", "vm", "ls"]);
    assert!(
        out.status.success(),
        "a socket_group member could not list VMs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
