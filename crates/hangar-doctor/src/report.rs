//! What doctor reports: one [`Check`] per thing it looked at, with a
//! [`Level`] and, when that is not ok, the fix. The CLI prints these (or
//! their JSON); nothing here looks at the host.

use serde::Serialize;

/// How a check came out. Ordered by severity, so the worst of a report is
/// its `max()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short stable identifier, e.g. `kvm`, `disk-space`.
    pub name: String,
    /// One line: what this check looks at.
    pub what: String,
    pub level: Level,
    pub result: String,
    /// What to do when the level is warn or fail.
    pub fix: Option<String>,
}

impl Check {
    pub fn new(name: &str, what: &str, level: Level, result: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            what: what.to_string(),
            level,
            result: result.into(),
            fix: None,
        }
    }

    /// The same check with the fix to show when it is not ok.
    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_severity_and_serialize_lowercase() {
        assert!(Level::Ok < Level::Warn && Level::Warn < Level::Fail);
        let c = Check::new("kvm", "w", Level::Warn, "r").fix("f");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["level"], "warn");
        assert_eq!(json["fix"], "f");
        assert_eq!(
            serde_json::to_value(Check::new("a", "w", Level::Ok, "r")).unwrap()["fix"],
            serde_json::Value::Null
        );
    }
}
