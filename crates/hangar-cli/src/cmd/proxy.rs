//! `hangar proxy VM [PORT]`: standard input and output become one TCP
//! connection to the VM's port, through the daemon (which reaches guests
//! inside the VM network namespace). Made for OpenSSH:
//! `ssh -o ProxyCommand='hangar proxy %h' root@dev`, and so scp, sftp,
//! `ssh -L`, `ssh -A` and VS Code Remote-SSH.

use hangar_api::ApiError;
use tokio::io::AsyncWriteExt;

use super::seg;
use crate::args::ProxyArgs;
use crate::client::Client;

/// The VM of a host name: `dev.hangar` (an ssh-config alias) is `dev`.
/// VM names are DNS labels, so the suffix is never part of one.
fn vm_name(host: &str) -> &str {
    host.strip_suffix(super::ssh_config::HOST_SUFFIX)
        .unwrap_or(host)
}

pub async fn run(client: &Client, a: &ProxyArgs) -> Result<(), ApiError> {
    let name = vm_name(&a.name);
    let path = format!("/v1/vms/{}/tcp/{}", seg(name), a.port());
    let stream = client.upgrade_tcp(&path).await?;
    let (mut from_vm, mut to_vm) = tokio::io::split(stream);
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    // Either direction may end first: ssh closes its stdin only when it is
    // done, and the guest closes the connection when its server is.
    let upload = async {
        let r = tokio::io::copy(&mut stdin, &mut to_vm).await;
        let _ = to_vm.shutdown().await;
        r
    };
    let download = async {
        let r = tokio::io::copy(&mut from_vm, &mut stdout).await;
        let _ = stdout.flush().await;
        r
    };
    tokio::select! {
        r = download => r.map(drop),
        r = upload => match r {
            // stdin ended: keep delivering what the VM still sends.
            Ok(_) => {
                let r = tokio::io::copy(&mut from_vm, &mut stdout).await;
                let _ = stdout.flush().await;
                r.map(drop)
            }
            Err(e) => Err(e),
        },
    }
    .map_err(|e| ApiError::internal(format!("proxy stream to VM {name:?} broke: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_config_alias_names_its_vm() {
        assert_eq!(vm_name("dev.hangar"), "dev");
        assert_eq!(vm_name("dev"), "dev");
    }
}
