//! [`Secret`]: a credential that never shows up in `Debug` output, so never in a log: proxy
//! passwords and keys in the typed egress configuration, and the control plane's own (the admin
//! password, the signing and node tokens).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A credential: serialized in full (sing-box needs it), redacted in `Debug` (as the API's
/// [`crate::proxy::MASK`]) so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::proxy::MASK)
    }
}

/// From a flag or an environment variable.
impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s: Secret = "hunter2-hunter2".parse().unwrap();
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2-hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2-hunter2\"");
    }
}
