//! Decides whether guests run under KVM or TCG.
//!
//! `/dev/kvm` existing is not enough: on hosts that are themselves PVM
//! guests (`kvm_pvm` module, no VMX/SVM), KVM ioctls work but a stock kernel
//! hangs early ("Probing EDD" / emulation failure). The decision is a pure
//! function over what was observed so it can be unit-tested; [`detect`] is
//! the thin I/O wrapper.

use std::fs::OpenOptions;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's portable binary translator (slow, but boots anything).
    Tcg,
}

impl Accel {
    /// The value for QEMU's `-accel` option.
    pub fn qemu_accel_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        }
    }

    /// The value for QEMU's `-cpu` option.
    pub fn qemu_cpu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

/// The chosen accelerator and a human-readable reason (shown by `doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// Pure decision: KVM only when `/dev/kvm` opens read-write, the CPU
/// advertises `vmx` or `svm`, and KVM is not the PVM flavour.
pub fn decide(kvm_open_ok: bool, cpu_flags: &[String], loaded_modules: &[String]) -> AccelDecision {
    let has_hw_virt = cpu_flags.iter().any(|f| f == "vmx" || f == "svm");
    let pvm = loaded_modules.iter().any(|m| m == "kvm_pvm");
    if !kvm_open_ok {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm cannot be opened read-write (missing, or no permission); using TCG \
                     (software emulation, slow)"
                .to_string(),
        };
    }
    if pvm && !has_hw_virt {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm is PVM-based KVM (kvm_pvm module loaded, no vmx/svm CPU flags): \
                     a stock guest kernel hangs under it (\"Probing EDD\" / emulation failure), \
                     so TCG is used"
                .to_string(),
        };
    }
    if !has_hw_virt {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "/dev/kvm opens but /proc/cpuinfo has no vmx or svm flag (no hardware \
                     virtualisation exposed); using TCG"
                .to_string(),
        };
    }
    AccelDecision {
        accel: Accel::Kvm,
        reason: "/dev/kvm opens read-write and the CPU has hardware virtualisation (vmx/svm); \
                 using KVM"
            .to_string(),
    }
}

/// Observes the host and decides. Never fails: anything unreadable counts
/// as "not available", which leads to the safe choice (TCG).
pub fn detect() -> AccelDecision {
    detect_with(std::path::Path::new("/dev/kvm"))
}

/// Like [`detect`], with the KVM device at `kvm_device` (configurable so a
/// host without KVM can be simulated).
pub fn detect_with(kvm_device: &std::path::Path) -> AccelDecision {
    let kvm_open_ok = kvm_device_usable(kvm_device).is_ok();
    let cpu_flags = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| parse_cpu_flags(&s))
        .unwrap_or_default();
    let decision = decide(kvm_open_ok, &cpu_flags, &loaded_modules());
    tracing::debug!(accel = ?decision.accel, reason = %decision.reason, "accelerator chosen");
    decision
}

/// Opens the KVM device read-write, as a VMM would.
pub fn kvm_device_usable(kvm_device: &std::path::Path) -> std::io::Result<()> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm_device)
        .map(|_| ())
}

/// Flags of the first `flags` line of /proc/cpuinfo.
pub fn parse_cpu_flags(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Loaded kernel modules: /proc/modules when present, else the names under
/// /sys/module (some sandboxed kernels hide /proc/modules).
fn loaded_modules() -> Vec<String> {
    if let Ok(s) = std::fs::read_to_string("/proc/modules") {
        return s
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
    }
    std::fs::read_dir("/sys/module")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn decide_with_vmx_and_kvm_returns_kvm() {
        let d = decide(
            true,
            &strings(&["sse", "vmx"]),
            &strings(&["kvm", "kvm_intel"]),
        );
        assert_eq!(d.accel, Accel::Kvm);
    }

    #[test]
    fn decide_with_svm_and_kvm_returns_kvm() {
        let d = decide(true, &strings(&["svm"]), &strings(&["kvm", "kvm_amd"]));
        assert_eq!(d.accel, Accel::Kvm);
    }

    #[test]
    fn decide_with_pvm_and_no_vmx_returns_tcg_explaining_pvm() {
        let d = decide(
            true,
            &strings(&["sse", "avx2"]),
            &strings(&["kvm", "kvm_pvm"]),
        );
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("PVM"), "{}", d.reason);
        assert!(d.reason.contains("TCG"), "{}", d.reason);
        assert!(d.reason.contains("Probing EDD"), "{}", d.reason);
    }

    #[test]
    fn decide_when_kvm_does_not_open_returns_tcg() {
        let d = decide(false, &strings(&["vmx"]), &strings(&["kvm", "kvm_intel"]));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("/dev/kvm"), "{}", d.reason);
    }

    #[test]
    fn decide_without_hw_flags_returns_tcg() {
        let d = decide(true, &strings(&["sse"]), &strings(&["kvm"]));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("vmx"), "{}", d.reason);
    }

    #[test]
    fn parse_cpu_flags_reads_first_flags_line() {
        let info = "processor\t: 0\nflags\t\t: fpu vme vmx\n\nprocessor\t: 1\nflags\t\t: other\n";
        assert_eq!(parse_cpu_flags(info), strings(&["fpu", "vme", "vmx"]));
    }

    #[test]
    fn tcg_uses_multithreaded_translation_and_max_cpu() {
        assert_eq!(Accel::Tcg.qemu_accel_arg(), "tcg,thread=multi");
        assert_eq!(Accel::Tcg.qemu_cpu_arg(), "max");
        assert_eq!(Accel::Kvm.qemu_cpu_arg(), "host");
    }
}
