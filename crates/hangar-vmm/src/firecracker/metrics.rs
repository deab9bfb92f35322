//! Reading Firecracker's metrics file (`vm_dir/metrics.json`).
//!
//! Firecracker appends one JSON object per line: every 60 s and on
//! `PUT /actions {"action_type": "FlushMetrics"}`. Counters are *deltas
//! since the previous flush* (Firecracker's `SharedIncMetric` resets on
//! serialisation), so the latest line says what happened in the last
//! interval, not since boot. A line may be half-written while we read, so
//! only newline-terminated lines that parse count.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::METRICS_FILE;

/// How much of the file's end is read; one Firecracker line is ~10 KiB,
/// so this holds several while keeping a long-running VM's file cheap.
const TAIL_BYTES: u64 = 256 * 1024;

/// The few numbers the daemon shows, from one metrics line. `None` when
/// the section or field is absent (older or newer Firecracker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// Sum of `vcpu.exit_io_in`, `exit_io_out`, `exit_mmio_read`,
    /// `exit_mmio_write` (the KVM exits Firecracker handles itself).
    pub vcpu_exits: Option<u64>,
    /// `block.read_bytes` (aggregate over all drives).
    pub block_read_bytes: Option<u64>,
    /// `block.write_bytes`.
    pub block_write_bytes: Option<u64>,
    /// `net.rx_bytes_count` (aggregate over all interfaces).
    pub net_rx_bytes: Option<u64>,
    /// `net.tx_bytes_count`.
    pub net_tx_bytes: Option<u64>,
}

/// The last complete metrics object in `vm_dir/metrics.json`, or `None`
/// when the file is missing, empty or holds no complete object yet.
pub fn read_latest_metrics(vm_dir: &Path) -> Option<Value> {
    let mut file = std::fs::File::open(vm_dir.join(METRICS_FILE)).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    latest_complete_object(&buf)
}

/// The last newline-terminated line of `text` that is a JSON object. A
/// trailing line without newline is still being written and is skipped.
pub fn latest_complete_object(text: &[u8]) -> Option<Value> {
    let complete = &text[..text.iter().rposition(|b| *b == b'\n')? + 1];
    complete
        .split(|b| *b == b'\n')
        .rev()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .find_map(|l| {
            serde_json::from_slice::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
}

/// Extracts the [`MetricsSummary`] fields from one metrics object.
pub fn summarize_metrics(v: &Value) -> MetricsSummary {
    let field = |section: &str, name: &str| v.get(section)?.get(name)?.as_u64();
    let exits: Vec<u64> = [
        "exit_io_in",
        "exit_io_out",
        "exit_mmio_read",
        "exit_mmio_write",
    ]
    .iter()
    .filter_map(|n| field("vcpu", n))
    .collect();
    MetricsSummary {
        vcpu_exits: (!exits.is_empty()).then(|| exits.iter().sum()),
        block_read_bytes: field("block", "read_bytes"),
        block_write_bytes: field("block", "write_bytes"),
        net_rx_bytes: field("net", "rx_bytes_count"),
        net_tx_bytes: field("net", "tx_bytes_count"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LINE_1: &str = r#"{"utc_timestamp_ms":1,"vcpu":{"exit_io_in":1,"exit_io_out":2,"exit_mmio_read":3,"exit_mmio_write":4,"failures":0},"block":{"read_bytes":4096,"write_bytes":512,"read_count":1},"net":{"rx_bytes_count":100,"tx_bytes_count":200}}"#;
    const LINE_2: &str = r#"{"utc_timestamp_ms":2,"vcpu":{"exit_io_in":10,"exit_io_out":0,"exit_mmio_read":0,"exit_mmio_write":0},"block":{"read_bytes":8192,"write_bytes":0},"net":{"rx_bytes_count":7,"tx_bytes_count":9}}"#;

    #[test]
    fn latest_object_is_the_last_complete_line() {
        let text = format!("{LINE_1}\n{LINE_2}\n");
        let v = latest_complete_object(text.as_bytes()).unwrap();
        assert_eq!(v["utc_timestamp_ms"], 2);
    }

    #[test]
    fn latest_object_skips_a_half_written_last_line() {
        let text = format!("{LINE_1}\n{}", &LINE_2[..40]);
        let v = latest_complete_object(text.as_bytes()).unwrap();
        assert_eq!(v["utc_timestamp_ms"], 1);
    }

    #[test]
    fn latest_object_skips_a_garbled_line_and_blank_lines() {
        let text = format!("{LINE_1}\n{{\"broken\n\n");
        let v = latest_complete_object(text.as_bytes()).unwrap();
        assert_eq!(v["utc_timestamp_ms"], 1);
    }

    #[test]
    fn latest_object_of_empty_or_unterminated_text_is_none() {
        assert_eq!(latest_complete_object(b""), None);
        assert_eq!(latest_complete_object(LINE_1.as_bytes()), None);
    }

    #[test]
    fn read_latest_metrics_reads_vm_dir_metrics_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(METRICS_FILE),
            format!("{LINE_1}\n{LINE_2}\n"),
        )
        .unwrap();
        let v = read_latest_metrics(dir.path()).unwrap();
        assert_eq!(v["utc_timestamp_ms"], 2);
    }

    #[test]
    fn read_latest_metrics_without_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_latest_metrics(dir.path()), None);
    }

    #[test]
    fn read_latest_metrics_of_a_large_file_reads_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        while text.len() < (TAIL_BYTES as usize) * 2 {
            text.push_str(LINE_1);
            text.push('\n');
        }
        text.push_str(LINE_2);
        text.push('\n');
        std::fs::write(dir.path().join(METRICS_FILE), text).unwrap();
        let v = read_latest_metrics(dir.path()).unwrap();
        assert_eq!(v["utc_timestamp_ms"], 2);
    }

    #[test]
    fn summarize_extracts_firecracker_field_names() {
        let v: Value = serde_json::from_str(LINE_1).unwrap();
        assert_eq!(
            summarize_metrics(&v),
            MetricsSummary {
                vcpu_exits: Some(10),
                block_read_bytes: Some(4096),
                block_write_bytes: Some(512),
                net_rx_bytes: Some(100),
                net_tx_bytes: Some(200),
            }
        );
    }

    #[test]
    fn summarize_with_missing_sections_gives_none() {
        let s = summarize_metrics(&json!({"utc_timestamp_ms": 1, "block": {"read_bytes": 1}}));
        assert_eq!(s.vcpu_exits, None);
        assert_eq!(s.block_read_bytes, Some(1));
        assert_eq!(s.block_write_bytes, None);
        assert_eq!(s.net_rx_bytes, None);
    }
}
