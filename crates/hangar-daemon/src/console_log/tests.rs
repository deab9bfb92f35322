#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;

use super::prune::prune_failed_logs;
use super::{older_part, ConsoleLogs};

/// A writer like the VMM's: O_APPEND.
fn appender(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

fn read_all(logs: &ConsoleLogs, log: &Path, from: Option<u64>) -> (u64, Vec<u8>) {
    let view = logs.view(log).unwrap();
    let start = view.answer_start(from, Some(view.file_id), None);
    let mut out = Vec::new();
    view.into_reader(start, u64::MAX)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    (start, out)
}

#[test]
fn a_log_past_the_cap_moves_to_the_older_part_and_the_writer_goes_on_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let logs = ConsoleLogs::new(100);
    let mut w = appender(&log);
    w.write_all(&[b'a'; 80]).unwrap();
    assert!(!logs.rotate_if_over(&log).unwrap(), "under the cap");
    w.write_all(&[b'b'; 40]).unwrap();
    assert!(logs.rotate_if_over(&log).unwrap());
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    // The older part keeps the newest `cap` bytes of what was rotated.
    let older = std::fs::read(older_part(&log)).unwrap();
    assert_eq!(older.len(), 100);
    assert!(older.ends_with(&[b'b'; 40]));
    w.write_all(b"new").unwrap();
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"new",
        "an O_APPEND writer continues at the new end, with no hole"
    );
}

#[test]
fn readers_see_both_parts_as_one_stream_whose_offsets_survive_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let logs = ConsoleLogs::new(100);
    let mut w = appender(&log);
    w.write_all(&[b'1'; 60]).unwrap();
    let (start, first) = read_all(&logs, &log, None);
    assert_eq!((start, first.len()), (0, 60));

    // A follower holds offset 60; 60 more bytes arrive, then a rotation.
    w.write_all(&[b'2'; 60]).unwrap();
    assert!(logs.rotate_if_over(&log).unwrap());
    w.write_all(b"after").unwrap();
    let (start, next) = read_all(&logs, &log, Some(60));
    assert_eq!(start, 60);
    let mut want = vec![b'2'; 60];
    want.extend_from_slice(b"after");
    assert_eq!(
        next, want,
        "the follower misses nothing across the rotation"
    );

    // The whole view: the older part (its newest 100 bytes) then the new.
    let (start, all) = read_all(&logs, &log, None);
    assert_eq!(start, 20, "the first 20 bytes were dropped");
    assert_eq!(all.len(), 105);
    assert!(all.ends_with(b"2after"));

    // An offset that was rotated away starts at the oldest byte kept.
    let (start, _) = read_all(&logs, &log, Some(5));
    assert_eq!(start, 20);
}

#[test]
fn a_tail_spans_both_parts_and_a_new_boot_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let logs = ConsoleLogs::new(100);
    let mut w = appender(&log);
    w.write_all(&[b'x'; 150]).unwrap();
    logs.rotate_if_over(&log).unwrap();
    w.write_all(b"tail").unwrap();
    let view = logs.view(&log).unwrap();
    let start = view.answer_start(None, None, Some(10));
    let mut out = Vec::new();
    view.into_reader(start, 10)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, b"xxxxxxtail");

    logs.start_over(&log);
    assert!(!log.exists() && !older_part(&log).exists());
    std::fs::write(&log, b"boot 2").unwrap();
    let (start, all) = read_all(&logs, &log, None);
    assert_eq!((start, all.as_slice()), (0, &b"boot 2"[..]));
}

#[test]
fn a_log_left_by_an_earlier_daemon_is_read_and_rotated_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    std::fs::write(older_part(&log), [b'o'; 50]).unwrap();
    let mut w = appender(&log);
    w.write_all(&[b'n'; 300]).unwrap();
    // A new daemon, and a log far past the cap (the daemon was away).
    let logs = ConsoleLogs::new(100);
    let (start, all) = read_all(&logs, &log, None);
    assert_eq!((start, all.len()), (0, 350));
    assert!(logs.rotate_if_over(&log).unwrap());
    assert_eq!(std::fs::read(older_part(&log)).unwrap(), vec![b'n'; 100]);
    let (start, all) = read_all(&logs, &log, None);
    assert_eq!((start, all.len()), (250, 100));
}

#[test]
fn a_missing_log_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let logs = ConsoleLogs::new(100);
    let (start, all) = read_all(&logs, &dir.path().join("serial.log"), None);
    assert_eq!((start, all.len()), (0, 0));
}

#[test]
fn the_keeper_pass_rotates_every_vm_over_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    for (vm, size) in [("vm-a", 500), ("vm-b", 50)] {
        std::fs::create_dir(dir.path().join(vm)).unwrap();
        std::fs::write(dir.path().join(vm).join("serial.log"), vec![b'z'; size]).unwrap();
    }
    ConsoleLogs::new(100).keep_all(dir.path(), "serial.log");
    let len = |vm: &str| {
        std::fs::metadata(dir.path().join(vm).join("serial.log"))
            .unwrap()
            .len()
    };
    assert_eq!((len("vm-a"), len("vm-b")), (0, 50));
}

#[test]
fn pruning_keeps_the_newest_failed_create_logs() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5u64 {
        let p = dir.path().join(format!("vm{i}-id{i}.serial.log"));
        std::fs::write(&p, "boot failed").unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    std::fs::write(dir.path().join("other.txt"), "not a console log").unwrap();
    assert_eq!(prune_failed_logs(dir.path(), 2), 3);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["other.txt", "vm3-id3.serial.log", "vm4-id4.serial.log"]
    );
}

#[test]
fn a_link_or_a_fifo_in_place_of_the_log_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, vec![b's'; 500]).unwrap();
    let logs = ConsoleLogs::new(100);

    // A symlink to another file: not read, not copied, not truncated.
    let log = dir.path().join("vm-a").join("serial.log");
    std::fs::create_dir(log.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    assert!(logs.rotate_if_over(&log).is_err());
    assert!(logs.view(&log).is_err());
    // A hard link to it: the same.
    let hard = dir.path().join("vm-b").join("serial.log");
    std::fs::create_dir(hard.parent().unwrap()).unwrap();
    std::fs::hard_link(&secret, &hard).unwrap();
    assert!(logs.rotate_if_over(&hard).is_err());
    assert!(logs.view(&hard).is_err());
    assert_eq!(std::fs::read(&secret).unwrap(), vec![b's'; 500]);
    assert!(!older_part(&log).exists() && !older_part(&hard).exists());

    // A FIFO: refused at once, without waiting for a writer.
    let fifo = dir.path().join("vm-c").join("serial.log");
    std::fs::create_dir(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    assert!(logs.view(&fifo).is_err());
    assert!(logs.rotate_if_over(&fifo).is_err());
}

#[test]
fn a_log_that_keeps_failing_is_reported_once_and_forgotten_when_gone() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, vec![b's'; 500]).unwrap();
    std::fs::create_dir(dir.path().join("vm-a")).unwrap();
    let log = dir.path().join("vm-a").join("serial.log");
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let logs = ConsoleLogs::new(100);
    let failing = |logs: &ConsoleLogs| logs.failing.lock().unwrap().len();
    logs.keep_all(dir.path(), "serial.log");
    logs.keep_all(dir.path(), "serial.log");
    assert_eq!(
        failing(&logs),
        1,
        "one entry, warned on its first failure only"
    );
    assert_eq!(std::fs::read(&secret).unwrap().len(), 500);
    std::fs::remove_file(&log).unwrap();
    logs.keep_all(dir.path(), "serial.log");
    assert_eq!(failing(&logs), 0);
}
