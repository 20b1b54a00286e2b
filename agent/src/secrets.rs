//! A host's secret files on the node: `<state>/<node>/hosts/<host_id>/secrets/`, bind-mounted read-only
//! at `/run/cloud-cli-proxy` in the host container, where `host-init` and `host-apply-secrets` read
//! them. Secrets never go into the container's environment or labels (they would show in
//! `docker inspect`), only into these root-owned files (directories 0700, files 0600).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use des::Des;
use des::cipher::{BlockEncrypt as _, KeyInit as _, generic_array::GenericArray};

/// File names inside the secrets directory, as `host-apply-secrets` expects them.
pub const PASSWORD_FILE: &str = "password.hash";
pub const AUTHORIZED_KEYS_FILE: &str = "authorized_keys";
pub const VNC_PASSWD_FILE: &str = "vnc.passwd";
/// The host sshd's private key (OpenSSH PEM), made here once per host and kept across rebuilds;
/// `host-init` installs it, and the gateways accept no other key from the host.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// Its public half, beside the secrets directory (never mounted): what the agent reports.
const HOST_KEY_PUB_FILE: &str = "ssh_host_ed25519_key.pub";
/// The tunnel runtime's configuration, in [`Store::egress_dir`] (its status file sits beside it).
pub use crate::egress_runtime::CONFIG_FILE as EGRESS_CONFIG_FILE;
/// Present while the host is meant to be stopped: the reconciler never starts such a host.
pub const STOPPED_MARKER: &str = "stopped";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host key: {0}")]
    HostKey(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Where this node keeps its hosts' files. Per node, so that two agents sharing a state directory
/// on one machine never see (and reconcile away) each other's files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path, node_name: &str) -> Self {
        Self {
            root: state_dir.join(node_name).join("hosts"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/<node>/hosts-subnet`: the subnet and gateway the node's hosts network had when it
    /// was first made, as `SUBNET GATEWAY`; the control plane holds the node to that subnet. Beside
    /// the hosts' directories, so the reconciler never takes it for one.
    pub fn hosts_subnet_file(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join("hosts-subnet")
    }

    /// The subnet and gateway recorded by [`Store::remember_hosts_subnet`], if any.
    pub fn hosts_subnet(&self) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.hosts_subnet_file()).ok()?;
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(subnet), Some(gateway), None) => Some((subnet.to_owned(), gateway.to_owned())),
            _ => None,
        }
    }

    /// Records the hosts network's subnet and gateway (written aside, then renamed into place).
    pub fn remember_hosts_subnet(&self, subnet: &str, gateway: &str) -> Result<(), Error> {
        let file = self.hosts_subnet_file();
        let dir = file.parent().unwrap_or(&self.root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        let staged = file.with_extension("new");
        std::fs::write(&staged, format!("{subnet} {gateway}\n")).map_err(io("write", &staged))?;
        std::fs::rename(&staged, &file).map_err(io("rename", &file))
    }

    /// `<root>/<host_id>`: everything the node keeps for one host. `host_id` is validated by the
    /// caller (no separators or dots).
    pub fn host_dir(&self, host_id: &str) -> PathBuf {
        self.root.join(host_id)
    }

    /// The directory mounted into the container.
    pub fn secrets_dir(&self, host_id: &str) -> PathBuf {
        self.host_dir(host_id).join("secrets")
    }

    /// Writes all three secret files atomically (each one replaced by rename, so a reader inside the
    /// container sees the old or the new file, never a partial one).
    pub fn write(&self, host_id: &str, secrets: &HostSecrets<'_>) -> Result<PathBuf, Error> {
        let dir = self.secrets_dir(host_id);
        create_private_dir(&dir)?;
        // The parents too: nothing under the state directory is readable by other users.
        for parent in [self.host_dir(host_id), self.root.clone()] {
            set_mode(&parent, 0o700)?;
        }
        // An empty secret is an absent file, which host-apply-secrets reads as "none" (no password
        // login, no gateway key, no desktop) rather than as a malformed file.
        let keys: Vec<&str> = secrets
            .authorized_keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        let password = secrets.password_crypt.trim();
        let files: [(&str, Option<Vec<u8>>); 3] = [
            (
                PASSWORD_FILE,
                (!password.is_empty()).then(|| format!("{password}\n").into_bytes()),
            ),
            (
                AUTHORIZED_KEYS_FILE,
                (!keys.is_empty()).then(|| format!("{}\n", keys.join("\n")).into_bytes()),
            ),
            (
                VNC_PASSWD_FILE,
                (!secrets.vnc_secret.is_empty()).then(|| vnc_password_file(secrets.vnc_secret).to_vec()),
            ),
        ];
        for (name, contents) in files {
            let path = dir.join(name);
            match contents {
                Some(bytes) => write_private(&path, &bytes)?,
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &path)(e)),
                    _ => {}
                },
            }
        }
        Ok(dir)
    }

    /// The host's SSH host key: made (ed25519) on first use, then the same for the host's whole
    /// life, rebuilds included, so the gateways can pin it. Answers the public key's OpenSSH line.
    pub fn ensure_host_key(&self, host_id: &str) -> Result<String, Error> {
        if let Some(public) = self.host_key(host_id) {
            let private = self.secrets_dir(host_id).join(HOST_KEY_FILE);
            if private.exists() {
                return Ok(public);
            }
        }
        let dir = self.secrets_dir(host_id);
        create_private_dir(&dir)?;
        for parent in [self.host_dir(host_id), self.root.clone()] {
            set_mode(&parent, 0o700)?;
        }
        let key = ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| Error::HostKey(e.to_string()))?;
        let pem = key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|e| Error::HostKey(e.to_string()))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::HostKey(e.to_string()))?;
        write_private(&dir.join(HOST_KEY_FILE), pem.as_bytes())?;
        write_private(
            &self.host_dir(host_id).join(HOST_KEY_PUB_FILE),
            format!("{public}\n").as_bytes(),
        )?;
        Ok(public)
    }

    /// The host key's public line, when the host has one.
    pub fn host_key(&self, host_id: &str) -> Option<String> {
        std::fs::read_to_string(self.host_dir(host_id).join(HOST_KEY_PUB_FILE))
            .ok()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
    }

    /// `<root>/<host_id>/egress`: the tunnel runtime's directory, bind-mounted into the egress
    /// container (never into the host container). It holds [`EGRESS_CONFIG_FILE`] (written here)
    /// and the runtime's status file.
    pub fn egress_dir(&self, host_id: &str) -> PathBuf {
        self.host_dir(host_id).join("egress")
    }

    /// `<state>/<node>/egress-tests`: the directories of the egress test namespaces (no host's).
    pub fn egress_tests_dir(&self) -> PathBuf {
        self.root.with_file_name("egress-tests")
    }

    /// Creates the egress directory (0700) and returns it.
    pub fn ensure_egress_dir(&self, host_id: &str) -> Result<PathBuf, Error> {
        let dir = self.egress_dir(host_id);
        create_private_dir(&dir)?;
        for parent in [self.host_dir(host_id), self.root.clone()] {
            set_mode(&parent, 0o700)?;
        }
        Ok(dir)
    }

    /// Replaces the tunnel runtime's configuration atomically (0600), or removes it (`None`).
    pub fn write_egress_config(&self, host_id: &str, contents: Option<&[u8]>) -> Result<(), Error> {
        let path = self.egress_dir(host_id).join(EGRESS_CONFIG_FILE);
        match contents {
            Some(bytes) => {
                self.ensure_egress_dir(host_id)?;
                write_private(&path, bytes)
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
                _ => Ok(()),
            },
        }
    }

    /// The tunnel runtime's configuration as last written; `None` when the host has none.
    pub fn read_egress_config(&self, host_id: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.egress_dir(host_id).join(EGRESS_CONFIG_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    pub fn set_stopped(&self, host_id: &str, stopped: bool) -> Result<(), Error> {
        let dir = self.host_dir(host_id);
        let marker = dir.join(STOPPED_MARKER);
        if stopped {
            create_private_dir(&dir)?;
            write_private(&marker, b"")
        } else {
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &marker)(e)),
                _ => Ok(()),
            }
        }
    }

    pub fn is_stopped(&self, host_id: &str) -> bool {
        self.host_dir(host_id).join(STOPPED_MARKER).exists()
    }

    /// Removes everything kept for the host; absent is fine.
    pub fn remove(&self, host_id: &str) -> Result<(), Error> {
        let dir = self.host_dir(host_id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &dir)(e)),
            _ => Ok(()),
        }
    }

    /// Host ids that have a directory here.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.root)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &self.root))?;
            if entry.file_type().map_err(io("stat", &entry.path()))?.is_dir()
                && let Some(name) = entry.file_name().to_str()
            {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// The secret parts of a host spec, as files.
#[derive(Clone, Copy)]
pub struct HostSecrets<'a> {
    pub password_crypt: &'a str,
    pub authorized_keys: &'a [String],
    pub vnc_secret: &'a str,
}

impl<'a> From<&'a wire::HostSpec> for HostSecrets<'a> {
    fn from(spec: &'a wire::HostSpec) -> Self {
        Self {
            password_crypt: &spec.password_crypt,
            authorized_keys: &spec.authorized_keys,
            vnc_secret: &spec.vnc_secret,
        }
    }
}

/// TigerVNC's password file (`vncpasswd -f`): the first 8 bytes of the password, zero-padded, DES-
/// encrypted with VNC's fixed key. VNC's DES reverses the bits of each key byte (the historical d3des
/// quirk), so the standard-DES key is the bit-reversal of `{23,82,107,6,35,78,88,7}`. VNC
/// authentication itself only ever uses 8 characters.
pub fn vnc_password_file(password: &str) -> [u8; 8] {
    const VNC_KEY: [u8; 8] = [23, 82, 107, 6, 35, 78, 88, 7];
    let key = VNC_KEY.map(u8::reverse_bits);
    let mut block = [0u8; 8];
    for (slot, byte) in block.iter_mut().zip(password.bytes()) {
        *slot = byte;
    }
    let cipher = Des::new(GenericArray::from_slice(&key));
    let mut data = GenericArray::clone_from_slice(&block);
    cipher.encrypt_block(&mut data);
    let mut out = [0u8; 8];
    out.copy_from_slice(&data);
    out
}

pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Writes `path` through a temporary file in the same directory and renames it into place.
/// Writes `contents` to `path` (0600) by replacing it atomically (temp file + rename), so a reader
/// sees the old or the new file, never a partial one.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(contents).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    set_mode(&tmp, 0o600)?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from TigerVNC's own `printf %s PASSWORD | vncpasswd -f` (in the host image).
    #[test]
    fn vnc_password_matches_vncpasswd() {
        assert_eq!(
            vnc_password_file("secret"),
            [0x2e, 0x2d, 0xbf, 0x57, 0x6e, 0xb0, 0x6c, 0x9e]
        );
        assert_eq!(
            vnc_password_file("password"),
            [0xdb, 0xd8, 0x3c, 0xfd, 0x72, 0x7a, 0x14, 0x58]
        );
        // Only the first 8 bytes count.
        assert_eq!(
            vnc_password_file("12345678abc"),
            [0xf0, 0xe4, 0x31, 0x64, 0xf6, 0xc2, 0xe3, 0x73]
        );
        assert_eq!(vnc_password_file("12345678abc"), vnc_password_file("12345678"));
    }

    #[test]
    fn the_hosts_subnet_is_kept_beside_the_hosts_not_among_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "n1");
        assert_eq!(store.hosts_subnet(), None);
        store
            .remember_hosts_subnet("172.30.0.0/16", "172.30.0.1")
            .unwrap();
        assert_eq!(
            store.hosts_subnet(),
            Some(("172.30.0.0/16".to_owned(), "172.30.0.1".to_owned()))
        );
        assert_eq!(
            store.hosts_subnet_file(),
            dir.path().join("n1").join("hosts-subnet")
        );
        assert!(!store.hosts_subnet_file().starts_with(store.root()));
    }

    #[test]
    fn store_writes_private_files_and_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "node-a");
        let keys = vec![
            "ssh-ed25519 AAAA gw".to_owned(),
            " ssh-ed25519 BBBB other \n".to_owned(),
        ];
        let secrets = HostSecrets {
            password_crypt: "$6$salt$hash",
            authorized_keys: &keys,
            vnc_secret: "secret",
        };
        let dir = store.write("h1", &secrets).unwrap();
        assert_eq!(dir, tmp.path().join("node-a/hosts/h1/secrets"));
        assert_eq!(
            std::fs::read_to_string(dir.join(PASSWORD_FILE)).unwrap(),
            "$6$salt$hash\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(AUTHORIZED_KEYS_FILE)).unwrap(),
            "ssh-ed25519 AAAA gw\nssh-ed25519 BBBB other\n"
        );
        assert_eq!(
            std::fs::read(dir.join(VNC_PASSWD_FILE)).unwrap(),
            vnc_password_file("secret")
        );
        for path in [dir.clone(), dir.join(PASSWORD_FILE), store.host_dir("h1")] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert!(
                mode == 0o700 || mode == 0o600,
                "{} has mode {mode:o}",
                path.display()
            );
        }
        // Rewriting replaces; no temporary files stay behind.
        store
            .write(
                "h1",
                &HostSecrets {
                    password_crypt: "$6$x$y",
                    ..secrets
                },
            )
            .unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [AUTHORIZED_KEYS_FILE, PASSWORD_FILE, VNC_PASSWD_FILE]);
        // Empty secrets are absent files.
        let empty = HostSecrets {
            password_crypt: "",
            authorized_keys: &[],
            vnc_secret: "",
        };
        store.write("h1", &empty).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        store.write("h1", &secrets).unwrap();

        store.set_stopped("h1", true).unwrap();
        assert!(store.is_stopped("h1"));
        store.set_stopped("h1", false).unwrap();
        store.set_stopped("h1", false).unwrap();
        assert!(!store.is_stopped("h1"));

        assert_eq!(store.list().unwrap(), ["h1"]);
        assert!(Store::new(tmp.path(), "node-b").list().unwrap().is_empty());
        store.remove("h1").unwrap();
        store.remove("h1").unwrap();
        assert!(!store.host_dir("h1").exists());
        assert!(store.list().unwrap().is_empty());
    }
}
