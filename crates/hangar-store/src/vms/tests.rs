use std::collections::HashSet;
use std::sync::Arc;

use super::*;

const SUBNET: &str = "10.77.0.0/24";

fn subnet() -> Ipv4Net {
    SUBNET.parse().unwrap()
}

/// A record whose ip/mac are deliberately wrong: the store must replace them.
fn vm(name: &str) -> VmRecord {
    VmRecord {
        id: format!("id-{name}"),
        name: name.to_string(),
        state: VmState::Creating,
        image_name: "debian-12".into(),
        image_digest: "sha256:aaaa".into(),
        cpus: 2,
        memory_mib: 1024,
        disk_bytes: 10 << 30,
        ip: Ipv4Addr::UNSPECIFIED,
        mac: "caller-mac".into(),
        driver: "qemu".into(),
        host_key_public: "ssh-ed25519 AAAA".into(),
        host_key_private: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        runtime: None,
        created_at: "2024-01-01T00:00:00.000Z".into(),
        last_error: None,
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, last)
}

#[test]
fn insert_assigns_lowest_free_ip_and_derived_mac() {
    let store = Store::open_in_memory().unwrap();

    let stored = store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();

    assert_eq!(stored.ip, ip(2));
    assert_eq!(stored.mac, "02:48:47:4d:00:02");
    assert_eq!(store.get_vm("id-dev").unwrap(), stored);
    assert_eq!(
        store.list_leases().unwrap(),
        vec![(ip(2), "id-dev".to_string())]
    );
}

#[test]
fn insert_skips_reserved_addresses() {
    let store = Store::open_in_memory().unwrap();

    let stored = store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[ip(2), ip(3)])
        .unwrap();

    assert_eq!(stored.ip, ip(4));
}

#[test]
fn insert_with_taken_name_returns_conflict_and_leaves_no_lease() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();
    let mut dup = vm("dev");
    dup.id = "id-other".into();

    let err = store.insert_vm_with_lease(&dup, subnet(), &[]).unwrap_err();

    assert!(matches!(&err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(err.to_string(), r#"a VM named "dev" already exists"#);
    assert_eq!(store.list_leases().unwrap().len(), 1);
    assert_eq!(store.list_vms().unwrap().len(), 1);
}

#[test]
fn insert_with_taken_id_returns_conflict_and_leaves_no_lease() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();
    let mut dup = vm("other");
    dup.id = "id-dev".into();

    let err = store.insert_vm_with_lease(&dup, subnet(), &[]).unwrap_err();

    assert_eq!(err.to_string(), r#"a VM with id "id-dev" already exists"#);
    assert_eq!(store.list_leases().unwrap().len(), 1);
}

#[test]
fn insert_into_full_subnet_returns_conflict() {
    let store = Store::open_in_memory().unwrap();
    let small: Ipv4Net = "10.9.0.0/29".parse().unwrap(); // hosts .2 to .6
    for i in 0..5 {
        store
            .insert_vm_with_lease(&vm(&format!("vm{i}")), small, &[])
            .unwrap();
    }

    let err = store
        .insert_vm_with_lease(&vm("vm5"), small, &[])
        .unwrap_err();

    assert!(matches!(&err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no free IP address in 10.9.0.0/29: remove a VM or widen [network] subnet"
    );
    assert!(store.get_vm_by_name("vm5").is_err());
}

#[test]
fn ip_of_deleted_vm_is_reused() {
    let store = Store::open_in_memory().unwrap();
    store.insert_vm_with_lease(&vm("a"), subnet(), &[]).unwrap();
    store.insert_vm_with_lease(&vm("b"), subnet(), &[]).unwrap();
    store.delete_vm("id-a").unwrap();

    let c = store.insert_vm_with_lease(&vm("c"), subnet(), &[]).unwrap();

    assert_eq!(c.ip, ip(2));
}

#[test]
fn lease_table_rejects_same_ip_twice() {
    let store = Store::open_in_memory().unwrap();
    let a = store.insert_vm_with_lease(&vm("a"), subnet(), &[]).unwrap();
    store.insert_vm_with_lease(&vm("b"), subnet(), &[]).unwrap();

    let res = store.conn().execute(
        "UPDATE ip_leases SET ip = ?1 WHERE vm_id = 'id-b'",
        [a.ip.to_string()],
    );

    let err = res.unwrap_err();
    assert_eq!(unique_violation(&err), Some("ip_leases.ip"));
}

#[test]
fn lease_for_unknown_vm_is_rejected() {
    let store = Store::open_in_memory().unwrap();

    let res = store.conn().execute(
        "INSERT INTO ip_leases (ip, vm_id) VALUES ('10.77.0.9', 'nope')",
        [],
    );

    assert!(res.is_err());
}

#[test]
fn get_vm_with_unknown_id_returns_not_found() {
    let store = Store::open_in_memory().unwrap();

    let err = store.get_vm("nope").unwrap_err();

    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[test]
fn get_vm_by_name_with_unknown_name_returns_not_found() {
    let store = Store::open_in_memory().unwrap();

    let err = store.get_vm_by_name("x").unwrap_err();

    assert_eq!(err.to_string(), r#"no VM named "x""#);
}

#[test]
fn get_vm_by_name_returns_the_record() {
    let store = Store::open_in_memory().unwrap();
    let stored = store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();

    assert_eq!(store.get_vm_by_name("dev").unwrap(), stored);
}

#[test]
fn list_vms_orders_by_created_at_then_name() {
    let store = Store::open_in_memory().unwrap();
    let mut late = vm("a-late");
    late.created_at = "2024-01-02T00:00:00.000Z".into();
    store.insert_vm_with_lease(&late, subnet(), &[]).unwrap();
    store
        .insert_vm_with_lease(&vm("b-early"), subnet(), &[])
        .unwrap();
    store
        .insert_vm_with_lease(&vm("a-early"), subnet(), &[])
        .unwrap();

    let names: Vec<String> = store
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();

    assert_eq!(names, ["a-early", "b-early", "a-late"]);
}

#[test]
fn set_vm_state_updates_state_and_last_error() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();

    store
        .set_vm_state("id-dev", VmState::Error, Some("boot failed"))
        .unwrap();

    let got = store.get_vm("id-dev").unwrap();
    assert_eq!(got.state, VmState::Error);
    assert_eq!(got.last_error.as_deref(), Some("boot failed"));
}

#[test]
fn set_vm_state_without_error_clears_last_error() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();
    store
        .set_vm_state("id-dev", VmState::Error, Some("boot failed"))
        .unwrap();

    store
        .set_vm_state("id-dev", VmState::Running, None)
        .unwrap();

    let got = store.get_vm("id-dev").unwrap();
    assert_eq!(got.state, VmState::Running);
    assert_eq!(got.last_error, None);
}

#[test]
fn set_vm_state_with_unknown_id_returns_not_found() {
    let store = Store::open_in_memory().unwrap();

    let err = store
        .set_vm_state("nope", VmState::Running, None)
        .unwrap_err();

    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[test]
fn set_vm_runtime_round_trips_and_clears() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();
    let rt = VmRuntime {
        pid: 4242,
        start_time: u64::from(u32::MAX) + 7,
        api_socket: "/var/lib/hangar/vms/x/api.sock".into(),
        tap: "hg-tap3".into(),
    };

    store.set_vm_runtime("id-dev", Some(&rt)).unwrap();
    let with = store.get_vm("id-dev").unwrap().runtime;
    store.set_vm_runtime("id-dev", None).unwrap();
    let without = store.get_vm("id-dev").unwrap().runtime;

    assert_eq!(with, Some(rt));
    assert_eq!(without, None);
}

#[test]
fn set_vm_runtime_with_unknown_id_returns_not_found() {
    let store = Store::open_in_memory().unwrap();

    let err = store.set_vm_runtime("nope", None).unwrap_err();

    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[test]
fn delete_vm_removes_vm_and_lease() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();

    store.delete_vm("id-dev").unwrap();

    assert!(store.list_vms().unwrap().is_empty());
    assert!(store.list_leases().unwrap().is_empty());
}

#[test]
fn delete_vm_with_unknown_id_returns_not_found() {
    let store = Store::open_in_memory().unwrap();

    let err = store.delete_vm("nope").unwrap_err();

    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[test]
fn serialized_record_omits_private_key() {
    let json = serde_json::to_value(vm("dev")).unwrap();

    assert!(json.get("host_key_private").is_none());
    assert_eq!(json["state"], "creating");
    assert_eq!(json["ip"], "0.0.0.0");
}

#[test]
fn vms_and_leases_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let stored = {
        let store = Store::open(&path).unwrap();
        store
            .insert_vm_with_lease(&vm("dev"), subnet(), &[])
            .unwrap()
    };

    let store = Store::open(&path).unwrap();

    assert_eq!(store.get_vm_by_name("dev").unwrap(), stored);
    assert_eq!(store.list_leases().unwrap(), vec![(stored.ip, stored.id)]);
}

fn insert_many(store: &Store, prefix: &str, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            store
                .insert_vm_with_lease(&vm(&format!("{prefix}{i}")), subnet(), &[])
                .unwrap()
                .ip
        })
        .collect()
}

#[test]
fn concurrent_inserts_through_one_store_get_distinct_ips() {
    let store = Arc::new(Store::open_in_memory().unwrap());

    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|p| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || insert_many(&store, p, 50))
        })
        .collect();
    let ips: Vec<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    assert_eq!(ips.len(), 100);
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 100);
    assert_eq!(store.list_leases().unwrap().len(), 100);
}

#[test]
fn concurrent_inserts_through_two_connections_get_distinct_ips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());

    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|p| {
            let path = path.clone();
            std::thread::spawn(move || insert_many(&Store::open(&path).unwrap(), p, 50))
        })
        .collect();
    let ips: Vec<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 100);
    assert_eq!(
        Store::open(&path).unwrap().list_leases().unwrap().len(),
        100
    );
}

#[test]
fn sessions_are_replaced_per_vm_and_go_with_their_vm() {
    use crate::SessionRecord;
    let store = Store::open_in_memory().unwrap();
    store
        .insert_vm_with_lease(&vm("dev"), subnet(), &[])
        .unwrap();
    store
        .insert_vm_with_lease(&vm("other"), subnet(), &[])
        .unwrap();
    let rec = |vm: &str, name: &str, json: &str| SessionRecord {
        vm_id: format!("id-{vm}"),
        name: name.into(),
        info_json: json.into(),
        updated_at: "t".into(),
    };
    store.upsert_session(&rec("dev", "b", "1")).unwrap();
    store.upsert_session(&rec("dev", "a", "1")).unwrap();
    store.upsert_session(&rec("dev", "a", "2")).unwrap();
    store.upsert_session(&rec("other", "a", "x")).unwrap();
    let names = |vm: &str| {
        store
            .list_sessions(vm)
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.info_json))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names("id-dev"),
        vec![("a".into(), "2".into()), ("b".into(), "1".into())]
    );

    store
        .replace_sessions("id-dev", &[rec("dev", "c", "3")])
        .unwrap();
    assert_eq!(names("id-dev"), vec![("c".into(), "3".into())]);
    store.delete_session("id-dev", "c").unwrap();
    assert!(names("id-dev").is_empty());

    // Deleting the VM deletes its sessions.
    store.delete_vm("id-other").unwrap();
    assert!(names("id-other").is_empty());
}
