//! The sealed fields of an egress IP opened, for the API to edit them or to show them masked, and
//! sealed again before the row is stored.

use crate::db::egress_ips::EgressIp;
use crate::secrets::{OpenError, Sealed, SecretsKey, field};

/// `wg_preshared_key`, `wg_private_key` and `proxy_config` in clear. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Opened {
    pub wg_preshared_key: Option<String>,
    pub wg_private_key: Option<String>,
    /// sing-box outbound JSON.
    pub proxy_config: Option<String>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opened(<redacted>)")
    }
}

impl Opened {
    pub fn of(e: &EgressIp, key: &SecretsKey) -> Result<Self, OpenError> {
        let open =
            |sealed: &Option<Sealed>, name: &str| sealed.as_ref().map(|s| s.open(key, name)).transpose();
        Ok(Self {
            wg_preshared_key: open(&e.wg_preshared_key, field::EGRESS_WG_PRESHARED_KEY)?,
            wg_private_key: open(&e.wg_private_key, field::EGRESS_WG_PRIVATE_KEY)?,
            proxy_config: open(&e.proxy_config, field::EGRESS_PROXY_CONFIG)?,
        })
    }

    /// Writes these values, sealed, into `e`.
    pub fn seal_into(&self, e: &mut EgressIp, key: &SecretsKey) {
        let seal = |plain: &Option<String>, name: &str| plain.as_deref().map(|p| Sealed::seal(key, name, p));
        e.wg_preshared_key = seal(&self.wg_preshared_key, field::EGRESS_WG_PRESHARED_KEY);
        e.wg_private_key = seal(&self.wg_private_key, field::EGRESS_WG_PRIVATE_KEY);
        e.proxy_config = seal(&self.proxy_config, field::EGRESS_PROXY_CONFIG);
    }
}
