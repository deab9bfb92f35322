//! Asynchronous operations: long work (VM create, image pull) begins at once
//! and is followed through its status.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiError;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    VmCreate,
    VmStart,
    VmStop,
    VmRestart,
    ImagePull,
    ImageImport,
    ImagePromote,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::VmCreate => "vm_create",
            OpKind::VmStart => "vm_start",
            OpKind::VmStop => "vm_stop",
            OpKind::VmRestart => "vm_restart",
            OpKind::ImagePull => "image_pull",
            OpKind::ImageImport => "image_import",
            OpKind::ImagePromote => "image_promote",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "vm_create" => OpKind::VmCreate,
            "vm_start" => OpKind::VmStart,
            "vm_stop" => OpKind::VmStop,
            "vm_restart" => OpKind::VmRestart,
            "image_pull" => OpKind::ImagePull,
            "image_import" => OpKind::ImageImport,
            "image_promote" => OpKind::ImagePromote,
            _ => return None,
        })
    }
}

/// Where an operation is; every state but `running` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OpState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, OpState::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => OpState::Running,
            "succeeded" => OpState::Succeeded,
            "failed" => OpState::Failed,
            "cancelled" => OpState::Cancelled,
            _ => return None,
        })
    }
}

/// Where a running operation is: a phase name and, when countable, how far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Short phase, e.g. `debootstrap`, `boot`, `wait-ssh`.
    pub phase: String,
    #[serde(default)]
    pub current: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
    /// Unit of current/total: `bytes` or `steps`.
    #[serde(default)]
    pub unit: Option<String>,
    /// A line of detail (last line of a tool's output, for instance).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A long-running piece of work (`GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    /// What it acts on: a VM or image name.
    pub target: String,
    pub state: OpState,
    pub progress: Progress,
    /// Set when succeeded (e.g. the VmInfo of a created VM).
    pub result: Option<serde_json::Value>,
    /// Set when failed or cancelled.
    pub error: Option<ApiError>,
    pub created_at: String,
    pub updated_at: String,
}
