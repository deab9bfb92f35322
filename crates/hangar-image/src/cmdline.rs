//! The guest kernel command line: the boot contract between the VMM driver
//! and our initramfs.

/// Per-boot knobs of the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineOptions {
    /// `tsc_early_khz`: required on QEMU microvm under TCG (no HPET/PM
    /// timer; PIT calibration fails at random and the boot hangs). Use
    /// [`host_tsc_khz`]. Harmless elsewhere.
    pub tsc_khz: Option<u64>,
    /// Appended as is (e.g. VM capability hooks).
    pub extra: Vec<String>,
}

/// Builds the command line for images made by this crate.
pub fn kernel_cmdline(opts: &CmdlineOptions) -> String {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "quiet",
        "cryptomgr.notests",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.nopnp",
        "i8042.dumbkbd",
        "random.trust_cpu=on",
        "rdinit=/init",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(khz) = opts.tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    parts.extend(opts.extra.iter().cloned());
    parts.join(" ")
}

/// The host CPU clock in kHz, from the first `cpu MHz` of /proc/cpuinfo.
pub fn host_tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_khz_from_cpuinfo(&text)
}

pub(crate) fn tsc_khz_from_cpuinfo(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .find_map(|l| l.split_once(':'))
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|mhz| *mhz > 0.0)
        .map(|mhz| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_has_console_panic_and_rdinit() {
        let c = kernel_cmdline(&CmdlineOptions::default());

        for want in [
            "console=ttyS0",
            "panic=-1",
            "reboot=k",
            "rdinit=/init",
            "quiet",
        ] {
            assert!(c.split(' ').any(|p| p == want), "missing {want} in {c}");
        }
        assert!(!c.contains("tsc_early_khz"));
    }

    #[test]
    fn cmdline_adds_tsc_and_extra_at_end() {
        let c = kernel_cmdline(&CmdlineOptions {
            tsc_khz: Some(2_500_000),
            extra: vec!["foo=bar".into()],
        });

        assert!(c.contains(" tsc_early_khz=2500000 "));
        assert!(c.ends_with(" foo=bar"));
    }

    #[test]
    fn tsc_khz_parses_cpuinfo_mhz() {
        let text = "processor\t: 0\ncpu MHz\t\t: 2499.998\ncache size\t: 1 KB\n";

        assert_eq!(tsc_khz_from_cpuinfo(text), Some(2_499_998));
    }

    #[test]
    fn tsc_khz_without_mhz_is_none() {
        assert_eq!(tsc_khz_from_cpuinfo("processor: 0\n"), None);
    }
}
