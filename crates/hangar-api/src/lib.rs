//! Types shared by the daemon, the CLI and tests: the `/v1` HTTP+JSON API
//! contract. No I/O lives here.

pub mod error;
pub mod image;
pub mod info;
pub mod name;
pub mod op;
pub mod session;
pub mod size;
pub mod stream;
pub mod tree;
pub mod vm;

pub use error::{ApiError, ErrorKind};
pub use image::{
    BundleQuery, ImageFiles, ImageInfo, ImportImageQuery, PromoteImageRequest, PullImageRequest,
    RegisterImageRequest, TagImageRequest, UploadImageQuery, UPLOAD_DIGEST_LEN,
};
pub use info::DaemonInfo;
pub use op::{OpKind, OpState, Operation, Progress};
pub use session::{
    AttachQuery, SendSessionRequest, SessionInfo, SessionLogsQuery, SessionState,
    StartSessionRequest, StopSessionRequest,
};
pub use vm::{
    validate_user_name, CreateVmRequest, ExecRequest, GuestFileQuery, GuestFileWritten,
    GuestTreeQuery, GuestTreeWritten, VmInfo, VmState,
};
