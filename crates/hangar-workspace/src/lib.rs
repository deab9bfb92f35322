//! Workspaces: a user's repository in a VM, and the VM's commits back.
//!
//! Host side only, run by the CLI as the invoking user (never by the
//! daemon): [`inspect`] reads the repository with `git`, [`write_pack`]
//! streams it (history bundle, staged and unstaged patches, untracked
//! files) for [`IMPORT_SCRIPT`], which the CLI runs in the guest through the
//! exec stream with the pack as its standard input. [`EXPORT_SCRIPT`]
//! writes a bundle of the guest's new commits to standard output, and
//! [`fetch_bundle`] takes exactly one ref of it into the user's repository
//! as a branch, without hooks and without touching the working tree.

mod error;
mod export;
mod git;
mod inspect;
mod pack;
mod scripts;

pub use error::WorkspaceError;
pub use export::{fetch_bundle, ExportOutcome, EXPORT_REF};
pub use inspect::{inspect, GitRepo, PlainDir, Remote, Source};
pub use pack::{write_pack, PackOptions, PackSummary};
pub use scripts::{
    default_dest, export_command, import_command, parse_probe, parse_status, probe_command,
    status_command, GuestStatus, Probe, EXPORT_NOTHING_EXIT, EXPORT_SCRIPT, IMPORT_SCRIPT,
    PROBE_SCRIPT, STATUS_SCRIPT,
};
