//! A recording [`DmOps`] for unit tests: models loop devices (with the
//! kernel's lazy-detach/autoclear rule) and dm devices (busy while another
//! dm device's table uses them), records every call with its thread, and can
//! fail the Nth call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use super::ops::{DmOps, LoopInfo};
use crate::StorageError;

#[derive(Debug, Clone)]
pub(crate) struct FakeLoop {
    pub file: PathBuf,
    pub read_only: bool,
    pub autoclear: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<(ThreadId, String)>,
    loops: BTreeMap<String, FakeLoop>,
    dms: BTreeMap<String, String>,
    next_loop: u32,
}

impl State {
    /// Attaches `file` at the next free loop number and names the device.
    fn add_loop(&mut self, file: &Path, read_only: bool, autoclear: bool) -> String {
        let dev = format!("/dev/loop{}", self.next_loop);
        self.next_loop += 1;
        self.loops.insert(
            dev.clone(),
            FakeLoop {
                file: file.to_path_buf(),
                read_only,
                autoclear,
            },
        );
        dev
    }

    fn loop_held(&self, dev: &str) -> bool {
        self.dms
            .values()
            .any(|t| t.split_whitespace().any(|w| w == dev))
    }
    fn dm_held(&self, name: &str) -> bool {
        self.loop_held(&format!("/dev/mapper/{name}"))
    }
    /// The kernel detaches autoclear loops once nothing holds them.
    fn collect_autoclear(&mut self) {
        let gone: Vec<String> = self
            .loops
            .iter()
            .filter(|(d, l)| l.autoclear && !self.loop_held(d))
            .map(|(d, _)| d.clone())
            .collect();
        for d in gone {
            self.loops.remove(&d);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FakeOps {
    state: Mutex<State>,
    /// 0-based index of the call that fails.
    fail_at: Option<usize>,
    /// Pause inside every call, to give other threads a chance to interleave.
    delay: Option<Duration>,
}

fn fail(call: &str, why: &str) -> StorageError {
    use std::os::unix::process::ExitStatusExt;
    StorageError::Command(hangar_host::ToolError::Failed {
        command: format!("fake {call}"),
        // A wait status of 256 is exit code 1.
        status: std::process::ExitStatus::from_raw(256),
        output: why.to_string(),
    })
}

impl FakeOps {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn failing_at(n: usize) -> Self {
        Self {
            fail_at: Some(n),
            ..Self::default()
        }
    }
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.iter().map(|(_, c)| c.clone()).collect()
    }
    pub fn call_threads(&self) -> Vec<ThreadId> {
        self.lock().calls.iter().map(|(t, _)| *t).collect()
    }
    pub fn loops(&self) -> BTreeMap<String, FakeLoop> {
        self.lock().loops.clone()
    }
    pub fn dms(&self) -> BTreeMap<String, String> {
        self.lock().dms.clone()
    }
    /// Puts a loop device in place as if someone else had attached it.
    pub fn preattach(&self, file: &Path, autoclear: bool) -> String {
        self.lock().add_loop(file, false, autoclear)
    }
    /// Puts a dm device in place as if it were left from an earlier run.
    pub fn precreate(&self, name: &str, table: &str) {
        self.lock().dms.insert(name.to_string(), table.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Records the call; errors if it is the one chosen to fail.
    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, StorageError> {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let mut s = self.lock();
        let index = s.calls.len();
        s.calls.push((std::thread::current().id(), call.clone()));
        if self.fail_at == Some(index) {
            return Err(fail(&call, "injected failure"));
        }
        Ok(s)
    }
}

impl DmOps for FakeOps {
    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<String, StorageError> {
        let mode = if read_only { "ro" } else { "rw" };
        let mut s = self.enter(format!("loop_attach {} {mode}", file.display()))?;
        if !file.exists() {
            return Err(fail("loop_attach", "no such file"));
        }
        Ok(s.add_loop(file, read_only, false))
    }

    fn loop_detach(&self, device: &str) -> Result<(), StorageError> {
        let mut s = self.enter(format!("loop_detach {device}"))?;
        if !s.loops.contains_key(device) {
            return Err(fail("loop_detach", "no such loop device"));
        }
        if s.loop_held(device) {
            if let Some(l) = s.loops.get_mut(device) {
                l.autoclear = true;
            }
        } else {
            s.loops.remove(device);
        }
        Ok(())
    }

    fn dm_create(&self, name: &str, table: &str) -> Result<(), StorageError> {
        let mut s = self.enter(format!("dm_create {name} {}", table.replace('\n', " | ")))?;
        if s.dms.contains_key(name) {
            return Err(fail("dm_create", "device already exists"));
        }
        for w in table.split_whitespace().filter(|w| w.starts_with("/dev/")) {
            let known = s.loops.contains_key(w)
                || w.strip_prefix("/dev/mapper/")
                    .is_some_and(|n| s.dms.contains_key(n));
            if !known {
                return Err(fail("dm_create", "table references a missing device"));
            }
        }
        s.dms.insert(name.to_string(), table.to_string());
        Ok(())
    }

    fn dm_remove(&self, name: &str) -> Result<(), StorageError> {
        let mut s = self.enter(format!("dm_remove {name}"))?;
        if !s.dms.contains_key(name) {
            return Err(fail("dm_remove", "no such device"));
        }
        if s.dm_held(name) {
            return Err(fail("dm_remove", "device or resource busy"));
        }
        s.dms.remove(name);
        s.collect_autoclear();
        Ok(())
    }

    fn dm_exists(&self, name: &str) -> Result<bool, StorageError> {
        let s = self.enter(format!("dm_exists {name}"))?;
        Ok(s.dms.contains_key(name))
    }

    fn grow_ext4(&self, device: &Path) -> Result<(), StorageError> {
        self.enter(format!("grow_ext4 {}", device.display()))
            .map(drop)
    }

    fn dm_list(&self) -> Result<Vec<String>, StorageError> {
        let s = self.enter("dm_list".to_string())?;
        Ok(s.dms.keys().cloned().collect())
    }

    fn loop_list(&self) -> Result<Vec<LoopInfo>, StorageError> {
        let s = self.enter("loop_list".to_string())?;
        Ok(s.loops
            .iter()
            .map(|(d, l)| LoopInfo {
                device: d.clone(),
                backing_file: l.file.clone(),
                held_with_autoclear: l.autoclear && s.loop_held(d),
            })
            .collect())
    }
}
