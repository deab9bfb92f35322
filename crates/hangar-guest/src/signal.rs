//! Maps the signal name in an SSH `exit-signal` to the shell convention
//! 128 + signal number, so callers see one integer for every outcome.

use russh::Sig;

/// What a command killed by an unknown signal reports (OpenSSH's client
/// uses the same value when it cannot report a proper status).
pub(crate) const UNKNOWN_SIGNAL_STATUS: i32 = 255;

pub(crate) fn exit_code_for_signal(sig: &Sig) -> i32 {
    match signal_number(sig) {
        Some(n) => 128 + n,
        None => UNKNOWN_SIGNAL_STATUS,
    }
}

/// Linux signal numbers (x86-64/arm64 share them for these names).
fn signal_number(sig: &Sig) -> Option<i32> {
    let n = match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => return custom_signal_number(name),
    };
    Some(n)
}

fn custom_signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    let n = match name {
        "TRAP" => 5,
        "BUS" => 7,
        "USR2" => 12,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_maps_to_137() {
        assert_eq!(exit_code_for_signal(&Sig::KILL), 137);
    }

    #[test]
    fn term_maps_to_143() {
        assert_eq!(exit_code_for_signal(&Sig::TERM), 143);
    }

    #[test]
    fn custom_usr2_maps_to_140() {
        assert_eq!(exit_code_for_signal(&Sig::Custom("USR2".into())), 140);
    }

    #[test]
    fn unknown_signal_maps_to_255() {
        assert_eq!(exit_code_for_signal(&Sig::Custom("NOPE".into())), 255);
    }
}
