//! The two RFB (VNC) handshakes the proxy performs, without I/O: bytes in, bytes out.
//!
//! Towards the container ([`ServerHandshake`]) the proxy is the VNC client: it picks VncAuth
//! (security type 2) and answers the server's challenge with the host's secret, so the browser never
//! needs it. Towards the browser ([`ClientHandshake`]) the proxy is the VNC server: it offers only
//! security type None (1), the browser having been authenticated by the control plane already. Once
//! both are done the proxy relays bytes unchanged, starting with the browser's ClientInit.
//!
//! Bytes arrive in arbitrary pieces (WebSocket messages carry stream fragments), so each handshake
//! buffers what it has been fed and hands back whatever came after its last message as `rest`.

use des::Des;
use des::cipher::{BlockEncrypt as _, KeyInit as _, generic_array::GenericArray};

/// The protocol version both handshakes speak.
pub const VERSION_3_8: &[u8; 12] = b"RFB 003.008\n";
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;
/// Longest failure reason accepted from the server; real ones are a sentence.
const MAX_REASON: usize = 4096;

/// Why a handshake cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RfbError {
    #[error("the peer does not speak RFB (version message {0:?})")]
    NotRfb(String),
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    #[error("the VNC server does not offer VncAuth (offers {0:?})")]
    NoVncAuth(Vec<u8>),
    #[error("the VNC server rejected the host's secret: {0}")]
    AuthFailed(String),
    #[error("the VNC client chose security type {0}, not None")]
    UnsupportedSecurity(u8),
    #[error("malformed RFB message: {0}")]
    Malformed(&'static str),
}

/// What feeding bytes produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes to send to the peer now.
    pub reply: Vec<u8>,
    /// `Some` once the handshake is complete: the bytes that arrived after it, to be relayed.
    pub done: Option<Vec<u8>>,
}

/// VncAuth's answer to a challenge: the challenge DES-encrypted (ECB, two blocks) under the first 8
/// bytes of the password, zero-padded. VNC's DES takes each key byte bit-reversed compared with
/// standard DES (a quirk of the d3des code every VNC server descends from).
pub fn vnc_auth_response(secret: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (slot, byte) in key.iter_mut().zip(secret.bytes()) {
        *slot = byte.reverse_bits();
    }
    let cipher = Des::new(GenericArray::from_slice(&key));
    let mut out = [0u8; 16];
    for (src, dst) in challenge.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        let mut block = GenericArray::clone_from_slice(src);
        cipher.encrypt_block(&mut block);
        dst.copy_from_slice(&block);
    }
    out
}

/// A growing input buffer with a read cursor.
#[derive(Debug, Default)]
struct Input {
    buf: Vec<u8>,
}

impl Input {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The first `n` bytes, consumed, if that many have arrived.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        (self.buf.len() >= n).then(|| self.buf.drain(..n).collect())
    }

    fn peek(&self, n: usize) -> Option<&[u8]> {
        self.buf.get(..n)
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// The big-endian u32 at the start of `bytes` (callers have checked there are four).
fn be_u32(bytes: &[u8]) -> usize {
    let mut word = [0u8; 4];
    for (slot, byte) in word.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    u32::from_be_bytes(word) as usize
}

/// A length-prefixed failure reason (u32 length, then text), if all of it has arrived.
fn take_reason(input: &mut Input) -> Result<Option<String>, RfbError> {
    let Some(header) = input.peek(4) else {
        return Ok(None);
    };
    let len = be_u32(header);
    if len > MAX_REASON {
        return Err(RfbError::Malformed("failure reason too long"));
    }
    if input.peek(4 + len).is_none() {
        return Ok(None);
    }
    let _ = input.take(4);
    let text = input.take(len).unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Version,
    SecurityTypes,
    Challenge,
    SecurityResult,
    /// SecurityResult said no; waiting for the reason string.
    FailureReason,
    /// The server sent zero security types; waiting for the reason string.
    RefusalReason,
    Done,
}

/// The proxy as a VNC client of the container's server.
#[derive(Debug)]
pub struct ServerHandshake {
    secret: String,
    state: ServerState,
    input: Input,
}

impl ServerHandshake {
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            state: ServerState::Version,
            input: Input::default(),
        }
    }

    /// Feeds bytes from the server. Errors are final.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Step, RfbError> {
        self.input.push(bytes);
        let mut step = Step::default();
        loop {
            match self.state {
                ServerState::Version => {
                    let Some(version) = self.input.take(12) else { break };
                    // 3.8 is required: 3.3 has the server impose the security type, and 3.7 has no
                    // reason on failure; every TigerVNC and websockify in use speaks 3.8.
                    if version.as_slice() != VERSION_3_8 {
                        return Err(RfbError::NotRfb(String::from_utf8_lossy(&version).into_owned()));
                    }
                    step.reply.extend_from_slice(VERSION_3_8);
                    self.state = ServerState::SecurityTypes;
                }
                ServerState::SecurityTypes => {
                    let Some(count) = self.input.peek(1).map(|b| usize::from(b[0])) else {
                        break;
                    };
                    if count == 0 {
                        let _ = self.input.take(1);
                        self.state = ServerState::RefusalReason;
                        continue;
                    }
                    let Some(types) = self.input.take(1 + count) else {
                        break;
                    };
                    if !types[1..].contains(&SECURITY_VNC_AUTH) {
                        return Err(RfbError::NoVncAuth(types[1..].to_vec()));
                    }
                    step.reply.push(SECURITY_VNC_AUTH);
                    self.state = ServerState::Challenge;
                }
                ServerState::Challenge => {
                    let Some(challenge) = self.input.take(16) else {
                        break;
                    };
                    let mut c = [0u8; 16];
                    c.copy_from_slice(&challenge);
                    step.reply.extend_from_slice(&vnc_auth_response(&self.secret, &c));
                    self.state = ServerState::SecurityResult;
                }
                ServerState::SecurityResult => {
                    let Some(result) = self.input.take(4) else { break };
                    if be_u32(&result) == 0 {
                        self.state = ServerState::Done;
                    } else {
                        self.state = ServerState::FailureReason;
                    }
                }
                ServerState::FailureReason => {
                    let Some(reason) = take_reason(&mut self.input)? else {
                        break;
                    };
                    return Err(RfbError::AuthFailed(reason));
                }
                ServerState::RefusalReason => {
                    let Some(reason) = take_reason(&mut self.input)? else {
                        break;
                    };
                    return Err(RfbError::Refused(reason));
                }
                ServerState::Done => {
                    step.done = Some(self.input.rest());
                    break;
                }
            }
        }
        Ok(step)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Version,
    SecurityChoice { minor: u8 },
    Done,
}

/// The proxy as the VNC server the browser talks to.
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
    input: Input,
}

impl Default for ClientHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientHandshake {
    pub fn new() -> Self {
        Self {
            state: ClientState::Version,
            input: Input::default(),
        }
    }

    /// What the server says first: its protocol version.
    pub fn greeting(&self) -> &'static [u8] {
        VERSION_3_8
    }

    /// Feeds bytes from the browser. Errors are final; the caller closes the connection.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Step, RfbError> {
        self.input.push(bytes);
        let mut step = Step::default();
        loop {
            match self.state {
                ClientState::Version => {
                    let Some(version) = self.input.take(12) else { break };
                    let minor = parse_version(&version)?;
                    if minor == 3 {
                        // 3.3: the server decides, as a u32, and None has no SecurityResult.
                        step.reply
                            .extend_from_slice(&u32::from(SECURITY_NONE).to_be_bytes());
                        self.state = ClientState::Done;
                    } else {
                        step.reply.extend_from_slice(&[1, SECURITY_NONE]);
                        self.state = ClientState::SecurityChoice { minor };
                    }
                }
                ClientState::SecurityChoice { minor } => {
                    let Some(choice) = self.input.take(1) else { break };
                    if choice[0] != SECURITY_NONE {
                        return Err(RfbError::UnsupportedSecurity(choice[0]));
                    }
                    // 3.7 sends no SecurityResult after None; 3.8 does.
                    if minor >= 8 {
                        step.reply.extend_from_slice(&0u32.to_be_bytes());
                    }
                    self.state = ClientState::Done;
                }
                ClientState::Done => {
                    step.done = Some(self.input.rest());
                    break;
                }
            }
        }
        Ok(step)
    }
}

/// `RFB 003.00x\n` → the minor version the proxy will speak: 3, 7 or 8. Later minors are answered
/// as 3.8 (the protocol's rule: the server picks the highest version both know).
fn parse_version(v: &[u8]) -> Result<u8, RfbError> {
    let text =
        std::str::from_utf8(v).map_err(|_| RfbError::NotRfb(String::from_utf8_lossy(v).into_owned()))?;
    let not_rfb = || RfbError::NotRfb(text.to_owned());
    let digits = text
        .strip_prefix("RFB ")
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(not_rfb)?;
    let (major, minor) = digits.split_once('.').ok_or_else(not_rfb)?;
    let major: u32 = major.parse().map_err(|_| not_rfb())?;
    let minor: u32 = minor.parse().map_err(|_| not_rfb())?;
    match (major, minor) {
        (3, 3..=6) => Ok(3),
        (3, 7) => Ok(7),
        (3, 8..) => Ok(8),
        _ => Err(not_rfb()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    ];

    /// Feeds `bytes` one at a time, gathering the replies: fragmentation must not change anything.
    fn feed_bytewise(hs: &mut ServerHandshake, bytes: &[u8]) -> Result<Step, RfbError> {
        let mut total = Step::default();
        for b in bytes {
            let step = hs.feed(std::slice::from_ref(b))?;
            total.reply.extend(step.reply);
            if step.done.is_some() {
                total.done = step.done;
            }
        }
        Ok(total)
    }

    #[test]
    fn vnc_auth_response_matches_reference_vectors() {
        // Computed independently with OpenSSL's DES-ECB under the bit-reversed password bytes
        // (`openssl enc -des-ecb -nopad -provider legacy -K <key>`), the end-to-end test checks it against TigerVNC.
        assert_eq!(
            hex::encode(vnc_auth_response("password", &CHALLENGE)),
            REFERENCE_PASSWORD
        );
        // Only 8 bytes count; shorter passwords are zero-padded.
        assert_eq!(
            vnc_auth_response("password-and-more", &CHALLENGE),
            vnc_auth_response("password", &CHALLENGE)
        );
        assert_eq!(hex::encode(vnc_auth_response("abc", &CHALLENGE)), REFERENCE_ABC);
    }

    const REFERENCE_PASSWORD: &str = "b866924125c8eebb9debc1db61c538e2";
    const REFERENCE_ABC: &str = "9c22b4f2088c3465a1562c4b9d6edb04";

    fn server_script(result: &[u8]) -> Vec<u8> {
        let mut s = VERSION_3_8.to_vec();
        s.extend_from_slice(&[2, 16, SECURITY_VNC_AUTH]);
        s.extend_from_slice(&CHALLENGE);
        s.extend_from_slice(result);
        s
    }

    #[test]
    fn server_handshake_answers_the_challenge() {
        let mut hs = ServerHandshake::new("password");
        let step = hs.feed(VERSION_3_8).unwrap();
        assert_eq!(step.reply, VERSION_3_8);
        assert_eq!(step.done, None);
        // Offers: 16 (Tight) and 2 (VncAuth): the proxy picks 2.
        let step = hs.feed(&[2, 16, 2]).unwrap();
        assert_eq!(step.reply, [2]);
        let step = hs.feed(&CHALLENGE).unwrap();
        assert_eq!(step.reply, vnc_auth_response("password", &CHALLENGE));
        // SecurityResult OK, and the first bytes of what follows stay for the relay.
        let step = hs.feed(&[0, 0, 0, 0, 9, 9]).unwrap();
        assert!(step.reply.is_empty());
        assert_eq!(step.done, Some(vec![9, 9]));
    }

    #[test]
    fn server_handshake_is_indifferent_to_fragmentation() {
        let script = server_script(&[0, 0, 0, 0]);
        let mut whole = ServerHandshake::new("s3cret12");
        let at_once = whole.feed(&script).unwrap();
        let mut pieces = ServerHandshake::new("s3cret12");
        let bytewise = feed_bytewise(&mut pieces, &script).unwrap();
        assert_eq!(at_once, bytewise);
        let mut expected = VERSION_3_8.to_vec();
        expected.push(2);
        expected.extend_from_slice(&vnc_auth_response("s3cret12", &CHALLENGE));
        assert_eq!(at_once.reply, expected);
        assert_eq!(at_once.done, Some(vec![]));
    }

    #[test]
    fn server_handshake_failures() {
        let mut hs = ServerHandshake::new("x");
        assert!(matches!(hs.feed(b"HTTP/1.1 200"), Err(RfbError::NotRfb(_))));

        // Zero security types: the server's reason is reported.
        let mut hs = ServerHandshake::new("x");
        let mut script = VERSION_3_8.to_vec();
        script.extend_from_slice(&[0, 0, 0, 0, 4]);
        assert_eq!(hs.feed(&script).unwrap().done, None);
        assert_eq!(hs.feed(b"busy"), Err(RfbError::Refused("busy".into())));

        // Only None offered: the proxy will not talk to a server that does not check the secret.
        let mut hs = ServerHandshake::new("x");
        let mut script = VERSION_3_8.to_vec();
        script.extend_from_slice(&[1, 1]);
        assert_eq!(hs.feed(&script), Err(RfbError::NoVncAuth(vec![1])));

        // Wrong secret: SecurityResult 1 and a reason.
        let mut hs = ServerHandshake::new("wrong");
        let mut result = vec![0, 0, 0, 1, 0, 0, 0, 21];
        result.extend_from_slice(b"Authentication failed");
        assert_eq!(
            feed_bytewise(&mut hs, &server_script(&result)),
            Err(RfbError::AuthFailed("Authentication failed".into()))
        );

        // An absurd reason length is refused before waiting for it.
        let mut hs = ServerHandshake::new("x");
        assert_eq!(
            hs.feed(&server_script(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])),
            Err(RfbError::Malformed("failure reason too long"))
        );
    }

    #[test]
    fn client_handshake_offers_none_then_relays() {
        let mut hs = ClientHandshake::new();
        assert_eq!(hs.greeting(), VERSION_3_8);
        let step = hs.feed(b"RFB 003.008\n").unwrap();
        assert_eq!(step.reply, [1, SECURITY_NONE]);
        // The choice and the ClientInit (shared flag) in one message: the flag is relayed.
        let step = hs.feed(&[SECURITY_NONE, 1]).unwrap();
        assert_eq!(step.reply, [0, 0, 0, 0]);
        assert_eq!(step.done, Some(vec![1]));
    }

    #[test]
    fn client_handshake_older_versions() {
        // 3.7: no SecurityResult after None.
        let mut hs = ClientHandshake::new();
        assert_eq!(hs.feed(b"RFB 003.007\n").unwrap().reply, [1, SECURITY_NONE]);
        let step = hs.feed(&[SECURITY_NONE]).unwrap();
        assert!(step.reply.is_empty());
        assert_eq!(step.done, Some(vec![]));

        // 3.3: the server announces None as a u32 and is done.
        let mut hs = ClientHandshake::new();
        let step = hs.feed(b"RFB 003.003\n\x01").unwrap();
        assert_eq!(step.reply, [0, 0, 0, 1]);
        assert_eq!(step.done, Some(vec![1]));

        // Apple's 3.889 is treated as 3.8.
        let mut hs = ClientHandshake::new();
        assert_eq!(hs.feed(b"RFB 003.889\n").unwrap().reply, [1, SECURITY_NONE]);
    }

    #[test]
    fn client_handshake_refuses_other_security_and_non_rfb() {
        let mut hs = ClientHandshake::new();
        hs.feed(VERSION_3_8).unwrap();
        assert_eq!(hs.feed(&[2]), Err(RfbError::UnsupportedSecurity(2)));

        for bad in [&b"GET / HTTP/1.1"[..12], b"RFB 004.000\n", b"RFB 003.00x\n"] {
            let mut hs = ClientHandshake::new();
            assert!(matches!(hs.feed(bad), Err(RfbError::NotRfb(_))), "{bad:?}");
        }
    }
}
