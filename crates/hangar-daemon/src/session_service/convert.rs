//! Between the API's session types and the guest agent's wire types.

use hangar_api::{SessionInfo, SessionState, StartSessionRequest};
use hangar_guest::session_proto as proto;
use hangar_host::time::format_unix;
use hangar_image::sources::RunConfig;

pub fn to_api(vm: &str, i: proto::SessionInfo) -> SessionInfo {
    SessionInfo {
        vm: vm.to_string(),
        name: i.name,
        command: i.argv,
        cwd: i.cwd,
        user: i.user,
        state: match i.state {
            proto::SessionState::Running => SessionState::Running,
            proto::SessionState::Exited => SessionState::Exited,
            proto::SessionState::Ended => SessionState::Ended,
        },
        exit_code: i.exit_code,
        signal: i.signal,
        end_reason: i.end_reason,
        started_at: format_unix(i.started_at),
        ended_at: i.ended_at.map(format_unix),
        clients: i.clients,
        log_bytes: i.log_bytes,
    }
}

/// The agent's start request: the image's run settings as defaults (its
/// user unless one is named, its Env before the request's own variables,
/// its WorkingDir unless a directory is named), as for exec.
pub fn start_request(req: StartSessionRequest, run: Option<RunConfig>) -> proto::StartRequest {
    let run = run.unwrap_or_default();
    let user = req.user.or_else(|| run.default_user());
    let env = run.env_with(req.env);
    proto::StartRequest {
        name: req.name,
        argv: req.command,
        cwd: req.cwd.or(run.working_dir),
        env,
        user,
        term: None,
        cols: req.cols,
        rows: req.rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_run_settings_are_defaults_the_request_overrides() {
        let run = RunConfig {
            env: vec!["PATH=/opt/bin:/bin".into(), "MODE=image".into()],
            user: Some("app:app".into()),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let req = StartSessionRequest {
            name: "web".into(),
            command: vec!["serve".into()],
            env: vec![("MODE".into(), "request".into())],
            ..Default::default()
        };
        let out = start_request(req.clone(), Some(run.clone()));
        assert_eq!(out.user.as_deref(), Some("app"));
        assert_eq!(out.cwd.as_deref(), Some("/srv"));
        assert_eq!(
            out.env,
            vec![
                ("PATH".to_string(), "/opt/bin:/bin".to_string()),
                ("MODE".to_string(), "request".to_string()),
            ]
        );
        let named = StartSessionRequest {
            user: Some("root".into()),
            cwd: Some("/tmp".into()),
            ..req
        };
        let out = start_request(named, Some(run));
        assert_eq!(
            (out.user.as_deref(), out.cwd.as_deref()),
            (Some("root"), Some("/tmp"))
        );
    }

    #[test]
    fn agent_times_become_rfc3339() {
        let info = proto::SessionInfo {
            name: "a".into(),
            argv: vec!["x".into()],
            cwd: None,
            user: "root".into(),
            state: proto::SessionState::Exited,
            exit_code: Some(0),
            signal: None,
            end_reason: None,
            started_at: 86_400,
            ended_at: Some(86_401),
            clients: 0,
            log_bytes: 5,
        };
        let api = to_api("dev", info);
        assert_eq!(api.started_at, "1970-01-02T00:00:00.000Z");
        assert_eq!(api.ended_at.as_deref(), Some("1970-01-02T00:00:01.000Z"));
        assert_eq!((api.vm.as_str(), api.state), ("dev", SessionState::Exited));
    }
}
