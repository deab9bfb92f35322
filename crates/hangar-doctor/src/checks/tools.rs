//! Tools checked for presence on `PATH` only. Each subsystem declares the
//! tools it runs ([`Tool`]); [`check_tool`] judges them alike.

use hangar_config::Config;

use crate::report::{Check, Level};
use crate::HostProbe;

/// A tool a subsystem runs.
pub struct Tool {
    pub bin: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// What it is needed for, for the check's description.
    pub why: &'static str,
    /// Whether this config needs it: missing is a failure when it does and
    /// a warning when it does not.
    pub required: fn(&Config) -> bool,
}

/// For tools every config needs.
pub fn always(_: &Config) -> bool {
    true
}

pub fn check_tool(p: &HostProbe, config: &Config, tool: &Tool) -> Check {
    let name = tool.bin;
    let what = format!("{name} is on PATH ({})", tool.why);
    match p.tools.get(name).and_then(Option::as_ref) {
        Some(path) => Check::new(name, &what, Level::Ok, format!("found {}", path.display())),
        None => Check::new(
            name,
            &what,
            if (tool.required)(config) {
                Level::Fail
            } else {
                Level::Warn
            },
            format!("{name} not found"),
        )
        .fix(format!("apt-get install {}", tool.package)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::healthy_host;

    const TOOL: Tool = Tool {
        bin: "frob",
        package: "frobnicate",
        why: "frobs things",
        required: always,
    };

    fn never(_: &Config) -> bool {
        false
    }

    #[test]
    fn found_tool_is_ok_with_its_path() {
        let mut p = healthy_host();
        p.tools.insert("frob".into(), Some("/usr/bin/frob".into()));

        let c = check_tool(&p, &Config::default(), &TOOL);

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.what, "frob is on PATH (frobs things)");
        assert_eq!(c.result, "found /usr/bin/frob");
    }

    #[test]
    fn missing_tool_fails_when_required_and_warns_otherwise_with_apt_fix() {
        let p = healthy_host();
        let optional = Tool {
            required: never,
            ..TOOL
        };

        let needed = check_tool(&p, &Config::default(), &TOOL);
        let not_needed = check_tool(&p, &Config::default(), &optional);

        assert_eq!(needed.level, Level::Fail);
        assert_eq!(needed.result, "frob not found");
        assert_eq!(needed.fix.as_deref(), Some("apt-get install frobnicate"));
        assert_eq!(not_needed.level, Level::Warn);
    }
}
