//! The TOTP second factor (RFC 6238 as authenticator apps speak it: HMAC-SHA-1, 6 digits, 30 s
//! steps, one step of clock skew either way), its enrolment QR code, and recovery codes.

use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use totp_rs::{Secret, Totp};

use crate::AppState;
use crate::db::users::User;
use crate::db::{self, UtcTime};
use crate::error::ApiResult;

/// The issuer an authenticator app shows beside the account.
pub const ISSUER: &str = "cloud-cli-proxy";
/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("second factor: {0}")]
pub struct TotpError(String);

fn totp(secret_base32: &str, account: &str) -> Result<Totp, TotpError> {
    let secret = Secret::try_from_base32(secret_base32).map_err(|e| TotpError(e.to_string()))?;
    // Account names may hold no ':' in an otpauth label.
    let account: String = account.chars().map(|c| if c == ':' { '_' } else { c }).collect();
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| TotpError(e.to_string()))
}

/// A new secret of 160 random bits (RFC 4226's recommendation), base32.
pub fn new_secret() -> String {
    let bytes: [u8; 20] = rand::thread_rng().r#gen();
    Secret::from(bytes).to_base32()
}

/// The `otpauth://totp/…` URI an authenticator app takes.
pub fn uri(secret_base32: &str, account: &str) -> Result<String, TotpError> {
    totp(secret_base32, account)?
        .to_url()
        .map_err(|e| TotpError(e.to_string()))
}

/// The URI as a QR code, an SVG document.
pub fn qr_svg(uri: &str) -> Result<String, TotpError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| TotpError(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// The time step a six-digit `code` is valid for at `unix_secs`, if it is valid and later than
/// `last_step` (a code is taken once).
pub fn check(secret_base32: &str, code: &str, unix_secs: u64, last_step: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = totp(secret_base32, "").ok()?.check(code, unix_secs)?;
    let step = i64::try_from(step).ok()?;
    last_step.is_none_or(|last| step > last).then_some(step)
}

/// Fresh recovery codes: ten groups `xxxxx-xxxxx` of lowercase letters and digits (about 51 bits
/// each), shown once.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut code: String = (0..10)
                .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                .collect();
            code.insert(5, '-');
            code
        })
        .collect()
}

/// What is stored of a recovery code: SHA-256 of its normalised form.
pub fn recovery_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(normal.as_bytes()))
}

fn unix_secs(now: UtcTime) -> u64 {
    u64::try_from(now.0.timestamp()).unwrap_or(0)
}

/// Whether `code` — a current TOTP code or an unused recovery code — is the enrolled account's
/// second factor; takes it, so it opens one sign-in only.
pub async fn redeem(state: &AppState, user: &User, code: &str, now: UtcTime) -> ApiResult<bool> {
    let Some(enrolment) = db::totp::get(&state.db, &user.id).await? else {
        return Ok(false);
    };
    if enrolment.enabled_at.is_none() {
        return Ok(false);
    }
    let secret = enrolment
        .secret
        .open(&state.secrets, crate::secrets::field::USER_TOTP_SECRET)
        .map_err(|e| crate::error::ApiError::internal(format_args!("TOTP secret of {}: {e}", user.id)))?;
    if let Some(step) = check(&secret, code, unix_secs(now), enrolment.last_step) {
        return Ok(db::totp::take_step(&state.db, &user.id, step).await?);
    }
    if code.len() > 32 {
        return Ok(false);
    }
    Ok(db::totp::use_recovery_code(&state.db, &user.id, &recovery_hash(code), now).await?)
}

/// The step a code proves for a started (not yet confirmed) enrolment with this (opened) secret.
pub fn confirm_step(secret: &str, code: &str, now: UtcTime) -> Option<i64> {
    check(secret, code, unix_secs(now), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret, "12345678901234567890", in base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc_6238_vectors() {
        // Appendix B's 8-digit values end in these six digits.
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let step = i64::try_from(t / 30).unwrap();
            assert_eq!(check(RFC_SECRET, code, t, None), Some(step), "t={t}");
        }
    }

    #[test]
    fn skew_replay_and_form() {
        let t = 1_111_111_109;
        assert!(check(RFC_SECRET, "081804", t + 30, None).is_some(), "a step late");
        assert!(
            check(RFC_SECRET, "081804", t + 90, None).is_none(),
            "three steps late"
        );
        let step = check(RFC_SECRET, "081804", t, None).unwrap();
        assert_eq!(check(RFC_SECRET, "081804", t, Some(step)), None, "taken once");
        assert_eq!(check(RFC_SECRET, " 081804 ", t, None), Some(step));
        for bad in ["", "08180", "0818045", "08180a", "081 804"] {
            assert_eq!(check(RFC_SECRET, bad, t, None), None, "{bad:?}");
        }
    }

    #[test]
    fn uri_and_qr() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        let uri = uri(&secret, "alice:ops").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/cloud-cli-proxy:alice_ops?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
        assert_eq!(
            recovery_hash(&codes[0]),
            recovery_hash(&codes[0].to_uppercase().replace('-', " "))
        );
    }
}
