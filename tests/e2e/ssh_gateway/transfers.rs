//! Bulk transfers through the gateway: 100 MiB up and down with `scp` and with `sftp`, checksums
//! compared on both ends.

use std::path::Path;
use std::time::Duration;

use cloud_cli_proxy_tests::Node;
use cloud_cli_proxy_tests::fixtures;
use cloud_cli_proxy_tests::gateway::{Login, output, ssh_command};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(300);
const SIZE_MIB: usize = 100;

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scp_and_sftp_100_mib_each_way() {
    let node = Node::embedded(&[]).await;
    let hal = node.tenant("hal").await;
    let port = node.cp.ssh_port();
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    let status = std::process::Command::new("head")
        .args(["-c", &format!("{}", SIZE_MIB << 20), "/dev/urandom"])
        .stdout(std::fs::File::create(&up).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let sum = sha256(&up);
    let login = hal.login();
    let pw = Login::Password(hal.password.clone());

    // scp up, checksum in the host, scp back down.
    let mut scp = ssh_command(port, &login, &pw, "scp");
    scp.arg(&up).arg(format!("{login}@127.0.0.1:scp.bin"));
    let out = output(scp, None, LIMIT).await;
    assert!(out.success(), "scp up: {out:?}");
    let mut cmd = node.gateway_ssh(&login, &pw);
    cmd.arg("sha256sum scp.bin");
    let out = output(cmd, None, LIMIT).await;
    assert!(
        out.stdout.starts_with(&sum),
        "checksum in the host after scp: {out:?}"
    );
    let down = dir.path().join("scp-down.bin");
    let mut scp = ssh_command(port, &login, &pw, "scp");
    scp.arg(format!("{login}@127.0.0.1:scp.bin")).arg(&down);
    let out = output(scp, None, LIMIT).await;
    assert!(out.success(), "scp down: {out:?}");
    assert_eq!(sha256(&down), sum, "scp down changed the file");

    // sftp in batch mode (which allows no password prompt): with the user's key.
    let fixtures::SshKeyPair {
        private_path: key,
        public_line: public,
        ..
    } = fixtures::ssh_keygen(dir.path(), "id_hal");
    node.admin
        .post(
            &format!("/v1/admin/users/{}/ssh-keys", hal.host.user_id),
            json!({ "public_key": public }),
        )
        .await
        .expect(201);
    let sftp_down = dir.path().join("sftp-down.bin");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} sftp.bin\nget sftp.bin {}\n",
            up.display(),
            sftp_down.display()
        ),
    )
    .unwrap();
    let mut sftp = ssh_command(port, &login, &Login::KeyFile(key), "sftp");
    sftp.arg("-b").arg(&batch).arg(format!("{login}@127.0.0.1"));
    let out = output(sftp, None, LIMIT).await;
    assert!(out.success(), "sftp: {out:?}");
    assert_eq!(sha256(&sftp_down), sum, "sftp round trip changed the file");
    let mut cmd = node.gateway_ssh(&login, &pw);
    cmd.arg("sha256sum sftp.bin");
    let out = output(cmd, None, LIMIT).await;
    assert!(
        out.stdout.starts_with(&sum),
        "checksum in the host after sftp: {out:?}"
    );
}
